"""Record in the store which factor set version each plant counts under now.

Readers with the config (API, dashboard, CLI) know it already; readers with the store
only (Grafana, an analyst's InfluxQL) read it from the assignment the platform writes
when it starts, so they pick the same points and count each reading once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from carbonlink.errors import StoreError
from carbonlink.storage import FactorVersions, Store

__all__ = ["record_assignment"]

log = logging.getLogger(__name__)

RETRY_MIN_S: Final = 0.5
RETRY_MAX_S: Final = 30.0


async def record_assignment(store: Store, versions: FactorVersions) -> None:
    """Write the assignment, retrying while the store is down (the platform itself
    keeps running meanwhile; readers without the config see the previous assignment)."""
    delay = RETRY_MIN_S
    while True:
        try:
            await asyncio.to_thread(store.assign_factors, versions)
        except StoreError as exc:
            if not exc.retryable:
                log.error("platform: cannot record the factor assignment: %s", exc)
                return
            log.warning("platform: factor assignment not recorded yet (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        log.info(
            "platform: plants count under %s",
            ", ".join(f"{p}={fs} {fv}" for p, (fs, fv) in sorted(versions.items())),
        )
        return
