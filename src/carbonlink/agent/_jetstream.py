"""The agent's JetStream uplink: telemetry batches from the outbox to the replicated
stream, each with its message id, so that a batch sent again lands once.

A batch leaves the outbox only once the stream has acknowledged it, and JetStream
acknowledges a publish only once a quorum of the stream's replicas holds it. A publish
that fails or times out (a node gone, a leader election) is sent again with the same
message id until it is acknowledged: if the first copy did land, JetStream's duplicate
window drops the second and says so in the acknowledgement (``duplicate``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from carbonlink import wire
from carbonlink.config import JetStreamConfig
from carbonlink.jetstream import (
    MSG_ID_HEADER,
    PUBLISH_ERRORS,
    MessageId,
    connect,
    ensure_stream,
    replicas_for,
    telemetry_subject,
)
from carbonlink.mqtt.reconnect import Backoff

log = logging.getLogger(__name__)

EPOCH_KEY: Final = "jetstream_epoch"

Send = Callable[[wire.TelemetryBatch, bytes], Awaitable[None]]


def new_epoch() -> str:
    """A random id for a new outbox (see carbonlink.jetstream.MessageId)."""
    return secrets.token_hex(6)


class JetStreamUplink:
    """Publishes one agent's telemetry batches to the stream; counts what the stream
    recognised as repeats."""

    def __init__(self, config: JetStreamConfig, plant: str, agent: str, epoch: str) -> None:
        self._config = config
        self._plant = plant
        self._agent = agent
        self._epoch = epoch
        self._subject = telemetry_subject(config, plant)
        self.duplicates = 0  # batches sent again that the stream had already

    async def run(self, forward: Callable[[Send], Awaitable[None]]) -> None:
        """Connect, create or check the stream, then forward until cancelled."""
        client = await connect(self._config, f"agent {self._plant}")
        try:
            js = client.jetstream(timeout=self._config.publish_timeout_s)
            await ensure_stream(js, self._config, replicas_for(self._config, client))
            log.info("agent %s: forwarding to JetStream stream %s", self._plant,
                     self._config.stream)  # fmt: skip

            async def send(batch: wire.TelemetryBatch, payload: bytes) -> None:
                headers = {MSG_ID_HEADER: str(MessageId(self._agent, self._epoch, batch.seq))}
                backoff = Backoff()
                while True:
                    try:
                        ack = await js.publish(self._subject, payload, headers=headers,
                                               timeout=self._config.publish_timeout_s)  # fmt: skip
                    except PUBLISH_ERRORS as exc:
                        delay = backoff.next()
                        log.warning("agent %s: batch %d not acknowledged by JetStream (%s: %s); "
                                    "sending it again in %.1fs", self._plant, batch.seq,
                                    type(exc).__name__, exc, delay)  # fmt: skip
                        await asyncio.sleep(delay)
                        continue
                    if ack.duplicate:
                        self.duplicates += 1
                    return

            await forward(send)
        finally:
            await client.close()
