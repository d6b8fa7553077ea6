"""Read-only HTTP API over a store: plants, series, windows, KPIs, totals, health.

``create_app`` builds the FastAPI app (OpenAPI document at ``/openapi.json``); ``serve``
runs it inside the caller's asyncio loop, next to the other services.
"""

from carbonlink._http import LOG_LEVEL, SHUTDOWN_TIMEOUT_S, serve
from carbonlink.platform.api._app import API_PREFIX, HealthProvider, create_app

__all__ = [
    "API_PREFIX",
    "LOG_LEVEL",
    "SHUTDOWN_TIMEOUT_S",
    "HealthProvider",
    "create_app",
    "serve",
]
