"""Backtest speed: policies x plants x simulated hours per wall-clock second.

The slot for `carbonlink policy backtest`, which is being written on another branch.
Until ``carbonlink.coordination`` has a ``backtest`` function, `benchmarks/run` prints
"backtest: not available in this build" and the JSON has ``"backtest": null``.

To fill it in: in ``measure`` time the backtest of some policies x plants over
``SIMULATED_HOURS`` and return a ``BacktestResult``; `benchmarks/run` prints its rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import carbonlink.coordination

SIMULATED_HOURS: Final = 24 * 7
UNAVAILABLE: Final = "backtest: not available in this build"


@dataclass(frozen=True, slots=True)
class BacktestResult:
    policies: int
    plants: int
    simulated_hours: float
    wall_s: float

    @property
    def rate(self) -> float:
        """Policy-plant-hours simulated per second."""
        return self.policies * self.plants * self.simulated_hours / self.wall_s


def available() -> bool:
    return hasattr(carbonlink.coordination, "backtest")


def measure() -> tuple[BacktestResult | None, str]:
    """The figure, or None and why not."""
    if not available():
        return None, UNAVAILABLE
    # Fill in: time carbonlink.coordination.backtest over POLICIES x PLANTS x
    # SIMULATED_HOURS between two perf_counter() calls and return a BacktestResult.
    return None, "backtest: available, but benchmarks/backtest.py does not call it yet"
