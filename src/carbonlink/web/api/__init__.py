"""Read-only HTTP API over a store: plants, series, windows, KPIs, totals, health.

``create_app`` builds the FastAPI app (OpenAPI document at ``/openapi.json``); ``serve``
runs it inside the caller's asyncio loop, next to the other services.
"""

from carbonlink.web.api._app import API_PREFIX, HealthProvider, create_app
from carbonlink.web.api._coordination import coordination_app
from carbonlink.web.server import LOG_LEVEL, SHUTDOWN_TIMEOUT_S, serve

__all__ = [
    "API_PREFIX",
    "LOG_LEVEL",
    "SHUTDOWN_TIMEOUT_S",
    "HealthProvider",
    "coordination_app",
    "create_app",
    "serve",
]
