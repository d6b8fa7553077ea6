"""Platform service: ingests telemetry, applies emission factors, stores the series."""

from carbonlink.platform._assignment import record_assignment
from carbonlink.platform._ingest import Ingestor, IngestResult
from carbonlink.platform._service import Platform, PlatformCounters
from carbonlink.storage import Store, StoredReading, open_store

__all__ = [
    "IngestResult",
    "Ingestor",
    "Platform",
    "PlatformCounters",
    "Store",
    "StoredReading",
    "open_store",
    "record_assignment",
]
