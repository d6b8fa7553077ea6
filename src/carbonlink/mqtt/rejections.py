"""Refused input, handled the same way everywhere: counted by reason, logged without
flooding, and dead-lettered with the start of the payload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Final, Protocol

from carbonlink import wire
from carbonlink.errors import RejectedReading

DEADLETTER_QUEUE_MAX: Final = 1_000
# Log the first few of each reason, then one in this many: a stream of bad input must not
# drown the log, but the count stays exact.
LOG_FIRST: Final = 10
LOG_EVERY: Final = 1_000


class Publisher(Protocol):
    """What sending a dead letter needs: aiomqtt's client and the platform's both fit."""

    async def publish(self, topic: str, payload: bytes, qos: int = ...) -> object: ...


class Rejections:
    def __init__(self, stage: str, log: logging.Logger, counts: Counter[str]) -> None:
        self.counts = counts
        self._stage = stage
        self._log = log
        self._deadletters: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(DEADLETTER_QUEUE_MAX)

    def record(
        self,
        plant: str,
        topic: str,
        error: RejectedReading,
        payload: bytes,
        *,
        deadletter: str | None = None,
    ) -> None:
        """Count, log and dead-letter one refusal: to the plant's dead-letter topic, or to
        ``deadletter`` when the refused message names no plant we know."""
        self.counts[error.reason] += 1
        count = self.counts[error.reason]
        if count <= LOG_FIRST or count % LOG_EVERY == 0:
            self._log.warning(
                "%s rejected (%s, #%d) on %s: %s", self._stage, error.reason, count, topic, error
            )
        body = wire.encode_rejection(self._stage, topic, error, payload)
        with contextlib.suppress(asyncio.QueueFull):  # dead letters best effort; counts exact
            self._deadletters.put_nowait((deadletter or wire.deadletter_topic(plant), body))

    async def publish(self, client: Publisher) -> None:
        """Send queued dead letters while connected (runs beside the service loop)."""
        while True:
            topic, body = await self._deadletters.get()
            await client.publish(topic, body, qos=1)
