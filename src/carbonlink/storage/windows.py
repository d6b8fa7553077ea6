"""Windowed sums and per-plant KPIs, computed at query time from stored points.

Design: pandas does the grouping, on every backend alike: one set of window rules
(interval-end timestamps, UTC, left-closed, start-labelled) and the same numbers from
SQLite and InfluxDB. What it groups is either raw emission points (``Store.emissions``)
or the pseudo-points of ``storage.rollups``: whole hours and days summed by the store as
data lands, raw points only at the ragged edges, so a year costs about what a day does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from carbonlink.config import DEFAULT_METER_ACCURACY_PCT, MeterConfig, PlantConfig
from carbonlink.emissions import FactorLibrary, FactorSet, ResolvedFactor
from carbonlink.storage.uncertainty import (
    LOWER_SUFFIX,
    UPPER_SUFFIX,
    Interval,
    emission_contributions,
    interval_of,
    meter_contributions,
    ratio_interval,
    scaled,
    window_intervals,
)

__all__ = [
    "ENERGY_GJ_PER_UNIT",
    "SUM_FIELDS",
    "WINDOWS",
    "Grouping",
    "PlantKpis",
    "Window",
    "aggregate",
    "meter_factors",
    "ncv_ranges_of",
    "plant_kpis",
    "step_index",
    "window_start",
]

Window = Literal["1m", "15m", "1h", "1d"]
Grouping = Literal["meter", "source", "scope", "plant", "total"]

# API window names -> pandas offsets. Fixed lengths only: a day is 24 h of UTC.
WINDOWS: Final[dict[str, str]] = {"1m": "1min", "15m": "15min", "1h": "1h", "1d": "1D"}
SUM_FIELDS: Final = ("co2_kg", "ch4_kg", "n2o_kg", "co2e_kg", "biogenic_co2_kg")
# Energy content per unit of the library's canonical units (fuel TJ, electricity kWh,
# heat GJ); process activity (t of product) is not energy.
ENERGY_GJ_PER_UNIT: Final[dict[str, float]] = {"TJ": 1000.0, "kWh": 0.0036, "GJ": 1.0}
ENERGY_SOURCES: Final = ("fuel", "electricity", "heat")
ELECTRICITY_SOURCE: Final = "electricity"
KG_PER_T: Final = 1000.0
# A reading's interval ends at its timestamp: one stamped exactly on a boundary was
# used in the window before it, so windows are found from the instant just before.
_INTERVAL_END_SHIFT: Final = pd.Timedelta(1, "ms")


def step_index(time: pd.Series, start_ms: int, step_ms: int) -> npt.NDArray[np.int64]:
    """For each reading, the index of the step of ``step_ms`` from ``start_ms`` that holds
    its interval (the same interval-end rule as ``window_start``; -1 and beyond the last
    step for readings outside)."""
    ms = (time - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    shifted = ms.to_numpy(dtype=np.int64) - (
        int(_INTERVAL_END_SHIFT / pd.Timedelta(1, "ms")) + start_ms
    )
    return np.floor_divide(shifted, step_ms).astype(np.int64)


def window_start(time: pd.Series, window: str) -> pd.Series:
    """Start (UTC) of the window holding each reading whose interval ends at ``time``."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {', '.join(WINDOWS)}")
    return (time - _INTERVAL_END_SHIFT).dt.floor(WINDOWS[window])


