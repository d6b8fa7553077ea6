"""The platform service: telemetry from every agent -> emissions -> storage.

Delivery: the platform holds a persistent MQTT session and acknowledges each telemetry
message only once its readings are in the store or in the spill file. If the platform
dies before that, the broker delivers the message again; stores key readings by
(plant, meter, ts), so the repeat overwrites itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from carbonlink import wire
from carbonlink._clock import wall_clock_ms
from carbonlink._exceptions import RejectedReading, StoreError
from carbonlink._mqtt import BrokerAddress, is_connection_loss, next_backoff
from carbonlink._mqtt_consumer import ConsumerClient
from carbonlink._rejections import Rejections
from carbonlink.config import MqttVersion, PlatformConfig
from carbonlink.platform._ingest import Ingestor, IngestResult
from carbonlink.platform._spill import SpillFile
from carbonlink.platform.storage import Store, StoredBatch

log = logging.getLogger(__name__)

STORE_RETRY_MIN_S: Final = 0.5
STORE_RETRY_MAX_S: Final = 15.0


@dataclass(slots=True)
class PlatformCounters:
    messages: int = 0
    received: int = 0
    stored: int = 0
    spilled: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_by_plant: Counter[str] = field(default_factory=Counter)
    store_failures: int = 0
    sequence_gaps: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)
    newest_stored_ms: dict[str, int] = field(default_factory=dict)  # per plant
    lag_s: float | None = None
    # From each agent's retained status message: "online"/"offline" and its own refusals
    # by reason (readings).
    agent_state: dict[str, str] = field(default_factory=dict)
    agent_rejected: dict[str, Counter[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """``rejected`` (by reason), ``rejected_by_plant`` and ``rejected_at`` all count
        one thing: readings refused anywhere on the way, by a plant's agent or by the
        platform, so their totals agree."""
        by_reason = Counter(self.rejected)
        for counts in self.agent_rejected.values():
            by_reason.update(counts)
        agents = sum(c.total() for c in self.agent_rejected.values())
        return {
            "messages": self.messages,
            "received": self.received,
            "stored": self.stored,
            "spilled": self.spilled,
            "rejected": dict(by_reason),
            "rejected_by_plant": {
                plant: self.rejected_by_plant.get(plant, 0)
                + self.agent_rejected.get(plant, Counter()).total()
                for plant in sorted(set(self.rejected_by_plant) | set(self.agent_rejected))
            },
            "rejected_at": {"agent": agents, "platform": self.rejected.total()},
            "agents": dict(self.agent_state),
            "store_failures": self.store_failures,
            "sequence_gaps": self.sequence_gaps,
            "lag_s": self.lag_s,
        }


@dataclass(slots=True)
class _Received:
    """One telemetry message, held until its readings are safe, then acknowledged."""

    batch: StoredBatch
    client: ConsumerClient
    packet_id: int  # 0 for QoS 0: nothing to acknowledge
    plant: str
    newest_ts_ms: int


class Platform:
    """Subscribes to all telemetry, computes emissions, writes batches to the store.

    With ``shared_group`` set it subscribes through an MQTT 5 shared subscription, so
    several workers in the same group (each with its own ``client_id``) split the load.

    Messages are handled as the socket delivers them (decoded, checked, emissions
    computed) and wait in an intake queue; one writer takes whatever has gathered, up to
    ``write_batch_max`` readings, writes it on the store thread and then acknowledges
    those messages. Past ``queue_max_readings`` or ``queue_max_messages`` unacknowledged,
    the platform stops reading the socket until the writer has caught up to half.
    """

    def __init__(
        self,
        ingestor: Ingestor,
        store: Store,
        broker: BrokerAddress,
        config: PlatformConfig | None = None,
        *,
        spill_path: Path,
        shared_group: str | None = None,
        client_id: str | None = None,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.config = config or PlatformConfig()
        self.counters = PlatformCounters()
        self.store = store
        self.client_id = client_id or self.config.client_id
        self.connected = asyncio.Event()
        self._ingestor = ingestor
        self._broker = broker
        self._shared_group = shared_group
        self._now_ms = now_ms
        self._spill = SpillFile(spill_path)
        self._intake: deque[_Received] = deque()
        self._intake_readings = 0
        self._intake_ready = asyncio.Event()
        self._max_readings = self.config.queue_max_readings
        self._max_messages = self.config.queue_max_messages
        self._client: ConsumerClient | None = None
        self._rejections = Rejections("platform", log, self.counters.rejected)
        self._spill_waiting = asyncio.Event()
        # Store calls run on these threads, so a blocking write never stalls the MQTT
        # loop; up to write_concurrency batches are written at once (every backend's
        # write_batch is safe to call from several threads).
        self._store_thread = ThreadPoolExecutor(
            self.config.write_concurrency, thread_name_prefix="carbonlink-store"
        )

    async def run(self) -> None:
        if len(self._spill):
            self._spill_waiting.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._write_loop())
            tasks.create_task(self._drain_spill())
            tasks.create_task(self._mqtt_loop())

    async def _mqtt_loop(self) -> None:
        subscription = wire.TELEMETRY_SUBSCRIPTION
        if self._shared_group:
            subscription = f"$share/{self._shared_group}/{subscription}"
        backoff = 0.0
        while True:
            client = ConsumerClient(
                self._broker,
                self.client_id,
                self._receive,
                mqtt5=self.config.mqtt_version is MqttVersion.V5,
                clean_start=False,
                receive_maximum=self.config.mqtt_receive_maximum,
            )
            try:
                async with client:
                    self._client = client
                    self._hold_back()  # still full from before the reconnect?
                    await client.subscribe(subscription, qos=1)
                    # Not shared: every worker wants every agent's status.
                    await client.subscribe(wire.STATUS_SUBSCRIPTION, qos=1)
                    self.connected.set()
                    backoff = 0.0
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._rejections.publish(client))
                        await client.wait_closed()
            except Exception as exc:
                if not is_connection_loss(exc):
                    raise
                self.connected.clear()
                backoff = next_backoff(backoff)
                log.warning("platform: broker lost (%s); retry in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)

    def _receive(
        self, client: ConsumerClient, topic: str, payload: bytes, qos: int, packet_id: int,
        retained: bool,
    ) -> None:  # fmt: skip
        if topic.endswith("/status"):
            self._agent_status(topic, payload)
            client.ack((packet_id,))
            return
        result = self.handle(topic, payload)
        if not len(result.batch):  # every reading refused: nothing to make safe
            client.ack((packet_id,))
            return
        newest = result.newest_ts_ms or 0
        self._intake.append(_Received(result.batch, client, packet_id, result.plant, newest))
        self._intake_readings += len(result.batch)
        self._intake_ready.set()
        self._hold_back()

    def _hold_back(self) -> None:
        """Stop reading the socket while the intake is full; the broker keeps the rest."""
        if (
            self._intake_readings >= self._max_readings or len(self._intake) >= self._max_messages
        ) and self._client is not None:
            self._client.pause()

    def _let_in(self) -> None:
        if (
            self._client is not None
            and self._client.paused
            and self._intake_readings < self._max_readings // 2
            and len(self._intake) < self._max_messages // 2
        ):
            self._client.resume()

    def handle(self, topic: str, payload: bytes) -> IngestResult:
        """Check and convert one telemetry message; count and dead-letter what is refused."""
        result = self._ingestor.ingest(topic, payload)
        self.counters.messages += 1
        self.counters.received += len(result.batch) + len(result.rejected)
        self._track_sequence(result)
        self.counters.rejected_by_plant[result.plant] += len(result.rejected)
        for error in result.rejected:
            self._rejections.record(result.plant, topic, error, payload)
        return result

    def agent_states(self) -> dict[str, str]:
        """Each plant's agent as last reported: online, offline (its last will), or absent."""
        return dict(self.counters.agent_state)

    def _agent_status(self, topic: str, payload: bytes) -> None:
        try:
            plant = wire.parse_topic(topic)[0]
            status = json.loads(payload)
            state = status["state"]
        except (RejectedReading, ValueError, KeyError, TypeError):
            log.warning("platform: unreadable agent status on %s", topic)
            return
        if not isinstance(state, str):
            return
        self.counters.agent_state[plant] = state
        counters = status.get("counters")
        if isinstance(counters, dict) and isinstance(counters.get("rejected"), dict):
            self.counters.agent_rejected[plant] = Counter(
                {
                    str(reason): n
                    for reason, n in counters["rejected"].items()
                    if isinstance(n, int) and not isinstance(n, bool)
                }
            )

    def _track_sequence(self, result: IngestResult) -> None:
        if result.agent is None or result.seq is None:
            return
        last = self.counters.last_seq.get(result.agent)
        if last is not None and result.seq > last + 1:
            self.counters.sequence_gaps += result.seq - last - 1
        if last is None or result.seq > last:
            self.counters.last_seq[result.agent] = result.seq

    async def _write_loop(self) -> None:
        """Batches form by themselves: whatever arrived while the last write ran.

        Up to ``write_concurrency`` batches are in flight at once, so the store is never
        idle while the next batch's line protocol is built. A batch is taken only once a
        slot is free, which makes batches as large as the backlog allows.
        """
        slots = asyncio.Semaphore(self.config.write_concurrency)
        async with asyncio.TaskGroup() as writes:
            while True:
                await self._intake_ready.wait()
                await slots.acquire()
                taken = self._take()
                if not taken:
                    slots.release()
                    continue
                writes.create_task(self._write_taken(taken, slots))

    def _take(self) -> list[_Received]:
        limit = self.config.write_batch_max
        taken: list[_Received] = []
        readings = 0
        while self._intake and (not taken or readings + len(self._intake[0].batch) <= limit):
            item = self._intake.popleft()
            taken.append(item)
            readings += len(item.batch)
        if not self._intake:
            self._intake_ready.clear()
        return taken

    async def _write_taken(self, taken: list[_Received], slots: asyncio.Semaphore) -> None:
        try:
            newest: dict[str, int] = {}
            for item in taken:
                newest[item.plant] = max(newest.get(item.plant, 0), item.newest_ts_ms)
            batch = StoredBatch.concat([item.batch for item in taken])
            await self._store_or_spill(batch, newest)
            self._intake_readings -= len(batch)
            self._acknowledge(taken)
            self._let_in()
        finally:
            slots.release()

    @staticmethod
    def _acknowledge(taken: list[_Received]) -> None:
        by_client: dict[ConsumerClient, list[int]] = {}
        for item in taken:
            by_client.setdefault(item.client, []).append(item.packet_id)
        for client, packet_ids in by_client.items():
            client.ack(packet_ids)  # dropped if that connection died: the broker resends

    async def _store_or_spill(self, batch: StoredBatch, newest: dict[str, int]) -> None:
        # While older readings wait in the spill, new ones queue behind them there.
        if not self._spill_waiting.is_set():
            try:
                await self._write(batch, newest)
                return
            except StoreError as exc:
                if not exc.retryable:
                    self._refused(len(batch), exc)
                    return
                log.warning("platform: store unavailable (%s); spilling to disk", exc)
        await asyncio.get_running_loop().run_in_executor(self._store_thread, self._spill.add, batch)
        self.counters.spilled += len(batch)
        self._spill_waiting.set()

    async def _drain_spill(self) -> None:
        delay = STORE_RETRY_MIN_S
        while True:
            await self._spill_waiting.wait()
            loop = asyncio.get_running_loop()
            last_id, batch = await loop.run_in_executor(
                self._store_thread, self._spill.oldest, self.config.write_batch_max
            )
            if not len(batch):
                self._spill_waiting.clear()
                delay = STORE_RETRY_MIN_S
                continue
            try:
                await self._write(batch, _newest_by_plant(batch))
            except StoreError as exc:
                if not exc.retryable:
                    self._refused(len(batch), exc)
                else:
                    log.warning("platform: store still down (%s); retry in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(STORE_RETRY_MAX_S, delay * 2)
                    continue
            await loop.run_in_executor(self._store_thread, self._spill.remove_through, last_id)
            self.counters.spilled -= len(batch)
            delay = STORE_RETRY_MIN_S

    async def _write(self, batch: StoredBatch, newest: dict[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._store_thread, self.store.write_batch, batch)
        except StoreError:
            self.counters.store_failures += 1
            raise
        self._count_stored(len(batch), newest)

    def _refused(self, count: int, error: StoreError) -> None:
        log.error("platform: store refused %d readings: %s", count, error)
        self.counters.rejected["store_refused"] += count

    def _count_stored(self, count: int, newest_by_plant: dict[str, int]) -> None:
        self.counters.stored += count
        newest = self.counters.newest_stored_ms
        for plant, ts_ms in newest_by_plant.items():
            if ts_ms > newest.get(plant, 0):
                newest[plant] = ts_ms
        if newest:
            self.counters.lag_s = max(0.0, (self._now_ms() - max(newest.values())) / 1000)

    def close(self) -> None:
        self._store_thread.shutdown(wait=True)
        self._spill.close()


def _newest_by_plant(batch: StoredBatch) -> dict[str, int]:
    newest: dict[str, int] = {}
    for plant, ts_ms in zip(batch.plant, batch.ts_ms, strict=True):
        if ts_ms > newest.get(plant, 0):
            newest[plant] = ts_ms
    return newest
