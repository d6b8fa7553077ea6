"""Lines that explain the coordination loop as it runs, for `coordinate` and the demo:
one line per period (stage and what it means, directives, reports and why there are none
yet), the stage switch, and the emission drop measured beside the drop the model
predicted.

Everything here reads what the coordinator wrote (its status and period rows in the
journal) and the store: it prints, it decides nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

from carbonlink.abatement import exact_step
from carbonlink.config import PlantConfig
from carbonlink.coordination import PeriodRow
from carbonlink.simulators import abatement_inflow
from carbonlink.storage import FactorVersions, Store, epoch_ms
from carbonlink.wire import format_timestamp

__all__ = [
    "STAGE_MEANING", "Drop", "drop_line", "measured_drop", "period_line", "reports_note",
    "switch_ms",
]  # fmt: skip

#: Each stage in one phrase (docs/coordination.md has the model behind it).
STAGE_MEANING: Final[dict[int, str]] = {
    1: "each party for itself, no subsidy, self-reported daily totals",
    2: "the government subsidises efforts on verified hourly reports",
    3: "firm and platform decide jointly on shared live data",
}
S_PER_H: Final = 3600.0
MS_PER_H: Final = 3_600_000
KG_PER_T: Final = 1000.0


def stage_phrase(stage: int, name: str) -> str:
    return f"stage {stage} ({name}: {STAGE_MEANING.get(stage, 'see docs/coordination.md')})"


def reports_note(status: Mapping[str, Any], reports: int) -> str:
    """How many reports reached the government, and when none has: why, and when the
    first is due (the stage's sharing rule, docs/policies.md "Sharing")."""
    if reports:
        return f"{reports} reports in the ledger"
    rule = status.get("sharing", {}).get(str(status.get("stage")))
    start = status.get("run_start_ms")
    if rule is None or start is None:
        return "no report in the ledger yet"
    delay_s = float(rule.get("delay_s") or 0.0)
    every_s = rule.get("every_s")
    if every_s is None:
        when = "as soon as it is recorded" if delay_s == 0 else f"{_span(delay_s)} after it ends"
        return f"no report yet: each period is reported {when}"
    every_ms = round(float(every_s) * 1000)
    window_end = (int(start) // every_ms + 1) * every_ms  # windows are aligned to UTC
    due = window_end + round(delay_s * 1000)
    return (
        f"no report yet: this stage reports every {_span(float(every_s))}, "
        f"{_span(delay_s)} after the window ends; the first is due at simulated "
        f"{format_timestamp(due)}, or {_span(delay_s)} after the stage changes"
    )


def period_line(status: Mapping[str, Any], reports: int) -> str:
    """One line per coordinator period: when, the stage and what it means, the
    directives sent, the reports."""
    stage = int(status["stage"])
    directives = status.get("directives", {})
    efforts = [float(d.get("effort_firm", 0.0)) for d in directives.values()]
    mean = sum(efforts) / len(efforts) if efforts else 0.0
    return (
        f"period {status.get('periods', 0)} at simulated "
        f"{format_timestamp(int(status['updated_ms']))}: "
        f"{stage_phrase(stage, str(status['stage_name']))}; directives to "
        f"{len(directives)} plants (mean firm effort {mean:.3f}); {reports_note(status, reports)}"
    )


def _span(seconds: float) -> str:
    for unit, size in (("d", 86_400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


@dataclass(frozen=True, slots=True)
class Drop:
    """What a stage switch changed in the plants' emissions, all plants together, in
    tCO2e/h over the coordinator's periods since it.

    Measured: the CO2e stored since the switch against what the same plants would have
    emitted without it. The simulators are seeded and their randomness never depends on
    abatement, so "without it" is exact: the same fleet replayed with only the
    directives from before the switch (``simulators.without_changes_from``), valued at
    the factors each stored reading was counted under. No noise, no baseline to fit.
    Predicted: the model's abatement X since the switch (``x_projected``) less the X its
    own dynamics give under the efforts from before it, from the same starting X.
    """

    before_t_per_h: float  # emission rate the plants had before the switch
    after_t_per_h: float  # ... and since (over the same window as ``measured``)
    measured: float
    predicted: float
    projected_before_t_per_h: float  # the model's X, mean over the periods before
    projected_after_t_per_h: float  # ... and after the switch
    hours_before: float
    hours_after: float
    readings: int  # stored emission readings since the switch that were compared


def switch_ms(rows: Sequence[PeriodRow]) -> int | None:
    """When the stage first changed: the start of the first period under another stage
    than the first period's (the model's switch; a plant applies its new directive when
    the directive reaches it, a little later)."""
    ordered = sorted(rows, key=lambda r: r.start_ms)
    return next((r.start_ms for r in ordered if r.stage != ordered[0].stage), None)


def measured_drop(
    store: Store,
    versions: FactorVersions,
    plants: Mapping[str, PlantConfig],
    rows: Sequence[PeriodRow],
    window: tuple[int, int, int],
    without: pd.DataFrame,
) -> Drop | None:
    """``window`` is (run start, switch, newest stored) in epoch ms; ``without`` the
    amounts as run and without the switch (``COUNTERFACTUAL_COLUMNS``). None until
    both sides of the switch hold a coordinator period."""
    start_ms, switched_ms, newest_ms = window
    by_plant: dict[str, list[PeriodRow]] = {}
    for row in sorted(rows, key=lambda r: r.start_ms):
        if row.plant in plants:
            by_plant.setdefault(row.plant, []).append(row)
    end_ms = min(
        [newest_ms] + [max(r.end_ms for r in plant_rows) for plant_rows in by_plant.values()]
    )
    if not start_ms < switched_ms < end_ms:
        return None
    sides = (
        _model_sides(plants[p], plant_rows, switched_ms, end_ms)
        for p, plant_rows in by_plant.items()
    )
    model = [m for m in sides if m is not None]
    if not model:
        return None
    hours = ((switched_ms - start_ms) / MS_PER_H, (end_ms - switched_ms) / MS_PER_H)
    measured_kg, compared = 0.0, 0
    for plant in by_plant:
        name, version = versions[plant]
        stored = store.emissions(
            plant, start_ms=switched_ms, end_ms=end_ms, factor_set=name, factor_version=version
        )
        if stored.empty:
            continue
        paired = pd.DataFrame({
            "ts_ms": epoch_ms(stored["time"]), "meter": stored["meter"].astype(str),
            "co2e_kg": stored["co2e_kg"].to_numpy(dtype=float),
        }).merge(without[without["plant"] == plant], on=["ts_ms", "meter"])  # fmt: skip
        paired = paired[paired["as_run"] != 0.0]
        compared += len(paired)
        measured_kg += float(
            (paired["co2e_kg"] * (paired["without"] / paired["as_run"] - 1.0)).sum()
        )
    rates = [
        _rate(store, versions, a, b, h)
        for a, b, h in ((start_ms, switched_ms, hours[0]), (switched_ms, end_ms, hours[1]))
    ]
    return Drop(
        rates[0],
        rates[1],
        measured_kg / KG_PER_T / hours[1],
        sum(m[0] for m in model),
        sum(m[1] for m in model),
        sum(m[2] for m in model),
        hours[0],
        hours[1],
        compared,
    )


def _model_sides(
    config: PlantConfig, rows: Sequence[PeriodRow], switched_ms: int, end_ms: int
) -> tuple[float, float, float] | None:
    """tCO2e/h for one plant: the model's predicted drop, its X before and after the
    switch (time-weighted means over the periods on each side)."""
    abate = config.simulation.abatement
    per_h = abate.tonnes(1.0, S_PER_H)  # tCO2e/h for one unit of X
    before = [r for r in rows if r.end_ms <= switched_ms]
    after = [r for r in rows if r.start_ms >= switched_ms and r.end_ms <= end_ms]
    if not before or not after or after[0].x_start is None:
        return None
    last = before[-1]
    kept = abatement_inflow(abate, last.effort_firm, last.effort_platform, last.sigma)
    x, gap, span = after[0].x_start, 0.0, 0.0
    for row in after:
        ms = row.end_ms - row.start_ms
        periods = row.model_periods or ms / 1000 / abate.period_s
        mean_without, x = exact_step(x, kept, abate.delta, periods)
        gap += (max(0.0, row.x_projected) - max(0.0, mean_without)) * ms
        span += ms
    return (
        gap / span * per_h,
        _time_mean(before) * per_h,
        _time_mean(after) * per_h,
    )


def _time_mean(rows: Sequence[PeriodRow]) -> float:
    weights = [r.end_ms - r.start_ms for r in rows]
    return sum(max(0.0, r.x_projected) * w for r, w in zip(rows, weights, strict=True)) / sum(
        weights
    )


def _rate(
    store: Store, versions: FactorVersions, start_ms: int, end_ms: int, hours: float
) -> float:
    """tCO2e/h all plants emitted in [start, end)."""
    totals = store.totals(versions, start_ms=start_ms, end_ms=end_ms)
    return float(totals["co2e_kg"].sum()) / KG_PER_T / hours


def drop_line(drop: Drop) -> str:
    return (
        f"emission drop since the switch: measured {drop.measured:,.2f} tCO2e/h, the model "
        f"predicted {drop.predicted:,.2f} tCO2e/h (its abatement X went from "
        f"{drop.projected_before_t_per_h:,.2f} to {drop.projected_after_t_per_h:,.2f} "
        f"tCO2e/h); measured on the {drop.readings:,} emission readings stored over the "
        f"{drop.hours_after:.2g} h since the switch, against the same seeded plants replayed "
        f"without it (all plants emitted {drop.before_t_per_h:,.1f} tCO2e/h over the "
        f"{drop.hours_before:.2g} h before, {drop.after_t_per_h:,.1f} since)"
    )