def aggregate(emissions: pd.DataFrame, by: Grouping, window: str | None = None) -> pd.DataFrame:
    """Sums of ``SUM_FIELDS`` and activity per group (and per window when given).

    Columns: ``window_start`` (with a window), the ``by`` column (none for ``total``),
    ``SUM_FIELDS``, ``co2e_kg_lower95`` and ``co2e_kg_upper95`` (the 95% interval of
    ``co2e_kg``, ``_uncertainty``), ``activity`` and ``activity_unit``, ``readings``.
    Activity is the sum of converted amounts in the library's canonical unit; a group
    mixing units (coal in TJ with electricity in kWh) has no meaningful sum, so it is left
    empty there. Only windows holding readings appear.
    """
    keys: list[str] = [] if by == "total" else [by]
    frame = emissions
    if window is not None:
        frame = frame.assign(window_start=window_start(frame["time"], window))
        keys.insert(0, "window_start")
    named = {f: pd.NamedAgg(f, "sum") for f in SUM_FIELDS} | {
        "activity": pd.NamedAgg("converted_amount", "sum"),
        "activity_unit": pd.NamedAgg("converted_unit", "first"),
        "units": pd.NamedAgg("converted_unit", "nunique"),
        # Rolled-up pseudo-points (storage.rollups) carry how many readings each sums.
        "readings": pd.NamedAgg("readings", "sum")
        if "readings" in frame.columns
        else pd.NamedAgg("co2e_kg", "size"),
    }
    if keys:
        result = frame.groupby(keys, sort=True).agg(**named).reset_index()
    else:
        result = frame.assign(_all=0).groupby("_all").agg(**named).reset_index(drop=True)
    mixed = result["units"] != 1
    result["activity"] = result["activity"].astype("float64").mask(mixed)
    result["activity_unit"] = result["activity_unit"].astype("object").mask(mixed)
    result = result.drop(columns="units")
    bounds = [f"co2e_kg{LOWER_SUFFIX}", f"co2e_kg{UPPER_SUFFIX}"]
    if frame.empty:
        result = result.assign(**{c: pd.Series(dtype="float64") for c in bounds})
    elif keys:
        result = result.merge(window_intervals(frame, keys), on=keys, how="left")
    else:
        result = pd.concat([result, window_intervals(frame, keys)], axis=1)
    order = [c for c in result.columns if c not in bounds]
    at = order.index("co2e_kg") + 1
    return result[[*order[:at], *bounds, *order[at:]]]


@dataclass(frozen=True, slots=True)
class PlantKpis:
    """Evaluation indices of one plant over one period.

    ``None`` where the ratio is undefined: no output meter, output meters in different
    units, or a zero denominator.
    """

    plant: str
    total_tco2e: float
    tco2e_by_scope: Mapping[int, float]
    biogenic_tco2: float
    output: float | None
    output_unit: str | None
    carbon_productivity: float | None  # output per tCO2e
    carbon_intensity: float | None  # tCO2e per unit of output
    energy_gj: float
    energy_intensity: float | None  # GJ per unit of output
    electricity_kwh: float
    electricity_intensity: float | None  # kWh per unit of output
    energy_structure: Mapping[str, float]  # activity (each fuel, electricity) -> share
    # 95% intervals of the KPIs above, by record name (total_tco2e, scope1_tco2e, ...);
    # a KPI that is undefined has none.
    intervals: Mapping[str, Interval] = dataclasses.field(default_factory=dict)

    def as_record(self) -> dict[str, object]:
        """One flat record (``scope1_tco2e``, ``energy_share_<activity>``...) for tables,
        each KPI with uncertainty followed by the bounds ``<kpi>_lower95`` and
        ``<kpi>_upper95`` of its 95% interval."""
        record: dict[str, object] = {
            "plant": self.plant,
            "total_tco2e": self.total_tco2e,
            **{f"scope{s}_tco2e": v for s, v in sorted(self.tco2e_by_scope.items())},
            "biogenic_tco2": self.biogenic_tco2,
            "output": self.output,
            "output_unit": self.output_unit,
            "carbon_productivity": self.carbon_productivity,
            "carbon_intensity": self.carbon_intensity,
            "energy_gj": self.energy_gj,
            "energy_intensity": self.energy_intensity,
            "electricity_kwh": self.electricity_kwh,
            "electricity_intensity": self.electricity_intensity,
        }
        record.update({f"energy_share_{a}": s for a, s in self.energy_structure.items()})
        with_bounds: dict[str, object] = {}
        for key, value in record.items():
            with_bounds[key] = value
            interval = self.intervals.get(key)
            if interval is not None:
                with_bounds[f"{key}{LOWER_SUFFIX}"] = interval.low
                with_bounds[f"{key}{UPPER_SUFFIX}"] = interval.high
        return with_bounds


