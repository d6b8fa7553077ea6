"""The one reconnect loop: growing, jittered delays; reset once connected; other errors
propagate."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import pytest

from carbonlink.errors import BrokerConnectionError
from carbonlink.mqtt.reconnect import Backoff, keep_connected


def test_delays_grow_to_the_cap_and_are_jittered() -> None:
    backoff = Backoff(0.2, 10.0, random.Random(7))
    delays = [backoff.next() for _ in range(12)]
    ceilings = [min(10.0, 0.2 * 2**n) for n in range(12)]
    assert all(0.2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays) > 5  # the ceiling is reached
    assert len({round(d, 6) for d in delays}) == len(delays)  # no two alike
    backoff.reset()
    assert backoff.next() == pytest.approx(0.2)


def test_two_services_that_lose_the_broker_together_retry_apart() -> None:
    first, second = Backoff(rng=random.Random(1)), Backoff(rng=random.Random(2))
    for _ in range(3):
        first.next(), second.next()
    assert abs(first.next() - second.next()) > 0.01


def test_a_lost_connection_is_retried_and_other_errors_propagate() -> None:
    calls: list[str] = []
    lost: list[int] = []

    async def session(connected: Callable[[], None]) -> None:
        calls.append("try")
        if len(calls) < 3:
            raise BrokerConnectionError("gone")
        connected()

    backoff = Backoff(0.001, 0.002, random.Random(0))
    log = logging.getLogger("test")
    asyncio.run(keep_connected(session, what="t", log=log, lost=lambda: lost.append(1),
                               backoff=backoff))  # fmt: skip
    assert calls == ["try"] * 3
    assert lost == [1, 1]

    async def broken(connected: Callable[[], None]) -> None:
        raise ValueError("a bug, not the broker")

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(keep_connected(broken, what="t", log=log, backoff=backoff))
