"""The FastAPI app: every table endpoint answers JSON records or, with ?format=csv, CSV.

Endpoints are plain ``def`` functions: the store calls block, and FastAPI runs sync
endpoints in its thread pool, off the event loop the services share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from carbonlink import __version__ as _version
from carbonlink.config import PlantConfig, Settings
from carbonlink.coordination import Ed25519PublicKey, settings_public_key
from carbonlink.core.clock import wall_clock_ms
from carbonlink.core.metrics import CONTENT_TYPE_LATEST, CollectorRegistry, exposition
from carbonlink.errors import CarbonlinkError
from carbonlink.storage import SERIES_FIELDS, Store
from carbonlink.storage.rollups import activity_points, emission_points
from carbonlink.storage.series import series_table
from carbonlink.storage.uncertainty import LOWER_SUFFIX, UPPER_SUFFIX
from carbonlink.storage.windows import aggregate, ncv_ranges_of, plant_kpis
from carbonlink.web.api._auth import ApiAccess
from carbonlink.web.api._control import add_control_routes
from carbonlink.web.api._coordination import add_coordination_routes
from carbonlink.web.api._parameters import plant_parameter
from carbonlink.wire import parse_query_time

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


class ParameterError(Exception):
    """A query parameter that parsed but makes no sense: 422 naming it."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = problem


class UnknownPlantError(Exception):
    def __init__(self, plant: str, known: list[str]) -> None:
        super().__init__(f"no plant {plant!r} (known: {', '.join(known)})")


@dataclass(frozen=True, slots=True)
class _Range:
    start_ms: int | None
    end_ms: int | None


def _time(text: str | None, parameter: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_query_time(text)
    except CarbonlinkError as exc:
        raise ParameterError(parameter, str(exc)) from None


def _range(start: str | None, end: str | None) -> _Range:
    span = _Range(_time(start, "start"), _time(end, "end"))
    if span.start_ms is not None and span.end_ms is not None and span.start_ms >= span.end_ms:
        raise ParameterError("end", "must be after start")
    return span


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
    # The current factor set of each plant, read once: every answer counts a plant's
    # readings under it (one version per reading) unless asked for another version.
    current = {p: settings.factor_set(p) for p in settings.plants}
    ncv_ranges = {p: ncv_ranges_of(settings.plants[p], current[p]) for p in settings.plants}
    # The document lists the configured plants; another id still gets a 404 naming them.
    plant_path = plant_parameter(settings)

    def plant_config(plant: str) -> PlantConfig:
        config = settings.plants.get(plant)
        if config is None:
            raise UnknownPlantError(plant, sorted(settings.plants))
        return config

    def plant_emissions(
        plant: str, span: _Range, factor_version: str | None, window: str | None = None
    ) -> pd.DataFrame:
        # Whole hours and days from the store's rollups, raw points at the edges only:
        # a year costs about what a day does (storage.rollups).
        factor_set = current[plant]
        return emission_points(
            store,
            plant,
            start_ms=span.start_ms,
            end_ms=span.end_ms,
            factor_set=factor_set.name,
            factor_version=factor_version or factor_set.version,
            window=window,
        )

    @app.exception_handler(UnknownPlantError)
    def _unknown_plant(_: Request, exc: UnknownPlantError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ParameterError)
    def _bad_parameter(_: Request, exc: ParameterError) -> JSONResponse:
        # The same shape as FastAPI's own validation errors, so clients parse one kind.
        detail = [{"loc": ["query", exc.parameter], "msg": exc.problem, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get(f"{API_PREFIX}/plants", summary="Configured plants", responses=TABLE)
    def plants(fmt: Format = "json") -> Response:
        rows = [
            {
                "plant": p.id,
                "name": p.name,
                "archetype": p.archetype,
                "timezone": p.timezone,
                "grid_region": p.grid_region,
                "factor_set": current[p.id].name,
                "factor_version": current[p.id].version,
                "gwp": current[p.id].gwp,
                # The set's pinned grid region wins over the plant's own.
                "grid_region_applied": current[p.id].grid_for(p.grid_region)[0],
                "meters": len(p.meters),
            }
            for p in settings.plants.values()
        ]
        return _respond(pd.DataFrame(rows), fmt)

    @app.get(
        f"{API_PREFIX}/plants/{{plant}}/meters",
        summary="Meters of one plant",
        responses=PLANT_TABLE,
    )
    def meters(plant: str = plant_path, fmt: Format = "json") -> Response:
        config = plant_config(plant)
        rows = [{"plant": plant} | m.model_dump(mode="json") for m in config.meters]
        return _respond(pd.DataFrame(rows), fmt)

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
        plant_config(plant)
        if field not in SERIES_FIELDS:
            raise ParameterError("field", f"expected one of {', '.join(SERIES_FIELDS)}")
        span = _range(start, end)
        frame = series_table(
            store,
            plant,
            field,
            meter=meter,
            start_ms=span.start_ms,
            end_ms=span.end_ms,
            factor_set=current[plant].name,
            factor_version=factor_version or current[plant].version,
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
        plant_config(plant)
        emissions = plant_emissions(plant, _range(start, end), factor_version, window)
        frame = aggregate(emissions, by, window).assign(
            factor_set=current[plant].name,
            factor_version=factor_version or current[plant].version,
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
        config = plant_config(plant)
        span = _range(start, end)
        emissions = plant_emissions(plant, span, factor_version)
        activity = activity_points(store, plant, start_ms=span.start_ms, end_ms=span.end_ms)
        record = {
            "start": start,
            "end": end,
            "factor_set": current[plant].name,
            "factor_version": factor_version or current[plant].version,
        } | plant_kpis(config, emissions, activity, ncv_ranges[plant]).as_record()
        return _respond(pd.DataFrame([record]), fmt)

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
        span = _range(start, end)
        # Each plant counts under its own current factor set version, never twice.
        chosen = pd.DataFrame(
            [(p, f.name, f.version) for p, f in current.items()],
            columns=["plant", "factor_set", "factor_version"],
        )
        emissions = pd.concat(
            [plant_emissions(p, span, None, window) for p in sorted(current)], ignore_index=True
        )
        frame = aggregate(emissions, by, window)
        if by != "source":  # activity across sources has no common unit
            frame = frame.drop(columns=["activity", "activity_unit"])
        for suffix in ("", LOWER_SUFFIX, UPPER_SUFFIX):
            frame[f"co2e_t{suffix}"] = frame[f"co2e_kg{suffix}"] / 1000
        # Say which factor set version each plant is counted under.
        if by == "plant":
            frame = frame.merge(chosen, on="plant", how="left")
        else:
            frame["factor_versions"] = "; ".join(
                f"{p}: {f.name} {f.version}" for p, f in sorted(current.items())
            )
        return _respond(frame, fmt)

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
