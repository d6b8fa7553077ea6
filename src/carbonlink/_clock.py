"""Clocks: the wall clock, and the simulated clock every plant in a run shares.

A simulated clock maps wall time onto plant time at a fixed speed (1 = real time,
1440 = a day per minute) or, with ``speed=None``, runs "as fast as possible": time
only advances when the simulation advances it, which is what backfills want.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

MS_PER_S: Final = 1000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SimClock:
    """Shared simulated time in Unix epoch milliseconds."""

    def __init__(self, start_ms: int | None = None, speed: float | None = 1.0) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0, or None for as fast as possible")
        self.start_ms = wall_clock_ms() if start_ms is None else start_ms
        self.speed = speed
        self._wall_start = time.monotonic()
        self._virtual_ms = self.start_ms

    @property
    def as_fast_as_possible(self) -> bool:
        return self.speed is None

    def now_ms(self) -> int:
        if self.speed is None:
            return self._virtual_ms
        elapsed = time.monotonic() - self._wall_start
        return self.start_ms + round(elapsed * self.speed * MS_PER_S)

    async def sleep_until(self, sim_ms: int) -> None:
        """Wait until simulated time reaches ``sim_ms`` (instant when running flat out)."""
        if self.speed is None:
            self._virtual_ms = max(self._virtual_ms, sim_ms)
            await asyncio.sleep(0)  # let the rest of the run make progress
            return
        delay = (sim_ms - self.now_ms()) / MS_PER_S / self.speed
        if delay > 0:
            await asyncio.sleep(delay)
