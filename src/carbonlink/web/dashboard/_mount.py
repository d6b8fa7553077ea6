"""Adds the dashboard's pages, static files and event streams to the API app."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

import plotly
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from carbonlink.config import Settings
from carbonlink.core.clock import wall_clock_ms
from carbonlink.storage import Store
from carbonlink.web.api import HealthProvider
from carbonlink.web.dashboard._events import SSE_MEDIA_TYPE, Poll, event_stream
from carbonlink.web.dashboard._layout import plant_layouts
from carbonlink.web.dashboard._live import BrowserFeed, PlantView, overview_row

__all__ = [
    "DASHBOARD_PREFIX",
    "DEFAULT_REFRESH_S",
    "PLOTLY_JS",
    "STATIC_DIR",
    "StatusProvider",
    "mount_dashboard",
]

DASHBOARD_PREFIX: Final = "/dashboard"
DEFAULT_REFRESH_S: Final = 2.0
STATIC_DIR: Final = Path(__file__).parent / "static"
# plotly.js as the installed plotly package ships it: no CDN, no copy in the repository.
PLOTLY_JS: Final = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
StatusProvider = Callable[[], Mapping[str, str]]

_NO_CACHE: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
WindowName = Annotated[Literal["1m", "15m", "1h", "1d"], Query(description="Window length")]
RangeName = Annotated[
    Literal["1h", "6h", "24h", "7d"], Query(alias="range", description="Time range shown")
]


def _rejected_by_plant(health: HealthProvider | None) -> Mapping[str, int] | None:
    if health is None:
        return None
    by_plant = health().get("rejected_by_plant")
    return by_plant if isinstance(by_plant, Mapping) else None


def _data_quality(health: HealthProvider | None) -> dict[str, object]:
    counters = dict(health()) if health is not None else {}
    rejected = counters.get("rejected")
    reasons = dict(rejected) if isinstance(rejected, Mapping) else {}
    return {
        "available": health is not None,
        "received": counters.get("received"),
        "stored": counters.get("stored"),
        "rejected": reasons,
        "lag_s": counters.get("lag_s"),
    }


def mount_dashboard(
    app: FastAPI,
    store: Store,
    settings: Settings,
    *,
    health: HealthProvider | None = None,
    status: StatusProvider | None = None,
    clock: Callable[[], int] = wall_clock_ms,
    refresh_s: float = DEFAULT_REFRESH_S,
) -> None:
    """Serve the dashboard from ``app``: overview at ``/`` and ``/dashboard``.

    ``status`` maps plant ids to "online" | "offline" (missing plants are "unknown").
    ``clock`` says what "today" and "the last hour" mean; pass a simulated clock's
    ``now_ms`` when the plants run on one. ``refresh_s`` is how often streams poll.
    """
    layouts = plant_layouts(settings)
    views = {
        p: PlantView(config, layouts[p], settings.factor_set(p))
        for p, config in settings.plants.items()
    }

    def view_of(plant: str) -> PlantView:
        view = views.get(plant)
        if view is None:
            raise HTTPException(404, f"no plant {plant!r} (known: {', '.join(sorted(views))})")
        return view

    def page(name: str) -> FileResponse:
        return FileResponse(STATIC_DIR / name, media_type="text/html", headers=_NO_CACHE)

    @app.get(f"{DASHBOARD_PREFIX}/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    # After the plotly route: the mount would otherwise answer that path first.
    app.mount(f"{DASHBOARD_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="dashboard")

    @app.get("/", include_in_schema=False)
    @app.get(DASHBOARD_PREFIX, include_in_schema=False)
    def overview_page() -> FileResponse:
        return page("overview.html")

    @app.get(f"{DASHBOARD_PREFIX}/plants/{{plant}}", include_in_schema=False)
    def plant_page(plant: str) -> FileResponse:
        view_of(plant)
        return page("plant.html")

    @app.get(f"{DASHBOARD_PREFIX}/coordination", include_in_schema=False)
    def coordination_page() -> FileResponse:
        return page("coordination.html")

    @app.get(f"{DASHBOARD_PREFIX}/fleet", include_in_schema=False)
    def fleet_page() -> FileResponse:
        return page("fleet.html")

    # Pages name their icon; browsers and tools that do not read the page still ask here.
    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    @app.get(f"{DASHBOARD_PREFIX}/layout", summary="Dashboard: plants and their chart traces")
    def layout() -> dict[str, object]:
        return {"plants": [layouts[p].as_record() for p in sorted(layouts)]}

    def overview() -> list[tuple[str, dict[str, object]]]:
        now_ms = clock()
        states = dict(status()) if status is not None else {}
        rejected = _rejected_by_plant(health)
        rows = [overview_row(store, views[p], now_ms, states, rejected) for p in sorted(views)]
        return [("overview", {"now_ms": now_ms, "plants": rows, "quality": _data_quality(health)})]

    @app.get(f"{DASHBOARD_PREFIX}/events", summary="Dashboard: fleet overview as SSE")
    def overview_events(request: Request) -> StreamingResponse:
        last: list[object] = [None]

        def changed() -> list[tuple[str, dict[str, object]]]:
            events = overview()
            # The clock moves every tick; only data decides whether there is news.
            news = [{k: v for k, v in data.items() if k != "now_ms"} for _, data in events]
            if news == last[0]:
                return []
            last[0] = news
            return events

        stream = event_stream(request, changed, changed, refresh_s)
        return StreamingResponse(stream, media_type=SSE_MEDIA_TYPE, headers=_NO_CACHE)

    @app.get(
        f"{DASHBOARD_PREFIX}/plants/{{plant}}/events",
        summary="Dashboard: one plant's windows as SSE (history, then append/current)",
    )
    def plant_events(
        request: Request, plant: str, window: WindowName = "1m", span: RangeName = "6h"
    ) -> StreamingResponse:
        stream_state = BrowserFeed(store, view_of(plant), window, span, clock)
        first: Poll = lambda: [("history", stream_state.history())]  # noqa: E731
        stream = event_stream(request, first, stream_state.poll, refresh_s)
        return StreamingResponse(stream, media_type=SSE_MEDIA_TYPE, headers=_NO_CACHE)
