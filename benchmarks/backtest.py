"""Backtest speed: policies x plants x simulated hours per wall-clock second.

What `carbonlink policy backtest` does after it has read the window from the store: every
shipped policy, over every shipped plant, for ``SIMULATED_HOURS`` at the default 15-minute
step. The window is synthetic (seeded, so every run replays the same numbers) because
reading the store is measured by the ingest figures already; this is the evaluation: the
parties' decisions, each plant's response, transfers and payoffs per step.

The baseline, measured in the same run, is one policy over one plant: the ratio says how
the cost grows with the grid (1.0 = exactly linear in policies x plants).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from carbonlink.config import PlantConfig, load_config
from carbonlink.coordination import Policy, RecordedWindow, backtest, load_policy

REPO: Final = Path(__file__).resolve().parents[1]
PARAMETERS_FILE: Final = "reference.yaml"  # the parameters the policies share, not one
SIMULATED_HOURS: Final = 24 * 7
STEP_S: Final = 900.0
SEED: Final = 20261201
MS_PER_HOUR: Final = 3_600_000
# Hourly CO2e of the abatable and the fixed (process) part, tonnes: the order of the
# shipped plants' emissions (docs/coordination.md); the speed does not depend on it.
ABATABLE_T_PER_STEP: Final = 4.0
FIXED_T_PER_STEP: Final = 1.5


@dataclass(frozen=True, slots=True)
class BacktestResult:
    policies: int
    plants: int
    simulated_hours: float
    wall_s: float
    baseline_rate: float

    @property
    def rate(self) -> float:
        """Policy-plant-hours simulated per second."""
        return self.policies * self.plants * self.simulated_hours / self.wall_s

    @property
    def vs_one_by_one(self) -> float:
        return self.rate / self.baseline_rate


def _window(plants: list[str], hours: float, rng: np.random.Generator) -> RecordedWindow:
    steps = round(hours * 3600 / STEP_S)
    step_ms = round(STEP_S * 1000)
    start = 1_767_225_600_000  # 2026-01-01T00:00Z

    def series(mean: float) -> dict[str, npt.NDArray[np.float64]]:
        return {p: rng.gamma(16.0, mean / 16.0, steps) for p in plants}

    return RecordedWindow(
        start, start + steps * step_ms, step_ms,
        series(ABATABLE_T_PER_STEP), series(FIXED_T_PER_STEP), series(100.0),
        {p: np.full(steps, 60, dtype=np.int64) for p in plants},
        (start, start + steps * step_ms),
    )  # fmt: skip


def _timed(
    policies: Sequence[Policy], plants: Sequence[PlantConfig], window: RecordedWindow
) -> float:
    began = time.perf_counter()
    result = backtest(policies, window, plants)
    wall = time.perf_counter() - began
    assert len(result.steps) == len(policies) * len(plants) * window.steps  # the whole grid
    return wall


def measure() -> tuple[BacktestResult | None, str]:
    """The figure, or None and why not."""
    settings = load_config(REPO / "config" / "carbonlink.yaml")
    plants = [settings.plant(p) for p in sorted(settings.plants)]
    shipped = sorted((REPO / "config" / "policies").glob("*.yaml"))
    policies = [load_policy(p) for p in shipped if p.name != PARAMETERS_FILE]
    rng = np.random.default_rng(SEED)
    window = _window([p.id for p in plants], SIMULATED_HOURS, rng)
    single = _window([plants[0].id], SIMULATED_HOURS, rng)
    one_wall = _timed(policies[:1], plants[:1], single)
    wall = _timed(policies, plants, window)
    baseline_rate = SIMULATED_HOURS / one_wall
    return BacktestResult(len(policies), len(plants), SIMULATED_HOURS, wall, baseline_rate), ""
