"""Storage backends behind one interface, chosen by URL.

- ``sqlite:///PATH``: embedded default (``sqlite:////abs/path`` for an absolute path).
- ``influxdb://[USER@]HOST:PORT/DATABASE``: InfluxDB 1.x HTTP API (also served by 2.x/3.x);
  the password comes from ``$CARBONLINK_INFLUXDB_PASSWORD``, never from the URL.
- ``influxdb2://HOST:PORT/BUCKET?org=ORG``: InfluxDB 2.x native API (Flux); the token
  comes from ``$CARBONLINK_INFLUXDB_TOKEN``. ``influxdb2+https://`` for TLS.
"""

from __future__ import annotations

import os
from typing import Final
from urllib.parse import parse_qs, urlsplit

from carbonlink.errors import ConfigError
from carbonlink.storage._base import (
    ACTIVITY_COLUMNS,
    ACTIVITY_FIELDS,
    ACTIVITY_MEASUREMENT,
    ASSIGNMENT_MEASUREMENT,
    EMISSION_COLUMNS,
    EMISSION_FIELDS,
    EMISSION_NUMBERS,
    EMISSIONS_MEASUREMENT,
    SERIES_FIELDS,
    UNCERTAINTY_FIELDS,
    Emission,
    EmissionTags,
    FactorVersions,
    FloatMatrix,
    Store,
    StoredBatch,
    StoredReading,
    epoch_ms,
    readings_ending_in,
)
from carbonlink.storage._influxdb_v1 import InfluxDBV1Store
from carbonlink.storage._influxdb_v2 import InfluxDBV2Store
from carbonlink.storage._sqlite import SqliteStore

INFLUXDB_PASSWORD_ENV: Final = "CARBONLINK_INFLUXDB_PASSWORD"  # noqa: S105 (a variable name)
INFLUXDB_TOKEN_ENV: Final = "CARBONLINK_INFLUXDB_TOKEN"  # noqa: S105 (a variable name)

__all__ = [
    "ACTIVITY_COLUMNS",
    "ACTIVITY_FIELDS",
    "ACTIVITY_MEASUREMENT",
    "ASSIGNMENT_MEASUREMENT",
    "EMISSIONS_MEASUREMENT",
    "EMISSION_COLUMNS",
    "EMISSION_FIELDS",
    "EMISSION_NUMBERS",
    "INFLUXDB_PASSWORD_ENV",
    "INFLUXDB_TOKEN_ENV",
    "SERIES_FIELDS",
    "UNCERTAINTY_FIELDS",
    "Emission",
    "EmissionTags",
    "FactorVersions",
    "FloatMatrix",
    "InfluxDBV1Store",
    "InfluxDBV2Store",
    "SqliteStore",
    "Store",
    "StoredBatch",
    "StoredReading",
    "epoch_ms",
    "open_store",
    "readings_ending_in",
]


def open_store(url: str | os.PathLike[str], *, read_only: bool = False) -> Store:
    """Open the backend a store URL names; a malformed URL is a ConfigError on key ``store``.

    A ``Path``, or text without a ``scheme://``, is a SQLite file (``var/demo/demo.sqlite``).
    ``read_only``: for commands that only read. Nothing is created (no SQLite file or
    folder, no InfluxDB database); a store that does not exist is a StoreError naming it.
    Stores close on leaving a ``with`` block.
    """
    if isinstance(url, os.PathLike) or (url and "://" not in url):
        return SqliteStore(os.fspath(url), read_only=read_only)
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(None, "store", f"expected sqlite:///PATH, got {url!r}")
        return SqliteStore(path, read_only=read_only)
    if parts.scheme in ("influxdb", "influxdb+https"):
        database = parts.path.strip("/")
        if not parts.hostname or not parts.port or not database or "/" in database:
            raise ConfigError(None, "store", f"expected influxdb://HOST:PORT/DATABASE, got {url!r}")
        if parts.password:
            raise ConfigError(None, "store", f"put the password in ${INFLUXDB_PASSWORD_ENV}")
        http = "https" if parts.scheme.endswith("https") else "http"
        return InfluxDBV1Store(
            f"{http}://{parts.hostname}:{parts.port}",
            database,
            username=parts.username,
            password=os.environ.get(INFLUXDB_PASSWORD_ENV),
            read_only=read_only,
        )
    if parts.scheme in ("influxdb2", "influxdb2+https"):
        return _open_influxdb_v2(url, read_only=read_only)
    raise ConfigError(
        None, "store", f"unsupported store URL {url!r} (sqlite:///, influxdb:// or influxdb2://)"
    )


def _open_influxdb_v2(url: str, *, read_only: bool) -> Store:
    parts = urlsplit(url)
    bucket = parts.path.strip("/")
    orgs = parse_qs(parts.query).get("org", [])
    if not parts.hostname or not parts.port or not bucket or len(orgs) != 1:
        raise ConfigError(
            None, "store", f"expected influxdb2://HOST:PORT/BUCKET?org=ORG, got {url!r}"
        )
    if parts.username or parts.password:
        raise ConfigError(None, "store", f"put the token in ${INFLUXDB_TOKEN_ENV}, not the URL")
    http = "https" if parts.scheme.endswith("https") else "http"
    return InfluxDBV2Store(
        f"{http}://{parts.hostname}:{parts.port}",
        bucket,
        orgs[0],
        os.environ.get(INFLUXDB_TOKEN_ENV),
        read_only=read_only,
    )
