"""A backtest from a store, end to end: the window (given or the data's own), the recorded
abatement added back (from a journal or a reference period), every policy replayed.

What ``carbonlink policy backtest`` does, callable from Python with the same rules, so a
notebook and the CLI get the same figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from carbonlink.config import PlantConfig, Settings
from carbonlink.coordination._backtest import (
    BacktestResult,
    FloatArray,
    RecordedWindow,
    abatement_from_journal,
    abatement_from_reference,
    backtest,
    load_window,
)
from carbonlink.coordination._journal import Journal
from carbonlink.coordination._policy import Policy, load_policy
from carbonlink.core.durations import parse_duration_s
from carbonlink.errors import ConfigError
from carbonlink.storage import Store
from carbonlink.storage.figures import TimeLike, time_ms
from carbonlink.wire import format_timestamp

__all__ = [
    "ABATEMENT_SOURCE_TEXT",
    "BacktestRun",
    "BacktestSetup",
    "prepare_backtest",
    "replay",
    "run_backtest",
    "window_bounds",
]

ABATEMENT_SOURCE_TEXT: Final = {
    "journal": "from the coordinator's journal, added back to the baseline",
    "reference": "observed against a baseline fitted on the reference period",
    "none": "none (the window is taken as unabated)",
}


@dataclass(frozen=True)
class BacktestSetup:
    """What a backtest replays: the recorded window, its plants, the policies, and the
    abatement already in the recording (``abatement_source``: journal, reference, none)."""

    policies: tuple[Policy, ...]
    window: RecordedWindow
    plants: tuple[PlantConfig, ...]
    recorded_abatement: Mapping[str, FloatArray] | None
    abatement_source: str

    @property
    def hours(self) -> float:
        return (self.window.end_ms - self.window.start_ms) / 3.6e6

    def notes(self) -> list[str]:
        """What a user should know about the window: cut to the data, steps without data."""
        notes = []
        if self.window.trimmed:
            notes.append(
                f"note: the store has data only from {format_timestamp(self.window.start_ms)} "
                f"to {format_timestamp(self.window.end_ms)}; the window is cut to that"
            )
        for plant_id, gaps in self.window.gaps().items():
            notes.append(f"note: {plant_id} has no readings in {gaps} of {self.window.steps} steps")
        return notes


@dataclass(frozen=True)
class BacktestRun:
    """A backtest's result (``result.steps``, ``result.summary``) and what it ran on."""

    setup: BacktestSetup
    result: BacktestResult

    @property
    def hours(self) -> float:
        return self.setup.hours

    @property
    def abatement_source(self) -> str:
        return self.setup.abatement_source


def prepare_backtest(
    settings: Settings,
    store: Store,
    policies: Sequence[Policy | str | Path],
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    step: str | float = "15m",
    plants: Sequence[str] | None = None,
    journal: str | Path | None = None,
    reference: tuple[TimeLike, TimeLike] | None = None,
) -> BacktestSetup:
    """Load the window and the recorded abatement ``run_backtest`` replays policies on."""
    loaded = tuple(p if isinstance(p, Policy) else load_policy(p) for p in policies)
    for policy in loaded:
        policy.check_plants(settings.plants)
    if journal is not None and reference is not None:
        raise ConfigError(None, "reference", "give a journal or a reference period, not both")
    chosen = [settings.plant(p) for p in plants] if plants else list(settings.plants.values())
    versions = {}
    for plant in chosen:
        factor_set = settings.factor_set(plant.id)
        versions[plant.id] = (factor_set.name, factor_set.version)
    step_s = parse_duration_s(step) if isinstance(step, str) else float(step)
    start_ms, end_ms = window_bounds(store, chosen, start, end, step_s)
    if end_ms <= start_ms:
        raise ConfigError(None, "end", "must come after start")
    window = load_window(store, chosen, versions, start_ms, end_ms, step_s)
    if not any(n.sum() for n in window.readings.values()):
        raise ConfigError(None, "start", "the store holds no emissions in that window")
    added, source = None, "none"
    if journal is not None:
        with Journal.open_readonly(Path(journal)) as opened:
            added, source = abatement_from_journal(window, opened, chosen), "journal"
    elif reference is not None:
        ref_start, ref_end = (time_ms(t, "reference") for t in reference)
        if ref_start is None or ref_end is None or ref_end <= ref_start:
            raise ConfigError(None, "reference", "expected (start, end) with end after start")
        added, source = abatement_from_reference(window, ref_start, ref_end), "reference"
    return BacktestSetup(loaded, window, tuple(chosen), added, source)


def run_backtest(
    settings: Settings,
    store: Store,
    policies: Sequence[Policy | str | Path],
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    step: str | float = "15m",
    plants: Sequence[str] | None = None,
    journal: str | Path | None = None,
    reference: tuple[TimeLike, TimeLike] | None = None,
    progress: Callable[[int], None] | None = None,
) -> BacktestRun:
    """Replay ``policies`` (loaded or paths to policy files) on what ``store`` recorded.

    ``start``/``end`` left out: the stored data's, rounded inward to whole steps. The
    abatement already in the recording comes from the coordinator's ``journal`` or from a
    baseline fitted on the ``reference`` (start, end) period; with neither, the window is
    taken as unabated. ConfigError names the argument when the request makes no sense.
    ``progress`` is told the steps replayed so far (of ``setup.window.steps``).
    """
    setup = prepare_backtest(
        settings, store, policies, start=start, end=end, step=step, plants=plants,
        journal=journal, reference=reference,
    )  # fmt: skip
    return BacktestRun(setup, replay(setup, progress))


def replay(setup: BacktestSetup, progress: Callable[[int], None] | None = None) -> BacktestResult:
    """Every policy of ``setup`` over its window, side by side."""
    return backtest(
        setup.policies,
        setup.window,
        setup.plants,
        recorded_abatement=setup.recorded_abatement,
        abatement_source=setup.abatement_source,
        progress=progress,
    )


def window_bounds(
    store: Store, plants: Sequence[PlantConfig], start: TimeLike, end: TimeLike, step_s: float
) -> tuple[int, int]:
    """The window asked for; where a bound is left out, the stored data's, rounded inward to
    the step grid, so that no step is only partly covered (it would replay as a dip)."""
    start_ms, end_ms = time_ms(start, "start"), time_ms(end, "end")
    if start_ms is not None and end_ms is not None:
        return start_ms, end_ms
    ranges = [r for r in (store.time_range(p.id) for p in plants) if r is not None]
    if not ranges:
        raise ConfigError(None, "store", f"{store.url} holds no readings of these plants")
    step_ms = round(step_s * 1000)
    # A reading's interval ends at its time: one stamped on a boundary belongs before it.
    first = -(-min(r[0] for r in ranges) // step_ms) * step_ms
    last = max(r[1] for r in ranges) // step_ms * step_ms
    if last <= first:  # less than one whole step of data: take what there is
        first = (min(r[0] for r in ranges) - 1) // step_ms * step_ms
        last = -(-max(r[1] for r in ranges) // step_ms) * step_ms
    return (
        start_ms if start_ms is not None else first,
        end_ms if end_ms is not None else last,
    )
