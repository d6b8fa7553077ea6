"""The one loop that keeps a service connected: run its session, and when the broker is
lost, wait a growing, jittered delay and run it again.

Jitter matters: five simulators (or agents) that lose the broker together would otherwise
retry in the same millisecond, every time. Each delay is drawn uniformly between the
minimum and a ceiling that doubles with each failure ("full jitter"), from a generator the
caller may seed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

from carbonlink.mqtt.client import is_connection_loss

# Start fast, so a broker restart costs little; cap, so a long outage does not hammer the
# broker when it comes back.
RECONNECT_MIN_S: Final = 0.2
RECONNECT_MAX_S: Final = 10.0


class Backoff:
    """Delays before each reconnect: uniform in [minimum, ceiling], the ceiling doubling
    with each failure up to ``maximum``; :meth:`reset` once connected again."""

    def __init__(
        self,
        minimum: float = RECONNECT_MIN_S,
        maximum: float = RECONNECT_MAX_S,
        rng: random.Random | None = None,
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._ceiling = minimum

    def next(self) -> float:
        delay = self._rng.uniform(self.minimum, self._ceiling)
        self._ceiling = min(self.maximum, self._ceiling * 2)
        return delay

    def reset(self) -> None:
        self._ceiling = self.minimum


Session = Callable[[Callable[[], None]], Awaitable[object]]
"""A service's connection: it calls its argument once connected (which resets the backoff),
returns when the service is done, and raises when the connection is lost."""


async def keep_connected(
    session: Session,
    *,
    what: str,
    log: logging.Logger,
    lost: Callable[[], None] | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Run ``session`` until it returns, again after every lost connection. ``lost`` runs
    once per lost connection (to clear a "connected" flag, say); any other error is the
    service's own and propagates."""
    backoff = backoff or Backoff()
    while True:
        try:
            await session(backoff.reset)
            return
        except Exception as exc:
            if not is_connection_loss(exc):
                raise
            if lost is not None:
                lost()
            delay = backoff.next()
            log.warning("%s: broker lost (%s); retry in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