# Every plant reports these scopes, zero or not, so KPI tables keep their columns.
REPORTED_SCOPES: Final = (1, 2)


def plant_kpis(
    plant: PlantConfig,
    emissions: pd.DataFrame,
    activity: pd.DataFrame,
    ncv_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> PlantKpis:
    """KPIs from one plant's emission points (one factor set version) and activity points.

    Output is the summed activity of the plant's ``output: true`` meters. ``ncv_ranges``
    gives, per meter, the relative 95% bounds of the NCV that took its amounts to energy
    (fuels metered by mass); without them energy's interval has meter terms only.
    """
    total = float(emissions["co2e_kg"].sum()) / KG_PER_T
    by_scope = dict.fromkeys(REPORTED_SCOPES, 0.0)
    for scope, kg in emissions.groupby("scope")["co2e_kg"].sum().items():
        by_scope[int(scope)] = float(kg) / KG_PER_T  # type: ignore[call-overload]
    energy = _energy_gj_by_activity(emissions)
    energy_gj = float(energy.sum())
    electric = emissions[emissions["source"] == ELECTRICITY_SOURCE]
    electricity_kwh = float(electric["converted_amount"].sum())
    output, output_unit = _output(plant, activity)
    intervals = _kpi_intervals(
        plant, emissions, activity, ncv_ranges or {}, total, by_scope, output
    )
    return PlantKpis(
        plant=plant.id,
        total_tco2e=total,
        tco2e_by_scope=by_scope,
        biogenic_tco2=float(emissions["biogenic_co2_kg"].sum()) / KG_PER_T,
        output=output,
        output_unit=output_unit,
        carbon_productivity=_ratio(output, total),
        carbon_intensity=_ratio(total, output),
        energy_gj=energy_gj,
        energy_intensity=_ratio(energy_gj, output),
        electricity_kwh=electricity_kwh,
        electricity_intensity=_ratio(electricity_kwh, output),
        energy_structure={
            str(a): float(gj) / energy_gj for a, gj in energy.items() if energy_gj > 0
        },
        intervals=intervals,
    )


def _kpi_intervals(
    plant: PlantConfig,
    emissions: pd.DataFrame,
    activity: pd.DataFrame,
    ncv_ranges: Mapping[str, tuple[float, float]],
    total: float,
    by_scope: Mapping[int, float],
    output: float | None,
) -> dict[str, Interval]:
    """The 95% interval of every KPI that is a sum or a ratio of sums (``_uncertainty``)."""
    accuracy = {m.id: m.accuracy_pct for m in plant.meters}
    per_meter = _AccuracyLookup(accuracy)
    tonnes = scaled(emission_contributions(emissions), 1 / KG_PER_T)
    out: dict[str, Interval] = {"total_tco2e": interval_of(total, tonnes)}
    for scope, value in by_scope.items():
        chosen = emissions[emissions["scope"] == scope]
        sources = scaled(emission_contributions(chosen), 1 / KG_PER_T)
        out[f"scope{scope}_tco2e"] = interval_of(value, sources)
    biogenic = emissions.assign(value=emissions["biogenic_co2_kg"] / KG_PER_T)
    out["biogenic_tco2"] = interval_of(
        float(biogenic["value"].sum()), meter_contributions(biogenic, per_meter, plant.id)
    )
    energy_points = _energy_points(emissions)
    energy_sources = meter_contributions(energy_points, per_meter, plant.id)
    for meter_id, (low, high) in ncv_ranges.items():
        rows = energy_points[energy_points["meter"] == meter_id]
        if rows.empty:
            continue
        key = ("ncv", str(rows["activity"].iloc[0]))
        gj = float(rows["value"].sum())
        down, up = energy_sources.get(key, (0.0, 0.0))
        energy_sources[key] = (down + gj * low, up + gj * high)
    energy_gj = float(energy_points["value"].sum())
    out["energy_gj"] = interval_of(energy_gj, energy_sources)
    electric = emissions[emissions["source"] == ELECTRICITY_SOURCE].assign(
        value=lambda f: f["converted_amount"]
    )
    electricity = float(electric["value"].sum())
    electric_sources = meter_contributions(electric, per_meter, plant.id)
    out["electricity_kwh"] = interval_of(electricity, electric_sources)
    if output is None:
        return out
    produced = activity[activity["meter"].isin([m.id for m in plant.meters if m.output])]
    output_sources = meter_contributions(produced, per_meter, plant.id)
    out["output"] = interval_of(output, output_sources)
    ratios = {
        "carbon_intensity": ratio_interval(total, tonnes, output, output_sources),
        "carbon_productivity": ratio_interval(output, output_sources, total, tonnes),
        "energy_intensity": ratio_interval(energy_gj, energy_sources, output, output_sources),
        "electricity_intensity": ratio_interval(
            electricity, electric_sources, output, output_sources
        ),
    }
    out.update({name: value for name, value in ratios.items() if value is not None})
    return out


def ncv_ranges_of(plant: PlantConfig, factor_set: FactorSet) -> dict[str, tuple[float, float]]:
    """Per meter, the relative 95% bounds of the NCV that takes its amounts to energy
    (fuels metered by mass or volume with a published NCV range): ``plant_kpis`` needs
    them for the interval of energy."""
    return {
        meter.id: factor.ncv_relative_range
        for meter, factor in meter_factors(plant, factor_set)
        if factor.ncv_relative_range is not None
    }


def meter_factors(
    plant: PlantConfig, factor_set: FactorSet
) -> Iterator[tuple[MeterConfig, ResolvedFactor]]:
    """Each emission-source meter of ``plant`` with its factor under ``factor_set``."""
    library = FactorLibrary.builtin()
    for meter in plant.meters:
        if meter.activity is not None:
            yield (
                meter,
                factor_set.resolve(library, meter.activity, meter.unit, region=plant.grid_region),
            )


class _AccuracyLookup(dict[str, float]):
    """Meter accuracy (%) from the plant config; meters no longer configured take the
    documented default."""

    def __missing__(self, meter: str) -> float:
        return DEFAULT_METER_ACCURACY_PCT


def _energy_points(emissions: pd.DataFrame) -> pd.DataFrame:
    """Emission points of energy carriers with their energy in GJ as ``value``."""
    energy = emissions[emissions["source"].isin(ENERGY_SOURCES)]
    return energy.assign(
        value=energy["converted_amount"] * energy["converted_unit"].map(ENERGY_GJ_PER_UNIT)
    )


def _energy_gj_by_activity(emissions: pd.DataFrame) -> pd.Series:
    energy = emissions[emissions["source"].isin(ENERGY_SOURCES)]
    per_unit = energy["converted_unit"].map(ENERGY_GJ_PER_UNIT)
    if per_unit.isna().any():
        units = sorted(set(energy.loc[per_unit.isna(), "converted_unit"]))
        raise ValueError(f"no energy content known for converted unit(s) {units}")
    gj = energy["converted_amount"] * per_unit
    return gj.groupby(energy["activity"]).sum().sort_index()


def _output(plant: PlantConfig, activity: pd.DataFrame) -> tuple[float | None, str | None]:
    meters = [m for m in plant.meters if m.output]
    units = {m.unit for m in meters}
    if len(units) != 1:  # none, or tonnes of clinker plus m2 of board: no single output
        return None, None
    rows = activity[activity["meter"].isin([m.id for m in meters])]
    return float(rows["value"].sum()), units.pop()


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
