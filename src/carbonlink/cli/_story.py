"""Lines that explain the coordination loop as it runs, for `coordinate` and the demo:
one line per period (stage and what it means, directives, reports and why there are none
yet), the stage switch, and the emission drop measured beside the drop the model
predicted.

Everything here reads what the coordinator wrote (its status and period rows in the
journal) and the store: it prints, it decides nothing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from carbonlink.config import PlantConfig
from carbonlink.coordination import PeriodRow
from carbonlink.storage import FactorVersions, Store
from carbonlink.wire import format_timestamp

__all__ = ["STAGE_MEANING", "Drop", "drop_line", "measured_drop", "period_line", "reports_note"]

#: Each stage in one phrase (docs/coordination.md has the model behind it).
STAGE_MEANING: Final[dict[int, str]] = {
    1: "each party for itself, no subsidy, self-reported daily totals",
    2: "the government subsidises efforts on verified hourly reports",
    3: "firm and platform decide jointly on shared live data",
}
S_PER_H: Final = 3600.0
MS_PER_H: Final = 3_600_000
KG_PER_T: Final = 1000.0
MIN_PLACEBO_PERIODS: Final = 3  # fewer give no spread worth the name


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
    """Emissions before and after a stage switch, all plants together, in tCO2e/h.

    Measured: read back from storage. Plants change their output as they run (start-up
    ramps, daily swings), so the drop is measured on the emission intensity (tCO2e per
    unit of output, per plant) and taken at the output after the switch: what the plants
    would emit now at their intensity before it, less what they do emit. Predicted: the
    abatement X the model projected, mean over the coordinator's periods on each side.
    """

    before_t_per_h: float  # emission rate the plants had before the switch
    after_t_per_h: float  # ... and since
    measured: float  # intensity before minus after, times output since, summed
    projected_before_t_per_h: float
    projected_after_t_per_h: float
    hours_before: float
    hours_after: float
    #: One standard error of ``measured``: the spread of the same measure over the
    #: periods before the switch, where nothing changed (None: too few periods).
    noise: float | None = None

    @property
    def predicted(self) -> float:
        return self.projected_after_t_per_h - self.projected_before_t_per_h


def measured_drop(
    store: Store,
    versions: FactorVersions,
    plants: Mapping[str, PlantConfig],
    rows: Sequence[PeriodRow],
    window: tuple[int, int, int],
) -> Drop | None:
    """``window`` is (run start, switch, end) in epoch ms. None until both sides hold
    data and a coordinator period."""
    start_ms, switch_ms, end_ms = window
    if not start_ms < switch_ms < end_ms:
        return None
    projected: dict[bool, dict[int, float]] = {False: {}, True: {}}
    for row in rows:
        config = plants.get(row.plant)
        if config is None:
            continue
        abate = config.simulation.abatement
        # X is tCO2e per model period (abate.period_s) per model unit (abate.scale).
        rate = max(0.0, row.x_projected) * abate.scale * S_PER_H / abate.period_s
        side = projected[row.start_ms >= switch_ms]
        side[row.start_ms] = side.get(row.start_ms, 0.0) + rate
    if not projected[False] or not projected[True]:
        return None
    sides = [_emitted(store, versions, plants, a, b) for a, b in
             ((start_ms, switch_ms), (switch_ms, end_ms))]  # fmt: skip
    hours = [(switch_ms - start_ms) / MS_PER_H, (end_ms - switch_ms) / MS_PER_H]
    measured = _drop_against(sides[0], sides[1], hours[1])
    # The same measure on each period before the switch against the whole of before:
    # its spread is what the measure shows when nothing changes.
    periods = sorted({(r.start_ms, r.end_ms) for r in rows if r.end_ms <= switch_ms})
    placebo = [
        _drop_against(sides[0], _emitted(store, versions, plants, a, b), (b - a) / MS_PER_H,
                      at=sides[1], at_hours=hours[1])
        for a, b in periods
        if a >= start_ms
    ]  # fmt: skip
    noise = None
    if len(placebo) >= MIN_PLACEBO_PERIODS:
        period_h = statistics.mean((b - a) / MS_PER_H for a, b in periods)
        noise = statistics.stdev(placebo) * math.sqrt(period_h / hours[0] + period_h / hours[1])
    before = sum(c for c, _ in sides[0].values()) / hours[0]
    after = sum(c for c, _ in sides[1].values()) / hours[1]
    means = [sum(v.values()) / len(v) for v in (projected[False], projected[True])]
    return Drop(before, after, measured, means[0], means[1], hours[0], hours[1], noise)


def _drop_against(
    base: Mapping[str, tuple[float, float]],
    then: Mapping[str, tuple[float, float]],
    then_hours: float,
    *,
    at: Mapping[str, tuple[float, float]] | None = None,
    at_hours: float | None = None,
) -> float:
    """tCO2e/h: the plants' intensity in ``base`` less that in ``then``, times the
    output rate ``at`` (default: ``then``'s), summed over plants."""
    rate_of, rate_hours = (then, then_hours) if at is None else (at, at_hours or then_hours)
    drop = 0.0
    for plant, (co2e_b, out_b) in base.items():
        co2e_t, out_t = then.get(plant, (0.0, 0.0))
        if out_b > 0 and out_t > 0:
            drop += (co2e_b / out_b - co2e_t / out_t) * rate_of[plant][1] / rate_hours
    return drop


def _emitted(
    store: Store,
    versions: FactorVersions,
    plants: Mapping[str, PlantConfig],
    start_ms: int,
    end_ms: int,
) -> dict[str, tuple[float, float]]:
    """Per plant: tCO2e and output (in its output meters' units) in [start, end)."""
    totals = store.totals(versions, start_ms=start_ms, end_ms=end_ms).set_index("plant")
    result = {}
    for plant_id, config in plants.items():
        outputs = {m.id for m in config.meters if m.output}
        activity = store.activity(plant_id, start_ms=start_ms, end_ms=end_ms)
        output = float(activity[activity["meter"].isin(outputs)]["value"].sum())
        result[plant_id] = (float(totals["co2e_kg"].get(plant_id, 0.0)) / KG_PER_T, output)
    return result


def drop_line(drop: Drop) -> str:
    noise = (
        ""
        if drop.noise is None
        else f" (+/- {drop.noise:,.2f}: one standard error, from the periods before it)"
    )
    return (
        f"emission drop since the switch: measured {drop.measured:,.2f} tCO2e/h{noise}, the model "
        f"predicted {drop.predicted:,.2f} tCO2e/h (its abatement X went from "
        f"{drop.projected_before_t_per_h:,.2f} to {drop.projected_after_t_per_h:,.2f} "
        f"tCO2e/h); measured at the plants' output since the switch, on their emissions per "
        f"unit of output over {drop.hours_before:.2g} h before and {drop.hours_after:.2g} h "
        f"after (all plants emitted {drop.before_t_per_h:,.1f} tCO2e/h before, "
        f"{drop.after_t_per_h:,.1f} since)"
    )
