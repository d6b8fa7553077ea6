"""The factory-side agent: meters -> validation -> batched telemetry to the platform."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import aiomqtt

from carbonlink import wire
from carbonlink._clock import wall_clock_ms
from carbonlink._exceptions import RejectedReading
from carbonlink._mqtt import BrokerAddress, make_client, next_backoff
from carbonlink.agent._validation import MeterValidator
from carbonlink.config import AgentConfig, PlantConfig

log = logging.getLogger(__name__)

STATUS_INTERVAL_S: Final = 10.0


@dataclass(slots=True)
class AgentCounters:
    received: int = 0
    accepted: int = 0
    forwarded: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "forwarded": self.forwarded,
            "rejected": dict(self.rejected),
        }


class Agent:
    """One plant's agent. ``run()`` serves until cancelled, reconnecting as needed."""

    def __init__(
        self,
        plant: PlantConfig,
        broker: BrokerAddress,
        config: AgentConfig | None = None,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.plant = plant
        self.config = config or AgentConfig()
        self.counters = AgentCounters()
        self._broker = broker
        self._now_ms = now_ms
        self._validator = MeterValidator(plant, self.config, now_ms)
        self._outbox: asyncio.Queue[wire.Reading] = asyncio.Queue(self.config.queue_max_readings)
        self._seq = 0
        self._unsent: wire.TelemetryBatch | None = None
        self._rejections: asyncio.Queue[bytes] = asyncio.Queue(1_000)
        self.latest: dict[str, wire.Reading] = {}
        self.connected = asyncio.Event()

    @property
    def identity(self) -> str:
        return f"agent-{self.plant.id}"

    async def run(self) -> None:
        backoff = 0.0
        while True:
            will = aiomqtt.Will(
                wire.status_topic(self.plant.id), self._status("offline"), qos=1, retain=True
            )
            try:
                async with make_client(
                    self._broker, self.identity, clean_session=False, will=will
                ) as client:
                    backoff = 0.0
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                backoff = next_backoff(backoff)
                log.warning(
                    "agent %s: broker lost (%s); retry in %.1fs", self.plant.id, exc, backoff
                )
                await asyncio.sleep(backoff)

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.publish(
            wire.status_topic(self.plant.id), self._status("online"), qos=1, retain=True
        )
        await client.subscribe(wire.meter_subscription(self.plant.id), qos=1)
        self.connected.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._forward(client))
            tasks.create_task(self._report_rejections(client))
            tasks.create_task(self._report_status(client))
            async for message in client.messages:
                await self.handle(str(message.topic), _payload_bytes(message.payload))

    async def handle(self, topic: str, payload: bytes) -> None:
        """Validate one meter message; queue the good readings, dead-letter the rest."""
        self.counters.received += 1
        try:
            verdict = self._validator.check(wire.decode_meter_message(topic, payload))
        except RejectedReading as exc:
            self._reject(topic, exc, payload)
            return
        for error in verdict.rejected:
            self._reject(topic, error, payload)
        for reading in verdict.accepted:
            self.counters.accepted += 1
            self.latest[reading.meter] = reading
            await self._outbox.put(reading)  # bounded: a slow uplink slows intake, never drops

    def _reject(self, topic: str, error: RejectedReading, payload: bytes) -> None:
        self.counters.rejected[error.reason] += 1
        count = self.counters.rejected[error.reason]
        if count <= 10 or count % 1000 == 0:
            log.warning(
                "agent %s rejected (%s, #%d): %s", self.plant.id, error.reason, count, error
            )
        with contextlib.suppress(asyncio.QueueFull):  # dead letters are best effort; counts are not
            self._rejections.put_nowait(wire.encode_rejection("agent", topic, error, payload))

    async def _forward(self, client: aiomqtt.Client) -> None:
        topic = wire.telemetry_topic(self.plant.id)
        while True:
            if self._unsent is None:
                readings = await self._next_batch()
                self._seq += 1
                self._unsent = wire.TelemetryBatch(
                    self.plant.id, self.identity, self._seq, self._now_ms(), readings
                )
            # Kept until the publish returns, so a batch cut off by a disconnect is sent
            # again (same seq) after the reconnect instead of being lost.
            await client.publish(topic, wire.encode_telemetry(self._unsent), qos=1)
            self.counters.forwarded += len(self._unsent.readings)
            self._unsent = None

    async def _next_batch(self) -> tuple[wire.Reading, ...]:
        loop = asyncio.get_running_loop()
        batch = [await self._outbox.get()]
        deadline = loop.time() + self.config.batch_max_delay_s
        while len(batch) < self.config.batch_max_readings:
            if not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
                continue
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._outbox.get(), timeout))
            except TimeoutError:
                break
        return tuple(batch)

    async def _report_rejections(self, client: aiomqtt.Client) -> None:
        topic = wire.deadletter_topic(self.plant.id)
        while True:
            await client.publish(topic, await self._rejections.get(), qos=1)

    async def _report_status(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            await client.publish(
                wire.status_topic(self.plant.id), self._status("online"), qos=1, retain=True
            )

    def _status(self, state: str) -> bytes:
        body = {"v": wire.WIRE_VERSION, "state": state, "agent": self.identity}
        if state == "online":
            body["counters"] = self.counters.as_dict()
        return json.dumps(body, separators=(",", ":")).encode()


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()
