"""Clocks: the wall clock, and the simulated clock every plant in a run shares.

A simulated clock maps wall time onto plant time at a fixed speed (1 = real time,
1440 = a day per minute) or, with ``speed=None``, runs "as fast as possible": time
only advances when the simulation advances it, which is what backfills want.

An accelerated run must not write data ahead of the wall clock: the agents refuse
readings from the future (``clock_skew``) and every view bounded by ``now()`` (Grafana,
InfluxQL) hides them. So :func:`run_clock` makes an accelerated run a **backfill that
ends now**: it starts far enough back that it reaches the present as it ends, and a
clock with ``cap_at_wall`` never passes the wall clock (a run without an end catches up
and then follows the wall clock in real time).
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

MS_PER_S: Final = 1000
# How far back an accelerated run without an end starts: it replays this much at its
# speed, reaches the present, and then follows the wall clock.
UNBOUNDED_BACKFILL_MS: Final = 24 * 3600 * 1000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SimClock:
    """Shared simulated time in Unix epoch milliseconds.

    ``cap_at_wall``: the clock never runs ahead of the wall clock; once it has caught up
    it runs at the wall clock's pace.
    """

    def __init__(
        self, start_ms: int | None = None, speed: float | None = 1.0, *, cap_at_wall: bool = False
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0, or None for as fast as possible")
        self.start_ms = wall_clock_ms() if start_ms is None else start_ms
        self.speed = speed
        self.cap_at_wall = cap_at_wall
        self._wall_start = time.monotonic()
        self._virtual_ms = self.start_ms

    def restart(self) -> None:
        """Be at ``start_ms`` again, now: a run whose parts took a while to connect
        starts its data at its start, not a burst of catching up later."""
        self._wall_start = time.monotonic()
        self._virtual_ms = self.start_ms

    @property
    def as_fast_as_possible(self) -> bool:
        return self.speed is None

    def _accelerated_ms(self) -> int:
        assert self.speed is not None
        elapsed = time.monotonic() - self._wall_start
        return self.start_ms + round(elapsed * self.speed * MS_PER_S)

    def now_ms(self) -> int:
        if self.speed is None:
            return self._virtual_ms
        accelerated = self._accelerated_ms()
        return min(accelerated, wall_clock_ms()) if self.cap_at_wall else accelerated

    async def sleep_until(self, sim_ms: int) -> None:
        """Wait until simulated time reaches ``sim_ms`` (instant when running flat out)."""
        if self.speed is None:
            self._virtual_ms = max(self._virtual_ms, sim_ms)
            await asyncio.sleep(0)  # let the rest of the run make progress
            return
        delay = (sim_ms - self._accelerated_ms()) / MS_PER_S / self.speed
        if self.cap_at_wall:
            # Capped: the wall clock must have got there too.
            delay = max(delay, (sim_ms - wall_clock_ms()) / MS_PER_S)
        if delay > 0:
            await asyncio.sleep(delay)


def run_clock(
    speed: float | None, *, start_ms: int | None = None, duration_ms: int | None = None
) -> SimClock:
    """The clock of a simulation run: where it starts when not told, so that its data
    lies in the past.

    - as fast as possible (``speed=None``) with a duration: the span that ends now;
    - faster than real time with a duration: it starts ``duration x (1 - 1/speed)``
      back, so it reaches the present exactly as the run ends (a day at 1440x starts
      23 h 59 min ago and ends a minute later, now);
    - faster than real time without a duration: it starts a day back, catches up, and
      then follows the wall clock;
    - real time or slower: now.

    A start the caller gives is kept (asking for it is asking for its data, future or
    not); an accelerated clock is capped at the wall clock either way.
    """
    now = wall_clock_ms()
    if speed is None:
        if start_ms is None and duration_ms is not None:
            start_ms = now - duration_ms
        return SimClock(start_ms, speed=None)
    accelerated = speed > 1
    if start_ms is None and accelerated:
        if duration_ms is not None:
            start_ms = now - round(duration_ms * (1 - 1 / speed))
        else:
            start_ms = now - UNBOUNDED_BACKFILL_MS
    return SimClock(start_ms, speed=speed, cap_at_wall=accelerated)
