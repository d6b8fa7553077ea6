"""``policy backtest``: several policies against the same recorded window from storage.

1. Load the window: per plant and step, the stored tCO2e of its abatable meters (energy)
   and of its fixed ones (process emissions of output meters, which abatement does not
   touch), under the plant's current factor set version.
2. Rebuild the no-abatement baseline: the recorded stream already carries whatever
   abatement was in force, so add it back. It comes from the coordinator's journal
   (the X it projected for every period) when one is given, else from a baseline fitted
   on a reference period (IPMVP style: CO2e on output), else the window is taken as
   unabated.
3. Replay every policy through the plant dynamics (:class:`PolicyEvaluator`), one step
   at a time, all policies side by side, and summarise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from carbonlink.config import PlantConfig
from carbonlink.coordination._counterfactual import (
    SUMMARY_COLUMNS,
    PlantModel,
    PolicyEvaluator,
    StepInput,
    exact_step,
    summarise,
)
from carbonlink.coordination._estimation import fit_baseline
from carbonlink.coordination._journal import Journal
from carbonlink.coordination._policy import Policy
from carbonlink.coordination._run import directive_history
from carbonlink.simulators import abatement_inflow
from carbonlink.storage import Store, readings_ending_in
from carbonlink.storage.windows import step_index

__all__ = [
    "ABATEMENT_SOURCES",
    "BacktestResult",
    "RecordedWindow",
    "backtest",
    "load_window",
    "write_outputs",
]

FloatArray = npt.NDArray[np.float64]
T = TypeVar("T", bound=np.generic)
KG_PER_T: Final = 1000.0
MS_PER_S: Final = 1000
MS_PER_HOUR: Final = 3_600_000
ABATEMENT_SOURCES: Final = ("journal", "reference", "none")
PROGRESS_EVERY_STEPS: Final = 96
RECORDED_ROW: Final = "(recorded)"


@dataclass(frozen=True)
class RecordedWindow:
    """Per plant, one value per step of ``step_ms`` from ``start_ms``.

    ``requested`` is the window asked for; ``start_ms``/``end_ms`` may be narrower when
    the store holds nothing at its ends (a replay over hours with no data would show
    them as zero emissions).
    """

    start_ms: int
    end_ms: int
    step_ms: int
    abatable_t: Mapping[str, FloatArray]
    fixed_t: Mapping[str, FloatArray]
    output: Mapping[str, FloatArray]
    readings: Mapping[str, npt.NDArray[np.int64]]
    requested: tuple[int, int] = (0, 0)

    @property
    def trimmed(self) -> bool:
        return self.requested != (self.start_ms, self.end_ms)

    def gaps(self) -> dict[str, int]:
        """Per plant, steps inside the window without a single reading."""
        return {p: int((n == 0).sum()) for p, n in self.readings.items() if (n == 0).any()}

    @property
    def steps(self) -> int:
        return -(-(self.end_ms - self.start_ms) // self.step_ms)

    @property
    def plants(self) -> tuple[str, ...]:
        return tuple(self.abatable_t)

    def bounds(self, k: int) -> tuple[int, int]:
        start = self.start_ms + k * self.step_ms
        return start, min(start + self.step_ms, self.end_ms)


def load_window(
    store: Store,
    plants: Sequence[PlantConfig],
    factor_versions: Mapping[str, tuple[str, str]],
    start_ms: int,
    end_ms: int,
    step_s: float,
) -> RecordedWindow:
    """Read [start_ms, end_ms) of every plant from ``store``, binned into steps.

    ``factor_versions`` maps each plant to the (factor set, version) to count, so a
    recompute that stored a second version is not counted twice.
    """
    if end_ms <= start_ms:
        raise ValueError("the window's end must come after its start")
    step_ms = round(step_s * MS_PER_S)
    if step_ms <= 0:
        raise ValueError("the step must be positive")
    steps = -(-(end_ms - start_ms) // step_ms)
    abatable: dict[str, FloatArray] = {}
    fixed: dict[str, FloatArray] = {}
    output: dict[str, FloatArray] = {}
    readings: dict[str, npt.NDArray[np.int64]] = {}
    first, after = readings_ending_in(start_ms, end_ms)
    for plant in plants:
        name, version = factor_versions[plant.id]
        emissions = store.emissions(
            plant.id, start_ms=first, end_ms=after, factor_set=name, factor_version=version
        )
        fixed_meters = {m.id for m in plant.meters if m.output}
        index = step_index(emissions["time"], start_ms, step_ms)
        kept = (index >= 0) & (index < steps)
        tonnes = emissions["co2e_kg"].to_numpy(dtype=np.float64) / KG_PER_T
        is_fixed = emissions["meter"].isin(fixed_meters).to_numpy()
        abatable[plant.id] = _sum_per_step(index, tonnes, kept & ~is_fixed, steps)
        fixed[plant.id] = _sum_per_step(index, tonnes, kept & is_fixed, steps)
        readings[plant.id] = np.bincount(index[kept], minlength=steps)[:steps].astype(np.int64)
        activity = store.activity(plant.id, start_ms=first, end_ms=after)
        produced = activity[activity["meter"].isin(fixed_meters)]
        out_index = step_index(produced["time"], start_ms, step_ms)
        out_kept = (out_index >= 0) & (out_index < steps)
        values = produced["value"].to_numpy(dtype=np.float64)
        output[plant.id] = _sum_per_step(out_index, values, out_kept, steps)
    per_step = np.sum(list(readings.values()), axis=0) if readings else np.zeros(steps)
    seen = np.flatnonzero(per_step)
    if not len(seen):
        return RecordedWindow(
            start_ms, end_ms, step_ms, abatable, fixed, output, readings, (start_ms, end_ms)
        )
    first_step, last_step = int(seen[0]), int(seen[-1])
    keep = slice(first_step, last_step + 1)

    def cut(series: Mapping[str, npt.NDArray[T]]) -> dict[str, npt.NDArray[T]]:
        return {p: v[keep] for p, v in series.items()}

    return RecordedWindow(
        start_ms + first_step * step_ms,
        min(end_ms, start_ms + (last_step + 1) * step_ms),
        step_ms,
        cut(abatable),
        cut(fixed),
        cut(output),
        cut(readings),
        (start_ms, end_ms),
    )


def _sum_per_step(
    index: npt.NDArray[np.int64], values: FloatArray, kept: npt.NDArray[np.bool_], steps: int
) -> FloatArray:
    sums: FloatArray = np.bincount(index[kept], values[kept], minlength=steps).astype(np.float64)
    return sums[:steps]


def abatement_from_journal(
    window: RecordedWindow, journal: Journal, plants: Sequence[PlantConfig]
) -> dict[str, FloatArray]:
    """tCO2e the recorded stream already avoided, per step: the efforts the journal says
    were in force (``directive_history``), run through each plant's own dynamics (what
    its simulator did, from X = 0 at the journal's first period), spread over the steps
    each period overlaps and
    capped the way the plant caps it (at most ``max_reduction`` of what it would have
    emitted). The coordinator's own projection is not used: it is what the parties
    believed, which need not be what the plant did."""
    result = {}
    models = {p.id: p for p in plants}
    for plant in window.plants:
        abate = models[plant].simulation.abatement
        avoided = np.zeros(window.steps)
        x = 0.0
        for start_ms, end_ms, e_m, e_p, sigma in directive_history(journal, plant, window.end_ms):
            h = (end_ms - start_ms) / MS_PER_S / abate.period_s
            inflow = abatement_inflow(abate, e_m, e_p, sigma)
            x_mean, x = exact_step(x, inflow, abate.delta, h)
            # A period overlaps the few steps between its first and its last instant.
            first = max(0, (start_ms - window.start_ms) // window.step_ms)
            last = min(window.steps - 1, (end_ms - 1 - window.start_ms) // window.step_ms)
            for k in range(first, last + 1):
                start, end = window.bounds(k)
                overlap_ms = min(end, end_ms) - max(start, start_ms)
                if overlap_ms > 0:
                    avoided[k] += abate.tonnes(x_mean, overlap_ms / MS_PER_S)
        result[plant] = _realisable(avoided, window.abatable_t[plant], abate.max_reduction)
    return result


def _realisable(avoided: FloatArray, recorded: FloatArray, ceiling: float) -> FloatArray:
    """What could have been avoided given what was emitted: a <= ceiling * (recorded + a)."""
    if ceiling >= 1.0:
        return avoided
    limited: FloatArray = np.minimum(avoided, ceiling / (1.0 - ceiling) * recorded)
    return limited


def abatement_from_reference(
    window: RecordedWindow, reference_start_ms: int, reference_end_ms: int
) -> dict[str, FloatArray]:
    """Observed abatement against a baseline fitted on the window's reference steps:
    max(0, predicted CO2e for the step's output - recorded CO2e)."""
    result = {}
    for plant in window.plants:
        total = window.abatable_t[plant] + window.fixed_t[plant]
        starts = window.start_ms + np.arange(window.steps) * window.step_ms
        in_reference = (starts >= reference_start_ms) & (starts < reference_end_ms)
        frame = pd.DataFrame({"co2e_kg": total * KG_PER_T, "output": window.output[plant]})
        baseline = fit_baseline(frame[in_reference & (window.readings[plant] > 0)])
        predicted = baseline.predict(frame).to_numpy() / KG_PER_T
        result[plant] = np.maximum(0.0, predicted - total)
    return result


@dataclass(frozen=True)
class BacktestResult:
    steps: pd.DataFrame
    summary: pd.DataFrame
    abatement_source: str


def backtest(
    policies: Sequence[Policy],
    window: RecordedWindow,
    plants: Sequence[PlantConfig],
    *,
    recorded_abatement: Mapping[str, FloatArray] | None = None,
    abatement_source: str = "none",
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Every policy over the same baseline; ``progress`` is called with steps done.

    Each plant responds as its plant file says (the simulator's dynamics), while each
    policy's parties decide on that policy's parameters.
    """
    if not policies:
        raise ValueError("give at least one policy")
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must differ to be compared: {names}")
    added = recorded_abatement or {}
    chosen = [p for p in plants if p.id in window.abatable_t]
    evaluators = [
        PolicyEvaluator(
            policy, [PlantModel.from_config(p, policy) for p in chosen], window.start_ms
        )
        for policy in policies
    ]
    done = 0
    for k in range(window.steps):
        start, end = window.bounds(k)
        baseline = {
            plant: StepInput(
                window.abatable_t[plant][k] + (added[plant][k] if plant in added else 0.0),
                window.fixed_t[plant][k],
                window.output[plant][k],
            )
            for plant in window.plants
        }
        for evaluator in evaluators:
            evaluator.step(start, end, baseline)
        done = k + 1
        if progress is not None and (done % PROGRESS_EVERY_STEPS == 0 or done == window.steps):
            progress(done)
    steps = pd.concat([e.frame() for e in evaluators], ignore_index=True)
    money = {policy.name: policy.money.label for policy in policies}
    summary = pd.concat([summarise(steps, money), _recorded_row(window, added)], ignore_index=True)
    return BacktestResult(steps, summary, abatement_source)


def _recorded_row(window: RecordedWindow, added: Mapping[str, FloatArray]) -> pd.DataFrame:
    """The stream as recorded, for reference: its emissions and the abatement in it."""
    emitted = sum(
        float(window.abatable_t[p].sum() + window.fixed_t[p].sum()) for p in window.plants
    )
    abated = sum(float(added[p].sum()) for p in window.plants if p in added)
    row = dict.fromkeys(SUMMARY_COLUMNS, math.nan) | {
        "policy": RECORDED_ROW,
        "plants": len(window.plants),
        "hours": (window.end_ms - window.start_ms) / MS_PER_HOUR,
        "baseline_t": emitted + abated,
        "emissions_t": emitted,
        "abatement_t": abated,
        "abatement_share": abated / (emitted + abated) if emitted + abated > 0 else math.nan,
    }
    return pd.DataFrame([row], columns=list(SUMMARY_COLUMNS))


def write_outputs(result: BacktestResult, out_dir: Path) -> list[Path]:
    """steps.csv, summary.csv, emissions.png and payoffs.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "steps.csv", out_dir / "summary.csv"]
    result.steps.to_csv(paths[0], index=False)
    result.summary.to_csv(paths[1], index=False)
    paths += _plots(result, out_dir)
    return paths


def policy_colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per policy that does not depend on the order the policies were given:
    assigned in sorted order of name from a qualitative palette (tab10, tab20 beyond
    ten policies)."""
    from matplotlib import colormaps

    unique = sorted(set(names))
    palette = colormaps["tab10" if len(unique) <= 10 else "tab20"]
    return {
        name: "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in palette(i % palette.N)[:3]))
        for i, name in enumerate(unique)
    }


def _plots(result: BacktestResult, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit needed
    import matplotlib.pyplot as plt

    steps = result.steps
    policies = list(steps["policy"].unique())
    colours = policy_colours(policies)
    summary = result.summary[result.summary["policy"] != RECORDED_ROW]
    money = next((str(m) for m in summary["money"] if isinstance(m, str) and m), "money units")
    per_step = steps.groupby(["policy", "start_ms"], sort=False)[
        ["emissions_t", "baseline_t", "abatement_t"]
    ].sum()
    figure, (rate_axes, cumulative_axes) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    hours = (steps["end_ms"] - steps["start_ms"]).iloc[0] / MS_PER_HOUR if len(steps) else 1.0
    baseline_drawn = False
    for policy in policies:
        rows = per_step.loc[policy]
        times = pd.to_datetime(rows.index, unit="ms", utc=True)
        if not baseline_drawn:
            rate_axes.plot(times, rows["baseline_t"] / hours, "k--", lw=1, label="no abatement")
            baseline_drawn = True
        colour = colours[policy]
        rate_axes.plot(times, rows["emissions_t"] / hours, lw=1.4, color=colour, label=policy)
        cumulative_axes.plot(times, rows["abatement_t"].cumsum(), lw=1.4, color=colour)
    rate_axes.set_ylabel("emissions, tCO2e/h\n(all plants)")
    rate_axes.grid(alpha=0.3)
    cumulative_axes.set_ylabel("abatement so far, tCO2e")
    cumulative_axes.set_xlabel("time (UTC)")
    cumulative_axes.grid(alpha=0.3)
    # Outside the axes, one entry per line: no label overlaps a curve or another label.
    rate_axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.suptitle("Policy backtest: emissions under each policy (counterfactual replay)")
    figure.autofmt_xdate()
    emissions_png = out_dir / "emissions.png"
    figure.savefig(emissions_png, dpi=110, bbox_inches="tight")
    plt.close(figure)

    # Horizontal bars: one group per policy, labels on the y axis never overlap.
    columns = ["value_M", "value_P", "value_G", "public_cost"]
    labels = ["firm", "platform", "government", "public cost (paid by the government)"]
    bar_colours = ["#4c72b0", "#55a868", "#c44e52", "#8c8c8c"]
    count = len(summary)
    figure, axes = plt.subplots(figsize=(11, 1.2 + 0.75 * max(count, 1)))
    height = 0.8 / len(columns)
    positions = np.arange(count)
    for i, (column, label, colour) in enumerate(zip(columns, labels, bar_colours, strict=True)):
        axes.barh(positions + i * height, summary[column], height, label=label, color=colour)
    axes.set_yticks(positions + height * (len(columns) - 1) / 2, summary["policy"])
    for tick in axes.get_yticklabels():
        tick.set_color(colours.get(tick.get_text(), "black"))
    axes.invert_yaxis()
    axes.axvline(0, color="k", lw=0.8)
    axes.set_xlabel(
        f"{money}: value with continuation (discounted to the window's start), and public "
        "cost over the window"
    )
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes.grid(axis="x", alpha=0.3)
    axes.set_title("What each policy is worth to each party, and what it costs the government")
    payoffs_png = out_dir / "payoffs.png"
    figure.savefig(payoffs_png, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return [emissions_png, payoffs_png]
