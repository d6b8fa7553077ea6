"""The platform service: telemetry from every agent -> emissions -> storage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import aiomqtt

from carbonlink import wire
from carbonlink._clock import wall_clock_ms
from carbonlink._exceptions import RejectedReading, StoreError
from carbonlink._mqtt import BrokerAddress, make_client, next_backoff
from carbonlink.config import PlatformConfig
from carbonlink.platform._ingest import Ingestor, IngestResult
from carbonlink.platform.storage import Store, StoredReading

log = logging.getLogger(__name__)

STORE_RETRY_MIN_S: Final = 0.5
STORE_RETRY_MAX_S: Final = 15.0


@dataclass(slots=True)
class PlatformCounters:
    messages: int = 0
    received: int = 0
    stored: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    store_failures: int = 0
    sequence_gaps: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)
    newest_stored_ms: dict[str, int] = field(default_factory=dict)  # per plant
    lag_s: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "received": self.received,
            "stored": self.stored,
            "rejected": dict(self.rejected),
            "store_failures": self.store_failures,
            "sequence_gaps": self.sequence_gaps,
            "lag_s": self.lag_s,
        }


class Platform:
    """Subscribes to all telemetry, computes emissions, writes batches to the store.

    With ``shared_group`` set it subscribes through an MQTT 5 shared subscription, so
    several workers in the same group split the agents' traffic.
    """

    def __init__(
        self,
        ingestor: Ingestor,
        store: Store,
        broker: BrokerAddress,
        config: PlatformConfig | None = None,
        *,
        shared_group: str | None = None,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.config = config or PlatformConfig()
        self.counters = PlatformCounters()
        self.store = store
        self._ingestor = ingestor
        self._broker = broker
        self._shared_group = shared_group
        self._now_ms = now_ms
        self._pending: asyncio.Queue[StoredReading] = asyncio.Queue(self.config.queue_max_readings)
        self._deadletters: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(1_000)
        # One thread owns every store call: backends need not be thread-safe for writes,
        # and a blocking write never stalls the MQTT loop.
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="carbonlink-store")
        self.connected = asyncio.Event()

    @property
    def client_id(self) -> str:
        return self.config.client_id

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._write_loop())
            tasks.create_task(self._mqtt_loop())

    async def _mqtt_loop(self) -> None:
        subscription = wire.TELEMETRY_SUBSCRIPTION
        if self._shared_group:
            subscription = f"$share/{self._shared_group}/{subscription}"
        backoff = 0.0
        while True:
            try:
                async with make_client(
                    self._broker,
                    self.client_id,
                    clean_session=False,
                    mqtt5=self._shared_group is not None,
                ) as client:
                    await client.subscribe(subscription, qos=1)
                    self.connected.set()
                    backoff = 0.0
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._publish_deadletters(client))
                        async for message in client.messages:
                            payload = message.payload
                            data = payload if isinstance(payload, bytes) else str(payload).encode()
                            await self.handle(str(message.topic), data)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                backoff = next_backoff(backoff)
                log.warning("platform: broker lost (%s); retry in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)

    async def handle(self, topic: str, payload: bytes) -> IngestResult:
        result = self._ingestor.ingest(topic, payload)
        self.counters.messages += 1
        self.counters.received += len(result.stored) + len(result.rejected)
        self._track_sequence(result)
        for error in result.rejected:
            self._reject(result.plant, topic, error, payload)
        for reading in result.stored:
            await self._pending.put(reading)  # bounded: a slow store slows intake
        return result

    def _track_sequence(self, result: IngestResult) -> None:
        if result.agent is None or result.seq is None:
            return
        last = self.counters.last_seq.get(result.agent)
        if last is not None and result.seq > last + 1:
            self.counters.sequence_gaps += result.seq - last - 1
        if last is None or result.seq > last:
            self.counters.last_seq[result.agent] = result.seq

    def _reject(self, plant: str, topic: str, error: RejectedReading, payload: bytes) -> None:
        self.counters.rejected[error.reason] += 1
        count = self.counters.rejected[error.reason]
        if count <= 10 or count % 1000 == 0:
            log.warning("platform rejected (%s, #%d) on %s: %s", error.reason, count, topic, error)
        body = wire.encode_rejection("platform", topic, error, payload)
        with contextlib.suppress(asyncio.QueueFull):  # dead letters best effort; counts exact
            self._deadletters.put_nowait((wire.deadletter_topic(plant), body))

    async def _publish_deadletters(self, client: aiomqtt.Client) -> None:
        while True:
            topic, body = await self._deadletters.get()
            await client.publish(topic, body, qos=1)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._pending.get()]
            deadline = loop.time() + self.config.write_max_delay_s
            while len(batch) < self.config.write_batch_max:
                if not self._pending.empty():
                    batch.append(self._pending.get_nowait())
                    continue
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._pending.get(), timeout))
                except TimeoutError:
                    break
            await self._write_with_retry(batch)

    async def _write_with_retry(self, batch: list[StoredReading]) -> None:
        loop = asyncio.get_running_loop()
        delay = STORE_RETRY_MIN_S
        while True:
            try:
                await loop.run_in_executor(self._store_thread, self.store.write, batch)
            except StoreError as exc:
                self.counters.store_failures += 1
                if not exc.retryable:
                    log.error("platform: store refused %d readings: %s", len(batch), exc)
                    self.counters.rejected["store_refused"] += len(batch)
                    return
                log.warning("platform: store unavailable (%s); retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(STORE_RETRY_MAX_S, delay * 2)
            else:
                self._count_stored(batch)
                return

    def _count_stored(self, batch: list[StoredReading]) -> None:
        self.counters.stored += len(batch)
        newest = self.counters.newest_stored_ms
        for reading in batch:
            if reading.ts_ms > newest.get(reading.plant, 0):
                newest[reading.plant] = reading.ts_ms
        self.counters.lag_s = max(0.0, (self._now_ms() - max(newest.values())) / 1000)

    def close(self) -> None:
        self._store_thread.shutdown(wait=True)
