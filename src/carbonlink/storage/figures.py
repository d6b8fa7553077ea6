"""The figures every surface shows, in one place: plants, meters, series, windows, KPIs and
totals as DataFrames, each counted under the plant's current factor set version.

The HTTP API answers these frames as JSON or CSV, and a researcher gets the same frames
from Python (``carbonlink.Figures``): one implementation, so a figure is the same number
wherever it is read. Times are epoch ms, RFC 3339 text with an offset, or timezone-aware
``datetime``/``pandas.Timestamp``; a naive time is refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import pandas as pd

from carbonlink.config import PlantConfig, Settings
from carbonlink.emissions import FactorSet
from carbonlink.errors import QueryError, RejectedReading, UnknownPlantError
from carbonlink.storage._base import SERIES_FIELDS, Store
from carbonlink.storage.rollups import activity_points, emission_points
from carbonlink.storage.series import series_table
from carbonlink.storage.uncertainty import LOWER_SUFFIX, UPPER_SUFFIX
from carbonlink.storage.windows import Window, aggregate, ncv_ranges_of, plant_kpis
from carbonlink.wire import parse_query_time

__all__ = ["KG_PER_T", "Figures", "TimeLike", "time_ms"]

TimeLike = str | int | datetime | pd.Timestamp | None
KG_PER_T: Final = 1000.0
PlantGrouping = Literal["total", "source", "scope", "meter"]
TotalsGrouping = Literal["plant", "scope", "source"]


def time_ms(value: TimeLike, name: str = "time") -> int | None:
    """Epoch ms of a time a user gives; QueryError naming ``name`` when it makes no sense."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise QueryError(name, f"expected a time, got {value!r}")
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str):
        try:
            return parse_query_time(value)
        except RejectedReading as exc:
            raise QueryError(name, exc.detail) from None
    moment = pd.Timestamp(value)
    if moment.tzinfo is None:
        raise QueryError(name, f"{value!r} has no timezone: give UTC explicitly")
    return int(moment.value // 1_000_000)


@dataclass(frozen=True, slots=True)
class _Span:
    start_ms: int | None
    end_ms: int | None


def _span(start: TimeLike, end: TimeLike) -> _Span:
    span = _Span(time_ms(start, "start"), time_ms(end, "end"))
    if span.start_ms is not None and span.end_ms is not None and span.start_ms >= span.end_ms:
        raise QueryError("end", "must be after start")
    return span


class Figures:
    """The configured plants' stored figures. ``store`` stays the caller's to close.

    Factor sets are looked up per call (``Settings.factor_set`` is cached by file change),
    so a recompute to a new version is what the next call counts.
    """

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    # -- what is configured --------------------------------------------------------
    def plant(self, plant: str) -> PlantConfig:
        config = self.settings.plants.get(plant)
        if config is None:
            raise UnknownPlantError(plant, sorted(self.settings.plants))
        return config

    def factor_set(self, plant: str) -> FactorSet:
        self.plant(plant)
        return self.settings.factor_set(plant)

    def plants(self) -> pd.DataFrame:
        """One row per configured plant, with the factor set version it counts under."""
        rows = []
        for p in self.settings.plants.values():
            current = self.settings.factor_set(p.id)
            rows.append(
                {
                    "plant": p.id,
                    "name": p.name,
                    "archetype": p.archetype,
                    "timezone": p.timezone,
                    "grid_region": p.grid_region,
                    "factor_set": current.name,
                    "factor_version": current.version,
                    "gwp": current.gwp,
                    # The set's pinned grid region wins over the plant's own.
                    "grid_region_applied": current.grid_for(p.grid_region)[0],
                    "meters": len(p.meters),
                }
            )
        return pd.DataFrame(rows)

    def meters(self, plant: str) -> pd.DataFrame:
        config = self.plant(plant)
        return pd.DataFrame([{"plant": plant} | m.model_dump(mode="json") for m in config.meters])

    # -- what is stored ------------------------------------------------------------
    def series(
        self,
        plant: str,
        field: str = "co2e_kg",
        *,
        meter: str | None = None,
        start: TimeLike = None,
        end: TimeLike = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame:
        """One row per reading: the field under its own name, its ``unit`` and, for
        emission fields, the factor set version counted."""
        current = self.factor_set(plant)
        if field not in SERIES_FIELDS:
            raise QueryError("field", f"expected one of {', '.join(SERIES_FIELDS)}")
        span = _span(start, end)
        return series_table(
            self.store,
            plant,
            field,
            meter=meter,
            start_ms=span.start_ms,
            end_ms=span.end_ms,
            factor_set=current.name,
            factor_version=factor_version or current.version,
        )

    def windows(
        self,
        plant: str,
        window: Window = "15m",
        *,
        by: PlantGrouping = "total",
        start: TimeLike = None,
        end: TimeLike = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame:
        """Sums per UTC window (start-labelled, left-closed on interval ends)."""
        current = self.factor_set(plant)
        version = factor_version or current.version
        emissions = self._emissions(plant, _span(start, end), current, version, window)
        return aggregate(emissions, by, window).assign(
            factor_set=current.name, factor_version=version
        )

    def kpis(
        self,
        plant: str,
        *,
        start: TimeLike = None,
        end: TimeLike = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame:
        """One row of carbon and energy KPIs with their 95% intervals."""
        config = self.plant(plant)
        current = self.settings.factor_set(plant)
        version = factor_version or current.version
        span = _span(start, end)
        emissions = self._emissions(plant, span, current, version)
        activity = activity_points(self.store, plant, start_ms=span.start_ms, end_ms=span.end_ms)
        kpis = plant_kpis(config, emissions, activity, ncv_ranges_of(config, current))
        record = {
            "start": None if start is None else str(start),
            "end": None if end is None else str(end),
            "factor_set": current.name,
            "factor_version": version,
        } | kpis.as_record()
        return pd.DataFrame([record])

    def totals(
        self,
        by: TotalsGrouping = "plant",
        *,
        window: Window | None = None,
        start: TimeLike = None,
        end: TimeLike = None,
    ) -> pd.DataFrame:
        """Totals across plants, each plant counted once under its current factor set
        version (named in the frame), in kg and t CO2e with 95% intervals."""
        span = _span(start, end)
        current = {p: self.settings.factor_set(p) for p in self.settings.plants}
        # Each plant under its own current version, never twice.
        emissions = pd.concat(
            [self._emissions(p, span, f, f.version, window) for p, f in sorted(current.items())],
            ignore_index=True,
        )
        chosen = pd.DataFrame(
            [(p, f.name, f.version) for p, f in current.items()],
            columns=["plant", "factor_set", "factor_version"],
        )
        frame = aggregate(emissions, by, window)
        if by != "source":  # activity across sources has no common unit
            frame = frame.drop(columns=["activity", "activity_unit"])
        for suffix in ("", LOWER_SUFFIX, UPPER_SUFFIX):
            frame[f"co2e_t{suffix}"] = frame[f"co2e_kg{suffix}"] / KG_PER_T
        if by == "plant":
            return frame.merge(chosen, on="plant", how="left")
        frame["factor_versions"] = "; ".join(
            f"{p}: {f.name} {f.version}" for p, f in sorted(current.items())
        )
        return frame

    def _emissions(
        self,
        plant: str,
        span: _Span,
        current: FactorSet,
        version: str,
        window: str | None = None,
    ) -> pd.DataFrame:
        # Whole hours and days from the store's rollups, raw points at the edges only:
        # a year costs about what a day does (storage.rollups).
        return emission_points(
            self.store,
            plant,
            start_ms=span.start_ms,
            end_ms=span.end_ms,
            factor_set=current.name,
            factor_version=version,
            window=window,
        )
