"""The FastAPI app: every table endpoint answers JSON records or, with ?format=csv, CSV.

Endpoints are plain ``def`` functions: the store calls block, and FastAPI runs sync
endpoints in its thread pool, off the event loop the services share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from carbonlink import __version__ as _version
from carbonlink.config import Settings
from carbonlink.coordination import Ed25519PublicKey, settings_public_key
from carbonlink.core.clock import wall_clock_ms
from carbonlink.core.metrics import CONTENT_TYPE_LATEST, CollectorRegistry, exposition
from carbonlink.errors import QueryError, UnknownPlantError
from carbonlink.storage import SERIES_FIELDS, Store
from carbonlink.storage.figures import Figures
from carbonlink.web.api._auth import ApiAccess
from carbonlink.web.api._control import add_control_routes
from carbonlink.web.api._coordination import add_coordination_routes
from carbonlink.web.api._parameters import plant_parameter

__all__ = ["API_PREFIX", "HealthProvider", "create_app"]

API_PREFIX: Final = "/api/v1"
CSV_MEDIA_TYPE: Final = "text/csv"
HealthProvider = Callable[[], Mapping[str, object]]

Format = Annotated[
    Literal["json", "csv"],
    Query(alias="format", description="json: a list of flat records; csv: a header row"),
]
Time = Annotated[str | None, Query(description="RFC 3339 with offset, or epoch ms")]
FactorVersion = Annotated[
    str | None,
    Query(description="Factor set version [default: the version the plant's config names]"),
]
WindowName = Annotated[Literal["1m", "15m", "1h", "1d"], Query(description="Window length")]
# What the OpenAPI document says a table endpoint can answer: JSON records or CSV.
TABLE: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "JSON records, or CSV with ?format=csv",
        "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}},
    }
}
PLANT_TABLE: Final = TABLE | {404: {"description": "No such plant: the known ones are named"}}


def _respond(frame: pd.DataFrame, fmt: str) -> Response:
    if fmt == "csv":
        return Response(frame.to_csv(index=False), media_type=CSV_MEDIA_TYPE)
    # pandas writes NaN as null and times as ISO 8601 UTC; json.dumps would refuse NaN.
    body = frame.to_json(orient="records", date_format="iso", date_unit="ms")
    return Response(body, media_type="application/json")


def create_app(
    store: Store,
    settings: Settings,
    *,
    health: HealthProvider | None = None,
    journal_path: Path | None = None,
    clock_ms: Callable[[], int] = wall_clock_ms,
    ledger_public_key: Ed25519PublicKey | None = None,
    metrics: CollectorRegistry | None = None,
) -> FastAPI:
    """The API over ``store`` for the plants in ``settings``; with ``journal_path``, the
    coordinator's ledger, decisions and shadow policies too. Reads are open unless the
    config says otherwise; every state-changing endpoint needs the API token.

    ``ledger_public_key`` checks the reports' signatures [default: the one the config
    names, ``settings_public_key``]. ``metrics``: served at ``/metrics`` for Prometheus."""
    app = FastAPI(
        title="carbonlink",
        version=_version,
        description="Factory carbon monitoring: stored series, windows, KPIs and totals.",
    )
    figures = Figures(store, settings)
    # The document lists the configured plants; another id still gets a 404 naming them.
    plant_path = plant_parameter(settings)

    @app.exception_handler(UnknownPlantError)
    def _unknown_plant(_: Request, exc: UnknownPlantError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(QueryError)
    def _bad_parameter(_: Request, exc: QueryError) -> JSONResponse:
        # The same shape as FastAPI's own validation errors, so clients parse one kind.
        detail = [{"loc": ["query", exc.parameter], "msg": exc.problem, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get(f"{API_PREFIX}/plants", summary="Configured plants", responses=TABLE)
    def plants(fmt: Format = "json") -> Response:
        return _respond(figures.plants(), fmt)

    @app.get(
        f"{API_PREFIX}/plants/{{plant}}/meters",
        summary="Meters of one plant",
        responses=PLANT_TABLE,
    )
    def meters(plant: str = plant_path, fmt: Format = "json") -> Response:
        return _respond(figures.meters(plant), fmt)

    @app.get(
        f"{API_PREFIX}/plants/{{plant}}/series",
        summary="Stored points of one field, named with its unit and factor set version",
        responses=PLANT_TABLE,
    )
    def series(
        plant: str = plant_path,
        field: Annotated[str, Query(description=f"One of {', '.join(SERIES_FIELDS)}")] = (
            "co2e_kg"
        ),
        meter: str | None = None,
        start: Time = None,
        end: Time = None,
        factor_version: FactorVersion = None,
        fmt: Format = "json",
    ) -> Response:
        frame = figures.series(
            plant, field, meter=meter, start=start, end=end, factor_version=factor_version
        )
        return _respond(frame, fmt)

    @app.get(
        f"{API_PREFIX}/plants/{{plant}}/windows",
        summary="Sums per UTC window (start-labelled, left-closed)",
        responses=PLANT_TABLE,
    )
    def windows(
        plant: str = plant_path,
        window: WindowName = "15m",
        by: Literal["total", "source", "scope", "meter"] = "total",
        start: Time = None,
        end: Time = None,
        factor_version: FactorVersion = None,
        fmt: Format = "json",
    ) -> Response:
        frame = figures.windows(
            plant, window, by=by, start=start, end=end, factor_version=factor_version
        )
        return _respond(frame, fmt)

    @app.get(
        f"{API_PREFIX}/plants/{{plant}}/kpis",
        summary="Carbon and energy KPIs",
        responses=PLANT_TABLE,
    )
    def kpis(
        plant: str = plant_path,
        start: Time = None,
        end: Time = None,
        factor_version: FactorVersion = None,
        fmt: Format = "json",
    ) -> Response:
        frame = figures.kpis(plant, start=start, end=end, factor_version=factor_version)
        return _respond(frame, fmt)

    @app.get(
        f"{API_PREFIX}/totals", summary="Totals across plants, current factor sets", responses=TABLE
    )
    def totals(
        by: Literal["plant", "scope", "source"] = "plant",
        window: Annotated[
            Literal["1m", "15m", "1h", "1d"] | None, Query(description="Split into periods")
        ] = None,
        start: Time = None,
        end: Time = None,
        fmt: Format = "json",
    ) -> Response:
        return _respond(figures.totals(by, window=window, start=start, end=end), fmt)

    access = ApiAccess.from_settings(settings)
    if access.reads_need_token:
        app.middleware("http")(access.guard_reads)
    if journal_path is not None:
        key = ledger_public_key or settings_public_key(settings)
        add_coordination_routes(app, journal_path, store, public_key=key)
    add_control_routes(app, store, settings, access, journal_path=journal_path, clock_ms=clock_ms)

    if metrics is not None:

        @app.get("/metrics", include_in_schema=False)
        def metrics_endpoint() -> Response:
            return Response(exposition(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get(f"{API_PREFIX}/health", summary="Ingestion counters and store")
    def health_endpoint() -> dict[str, object]:
        return {
            "status": "ok",
            "store": store.url,
            "plants": len(settings.plants),
            "ingestion": dict(health()) if health is not None else None,
        }

    return app
