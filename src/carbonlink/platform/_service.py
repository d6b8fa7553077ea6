"""The platform service: telemetry from every agent -> emissions -> storage.

Delivery: the platform holds a persistent MQTT session and acknowledges each telemetry
message only once its readings are in the store or in the spill file. If the platform
dies before that, the broker delivers the message again; the identity check before each
write (``_identity.py``) stores a repeated reading once.

Bad input never stops it (docs/reliability.md, "Bad input"):

- every refusal is counted by reason, logged (the first few of each reason, then one in a
  thousand) and dead-lettered with the start of its payload;
- an unexpected exception while handling one message is refused as ``internal_error``
  and the message acknowledged: it would fail again on every redelivery;
- a message that takes the whole process down is parked after a few redeliveries
  (``_poison.py``);
- a batch the store refuses for good is split until the readings it refuses are found,
  and only those are refused (``store_refused``);
- state is kept only for configured plants and their agents, so no stream of invented
  names can grow it;
- with ``audit_topics``, a second subscription to every carbonlink topic counts and
  dead-letters what is published where no service listens (``misaddressed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from carbonlink import wire
from carbonlink.config import JetStreamConfig, MqttVersion, PlatformConfig, Uplink
from carbonlink.core.clock import wall_clock_ms
from carbonlink.errors import RejectedReading, StoreError
from carbonlink.mqtt.client import BrokerAddress
from carbonlink.mqtt.consumer import ConsumerClient, Incoming
from carbonlink.mqtt.reconnect import keep_connected
from carbonlink.mqtt.rejections import Rejections
from carbonlink.platform._identity import IdentityIndex
from carbonlink.platform._ingest import Ingestor, IngestResult
from carbonlink.platform._jetstream import JetStreamAcks, JetStreamIntake, SequenceGaps
from carbonlink.platform._poison import POISON_ATTEMPTS, PoisonGuard, message_key
from carbonlink.platform._spill import SpillFile
from carbonlink.storage import Store, StoredBatch

log = logging.getLogger(__name__)

STORE_RETRY_MIN_S: Final = 0.5
STORE_RETRY_MAX_S: Final = 15.0
STORE_REFUSED: Final = "store_refused"
UNKNOWN: Final = "(unknown)"  # the one key under which refusals of unknown plants count
# A jump in an agent's sequence numbers beyond this is a restart with a new outbox (or a
# forged number), not that many lost batches.
MAX_SEQUENCE_GAP: Final = 100_000


@dataclass(slots=True)
class PlatformCounters:
    messages: int = 0
    received: int = 0
    stored: int = 0
    repeats: int = 0  # readings received again and stored once (redeliveries)
    redelivered: int = 0  # messages delivered again (MQTT DUP, JetStream's delivery count)
    spilled: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_by_plant: Counter[str] = field(default_factory=Counter)
    store_failures: int = 0
    sequence_gaps: int = 0
    sequence_resets: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)  # per configured agent
    newest_stored_ms: dict[str, int] = field(default_factory=dict)  # per configured plant
    lag_s: float | None = None
    # From each configured agent's retained status: "online"/"offline" and its own
    # refusals by reason (readings).
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
            "repeats": self.repeats,
            "redelivered": self.redelivered,
            "spilled": self.spilled,
            "rejected": dict(by_reason),
            "rejected_by_plant": {
                plant: self.rejected_by_plant.get(plant, 0)
                + self.agent_rejected.get(plant, Counter()).total()
                for plant in sorted(set(self.rejected_by_plant) | set(self.agent_rejected))
            },
            "rejected_at": {"agent": agents, "platform": self.rejected.total()},
            # The platform's own refusals by reason (``rejected`` adds the agents').
            "rejected_by_platform": dict(self.rejected),
            "agents": dict(self.agent_state),
            "store_failures": self.store_failures,
            "sequence_gaps": self.sequence_gaps,
            "sequence_resets": self.sequence_resets,
            "lag_s": self.lag_s,
        }


class _Acknowledger(Protocol):
    """Where a message came from: an MQTT connection (packet ids) or JetStream (tags)."""

    def ack(self, packet_ids: Iterable[int]) -> None: ...


@dataclass(slots=True)
class _Received:
    """One telemetry message, held until its readings are safe, then acknowledged."""

    batch: StoredBatch
    client: _Acknowledger
    packet_id: int  # 0 for QoS 0: nothing to acknowledge
    plant: str
    topic: str
    payload: bytes  # for the dead letters of readings refused at write time
    attempt_key: str | None  # set when the broker redelivered it: cleared once safe


class Platform:
    """Subscribes to all telemetry, computes emissions, writes batches to the store.

    With ``shared_group`` set it subscribes through an MQTT 5 shared subscription, so
    several workers in the same group (each with its own ``client_id``) split the load.

    Messages are handled as the socket delivers them (decoded, checked, emissions
    computed) and wait in an intake queue; one writer takes whatever has gathered, up to
    ``write_batch_max`` readings, checks their identity against the store, writes them
    on the store thread and then acknowledges those messages. Past
    ``queue_max_readings`` or ``queue_max_messages`` unacknowledged, the platform stops
    reading the socket until the writer has caught up to half.
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
        audit_topics: bool | None = None,
        now_ms: Callable[[], int] = wall_clock_ms,
        jetstream: JetStreamConfig | None = None,
    ) -> None:
        self.config = config or PlatformConfig()
        self._jetstream: JetStreamConfig | None = None
        if self.config.intake is Uplink.JETSTREAM:
            if jetstream is None or not jetstream.servers:
                raise ValueError("platform.intake is jetstream: pass the jetstream settings")
            self._jetstream = jetstream
        self.counters = PlatformCounters()
        self.store = store
        self.client_id = client_id or self.config.client_id
        self.connected = asyncio.Event()
        self._ingestor = ingestor
        self._broker = broker
        self._shared_group = shared_group
        # One auditor is enough: in a group, only the worker asked to audits.
        # With JetStream, workers are a group too: none audits unless asked to.
        self._audit = audit_topics if audit_topics is not None else (
            self.config.audit_topics and shared_group is None and self._jetstream is None
        )  # fmt: skip
        self._now_ms = now_ms
        self._spill = SpillFile(spill_path)
        self._poison = PoisonGuard(spill_path.with_name(spill_path.name + ".poison"))
        # Exact when other workers write to the same store (a group, or JetStream).
        self._identity = IdentityIndex(
            store,
            ingestor.longest_interval_ms,
            exact=shared_group is not None or self._jetstream is not None,
        )
        self._intake: deque[_Received] = deque()
        self._intake_readings = 0
        self._intake_ready = asyncio.Event()
        self._room_made = asyncio.Event()  # JetStream pulls again once this is set
        self._jetstream_intake: JetStreamIntake | None = None
        self._sequence = SequenceGaps(self._known_agent)
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
            if self._jetstream is not None:
                tasks.create_task(self._jetstream_loop())
            if self._audit:
                tasks.create_task(self._audit_loop())

    def health(self) -> dict[str, object]:
        """The counters, and whether the platform is subscribed now (the API's health)."""
        self._update_sequence()
        pulling = self._jetstream_intake is None or self._jetstream_intake.connected.is_set()
        return self.counters.as_dict() | {"connected": self.connected.is_set() and pulling}

    def agent_states(self) -> dict[str, str]:
        """Each plant's agent as last reported: online, offline (its last will), or absent."""
        return dict(self.counters.agent_state)

    # --- the broker --------------------------------------------------------------------

    async def _mqtt_loop(self) -> None:
        await keep_connected(
            self._telemetry_session, what="platform", log=log, lost=self.connected.clear
        )

    async def _telemetry_session(self, connected: Callable[[], None]) -> None:
        subscription = wire.TELEMETRY_SUBSCRIPTION
        if self._shared_group:
            subscription = wire.shared(self._shared_group, subscription)
        client = ConsumerClient(
            self._broker,
            self.client_id,
            self._receive,
            mqtt5=self.config.mqtt_version is MqttVersion.V5,
            clean_start=False,
            receive_maximum=self.config.mqtt_receive_maximum,
        )
        async with client:
            self._client = client
            self._hold_back()  # still full from before the reconnect?
            if self._jetstream is None:  # else telemetry comes from JetStream
                await client.subscribe(subscription, qos=1)
            # Not shared: every worker wants every agent's status.
            await client.subscribe(wire.STATUS_SUBSCRIPTION, qos=1)
            self.connected.set()
            connected()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._rejections.publish(client))
                await client.wait_closed()

    async def _audit_loop(self) -> None:
        await keep_connected(self._audit_session, what="platform (audit)", log=log)

    async def _audit_session(self, connected: Callable[[], None]) -> None:
        """A second connection that sees every carbonlink topic at QoS 0, to count what is
        published where nobody listens. It keeps no session: what it misses while away
        was not going to be stored anyway."""
        client = ConsumerClient(
            self._broker,
            f"{self.client_id}-audit",
            self._audit_message,
            mqtt5=self.config.mqtt_version is MqttVersion.V5,
            clean_start=True,
        )
        async with client:
            await client.subscribe(wire.EVERYTHING, qos=0)
            connected()
            await client.wait_closed()

    def _receive(self, client: ConsumerClient, message: Incoming) -> None:
        """Handle one message from the socket. Never raises (see the module docstring)."""
        key = None
        try:
            if message.dup and message.qos:
                self.counters.redelivered += 1
                key = message_key(message.topic, message.payload)
                # The first delivery carries no DUP flag: this is delivery attempt + 1.
                if self._poison.attempt(key) + 1 >= POISON_ATTEMPTS:
                    self._park(key, message.topic, message.payload)
                    client.ack((message.packet_id,))
                    return
            if message.topic.endswith("/status"):
                self._agent_status(message.topic, message.payload)
                self._settled(client, message.packet_id, key)
                return
            result = self.handle(message.topic, message.payload)
            if not len(result.batch):  # every reading refused: nothing to make safe
                self._settled(client, message.packet_id, key)
                return
            self._intake.append(
                _Received(result.batch, client, message.packet_id, result.plant,
                          message.topic, message.payload, key)
            )  # fmt: skip
            self._intake_readings += len(result.batch)
            self._intake_ready.set()
            self._hold_back()
        except Exception as exc:
            self._internal_error(message.topic, message.payload, exc)
            client.ack((message.packet_id,))

    # --- JetStream ---------------------------------------------------------------------

    async def _jetstream_loop(self) -> None:
        assert self._jetstream is not None
        self._jetstream_intake = JetStreamIntake(
            self._jetstream, self.client_id, self._receive_jetstream, self._room,
            self._room_made, self._sequence,
        )  # fmt: skip
        await self._jetstream_intake.run()

    def _known_agent(self, agent: str) -> bool:
        """Whether ``agent`` is a configured plant's agent (only those are tracked)."""
        plant = agent.removeprefix(wire.agent_id(""))
        return self._ingestor.plant(plant) is not None and wire.agent_id(plant) == agent

    def _room(self) -> int:
        """Messages the intake has room for, by the readings per message seen so far."""
        counted = self.counters
        per_message = (
            max(1, counted.received // counted.messages)
            if counted.messages
            else wire.MAX_TELEMETRY_READINGS  # nothing seen yet: assume the largest
        )
        readings = (self._max_readings // 2 - self._intake_readings) // per_message
        return min(readings, self._max_messages // 2 - len(self._intake))

    def _receive_jetstream(
        self, acks: JetStreamAcks, tag: int, plant: str | None, payload: bytes, delivered: int
    ) -> None:
        """Handle one message pulled from JetStream. Never raises (see the module
        docstring); refused and poison messages are terminated, never redelivered."""
        assert self._jetstream is not None
        topic = wire.telemetry_topic(plant) if plant is not None else wire.EVERYTHING
        try:
            self.counters.redelivered += delivered > 1
            if delivered >= min(POISON_ATTEMPTS, self._jetstream.max_deliver):
                self._park(message_key(topic, payload), topic, payload)
                acks.term(tag)
                return
            result = self.handle(topic, payload)
            if not len(result.batch):  # every reading refused, each dead-lettered
                acks.term(tag)
                return
            self._intake.append(
                _Received(result.batch, acks, tag, result.plant, topic, payload, None)
            )
            self._intake_readings += len(result.batch)
            self._intake_ready.set()
        except Exception as exc:
            self._internal_error(topic, payload, exc)
            acks.term(tag)

    def _update_sequence(self) -> None:
        if self._jetstream is not None:
            self.counters.sequence_gaps = self._sequence.gaps
            self.counters.sequence_resets = self._sequence.resets

    def _settled(self, client: ConsumerClient, packet_id: int, key: str | None) -> None:
        client.ack((packet_id,))
        if key is not None:
            self._poison.succeeded(key)

    def _park(self, key: str, topic: str, payload: bytes) -> None:
        self._poison.park(key, topic, payload)
        error = RejectedReading(
            wire.Reason.POISON,
            f"delivered {POISON_ATTEMPTS} times without being handled to the end; parked",
        )
        self._record(self._plant_of(topic), topic, error, payload)

    def _internal_error(self, topic: str, payload: bytes, exc: Exception) -> None:
        log.error("platform: failed on a message to %s", wire.shown(topic), exc_info=exc)
        detail = f"{type(exc).__name__}: {wire.shown(str(exc))}"
        plant = self._plant_of(topic)
        self.counters.rejected_by_plant[plant] += 1
        self._record(plant, topic, RejectedReading(wire.Reason.INTERNAL_ERROR, detail),
                                payload)  # fmt: skip

    def _record(self, plant: str, topic: str, error: RejectedReading, payload: bytes) -> None:
        """Count, log and dead-letter a refusal; one of no configured plant goes to the
        platform's own dead-letter topic."""
        deadletter = wire.PLATFORM_DEADLETTER if plant == UNKNOWN else None
        self._rejections.record(plant, topic, error, payload, deadletter=deadletter)

    def _plant_of(self, topic: str) -> str:
        """The configured plant a topic names, or ``UNKNOWN``."""
        try:
            plant = wire.address_of(topic).plant
        except RejectedReading:
            return UNKNOWN
        return plant if self._ingestor.plant(plant) is not None else UNKNOWN

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

    # --- what arrives ------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> IngestResult:
        """Check and convert one telemetry message; count and dead-letter what is refused."""
        result = self._ingestor.ingest(topic, payload, now_ms=self._now_ms())
        plant = result.plant if self._ingestor.plant(result.plant) is not None else UNKNOWN
        self.counters.messages += 1
        self.counters.received += len(result.batch) + len(result.rejected)
        if self._jetstream is None:  # JetStream: from the stream's own order (_jetstream.py)
            self._track_sequence(result)
        self.counters.rejected_by_plant[plant] += len(result.rejected)
        for error in result.rejected:
            self._record(plant, topic, error, payload)
        return result

    def _agent_status(self, topic: str, payload: bytes) -> None:
        """Follow a configured agent's retained status; refuse anything else."""
        plant = self._plant_of(topic)
        if not payload:  # a retained status being cleared: nothing is known any more
            if plant != UNKNOWN:
                self.counters.agent_state.pop(plant, None)
                self.counters.agent_rejected.pop(plant, None)
            return
        try:
            status = wire.decode_status(topic, payload)
            if plant == UNKNOWN:
                raise RejectedReading(
                    wire.Reason.UNKNOWN_PLANT, f"status of {wire.shown(status.plant)}, "
                    "which is not a configured plant",
                )  # fmt: skip
            if status.agent != wire.agent_id(plant):
                raise RejectedReading(
                    wire.Reason.BAD_STATUS,
                    f"status of {plant!r} from {wire.shown(status.agent)}, "
                    f"not its agent {wire.agent_id(plant)!r}",
                )
        except RejectedReading as exc:
            self.counters.rejected_by_plant[plant] += 1
            self._record(plant, topic, exc, payload)
            return
        self.counters.agent_state[plant] = status.state
        if status.state == "online":
            self.counters.agent_rejected[plant] = Counter(status.rejected)

    def _audit_message(self, _client: ConsumerClient, message: Incoming) -> None:
        """Count and dead-letter a message no service will read (see _audit_loop)."""
        topic = message.topic
        try:
            if topic in wire.SERVICE_TOPICS or self._someone_listens(topic):
                return
            parts = topic.split("/")
            if len(parts) == 4 and parts[3] == wire.Kind.DEADLETTER:
                return  # never dead-letter a dead letter, from wherever it comes
            try:
                address = wire.address_of(topic)
                error = RejectedReading(
                    wire.Reason.MISADDRESSED, f"no plant {address.plant!r} is configured"
                )
            except RejectedReading as exc:
                error = RejectedReading(wire.Reason.MISADDRESSED, exc.detail)
            plant = self._plant_of_misaddressed(topic)
            self.counters.rejected_by_plant[plant] += 1
            self._record(plant, topic, error, message.payload)
        except Exception as exc:
            self._internal_error(topic, message.payload, exc)

    def _someone_listens(self, topic: str) -> bool:
        """Whether a carbonlink service subscribes to ``topic``: the platform to every
        plant's telemetry and status (it refuses what it cannot use itself), a configured
        plant's agent to its meters, its simulator to its directives, operators to its
        dead letters and simulator status."""
        parts = topic.split("/")
        if len(parts) == 4 and parts[3] in (wire.Kind.TELEMETRY, wire.Kind.STATUS):
            return True
        if len(parts) < 4 or self._ingestor.plant(parts[2]) is None:
            return False
        if len(parts) == 5:
            return parts[3] == wire.Kind.METERS
        return len(parts) == 4 and parts[3] in (
            wire.Kind.DEADLETTER,
            wire.Kind.DIRECTIVES,
            wire.Kind.SIM_STATUS,
        )

    def _plant_of_misaddressed(self, topic: str) -> str:
        """The configured plant a misaddressed topic seems meant for, else ``UNKNOWN``."""
        parts = topic.split("/")
        guess = parts[2].lower() if len(parts) > 2 else ""
        return guess if self._ingestor.plant(guess) is not None else UNKNOWN

    def _track_sequence(self, result: IngestResult) -> None:
        if result.agent is None or result.seq is None:
            return
        last = self.counters.last_seq.get(result.agent)
        if last is not None and result.seq > last + 1:
            if result.seq - last - 1 <= MAX_SEQUENCE_GAP:
                self.counters.sequence_gaps += result.seq - last - 1
            else:
                self.counters.sequence_resets += 1
        elif last is not None and result.seq < last - MAX_SEQUENCE_GAP:
            self.counters.sequence_resets += 1  # a new outbox starts again from 1
        if last is None or result.seq > last or result.seq < last - MAX_SEQUENCE_GAP:
            self.counters.last_seq[result.agent] = result.seq

    # --- writing -----------------------------------------------------------------------

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
            batch = StoredBatch.concat([item.batch for item in taken])
            try:
                await self._store_or_spill(batch, _row_owners(taken))
            except Exception as exc:  # nothing may stop the writer; never retried forever
                log.error("platform: failed to write %d readings", len(batch), exc_info=exc)
                for item in taken:
                    self._internal_error(item.topic, item.payload, exc)
            self._intake_readings -= len(batch)
            self._acknowledge(taken)
            self._let_in()
            self._room_made.set()
        finally:
            slots.release()

    def _acknowledge(self, taken: list[_Received]) -> None:
        by_client: dict[_Acknowledger, list[int]] = {}
        for item in taken:
            by_client.setdefault(item.client, []).append(item.packet_id)
        for client, packet_ids in by_client.items():
            client.ack(packet_ids)  # dropped if that connection died: the broker resends
        for item in taken:
            if item.attempt_key is not None:
                self._poison.succeeded(item.attempt_key)

    async def _store_or_spill(self, batch: StoredBatch, owners: list[_Received] | None) -> None:
        """Write a batch, or keep it in the spill file until the store answers again."""
        # While older readings wait in the spill, new ones queue behind them there.
        if not self._spill_waiting.is_set():
            try:
                await self._write(batch, owners)
                return
            except _NotWritten as exc:
                if not exc.retryable:
                    await self._isolate_refused(exc.batch, exc.cause)
                    return
                log.warning("platform: store unavailable (%s); spilling to disk", exc.cause)
                batch = exc.batch
        await self._spill_add(batch)

    async def _spill_add(self, batch: StoredBatch) -> None:
        await asyncio.get_running_loop().run_in_executor(self._store_thread, self._spill.add, batch)
        self.counters.spilled += len(batch)
        self._spill_waiting.set()

    async def _write(self, batch: StoredBatch, owners: list[_Received] | None) -> None:
        """Check the batch's identities against the store, write what is new, count it.

        Raises _NotWritten with what is left to write: the whole batch if the store could
        not even be asked, the admitted rows (forgotten again) if their write failed."""
        loop = asyncio.get_running_loop()
        try:
            admission = await loop.run_in_executor(self._store_thread, self._identity.admit, batch)
        except StoreError as exc:
            raise _NotWritten(batch, exc) from exc
        self.counters.repeats += admission.repeats
        for row, error in admission.refused:
            self._refuse_row(batch, row, error, owners[row] if owners is not None else None)
        if not admission.rows:
            return
        admitted = batch if len(admission.rows) == len(batch) else batch.take(admission.rows)
        try:
            await self._write_admitted(admitted)
        except Exception as exc:
            failed = _NotWritten(admitted, exc)
            if failed.retryable:  # spilled, and admitted again when the spill drains
                self._identity.forget(admitted, range(len(admitted)))
            raise failed from exc

    async def _write_admitted(self, batch: StoredBatch) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._store_thread, self.store.write_batch, batch)
        except StoreError:
            self.counters.store_failures += 1
            raise
        self._count_stored(batch)

    async def _isolate_refused(self, batch: StoredBatch, error: Exception) -> None:
        """The store refused a batch for good: write halves until the readings it refuses
        are found, and refuse only those (a batch is never refused for one reading)."""
        if len(batch) == 1:
            self._refuse_row(batch, 0, RejectedReading(
                STORE_REFUSED,
                f"the store refused it: {type(error).__name__}: {wire.shown(str(error))}",
                meter=batch.meter[0],
            ), None)  # fmt: skip
            return
        middle = len(batch) // 2
        for half in (batch.take(range(middle)), batch.take(range(middle, len(batch)))):
            try:
                await self._write_admitted(half)
            except StoreError as exc:
                if exc.retryable:  # the store went away meanwhile: keep the rest safe
                    await self._spill_add(half)
                else:
                    await self._isolate_refused(half, exc)
            except Exception as exc:  # a reading that breaks the backend's own code
                await self._isolate_refused(half, exc)

    def _refuse_row(
        self, batch: StoredBatch, row: int, error: RejectedReading, owner: _Received | None
    ) -> None:
        """Count and dead-letter one reading refused at write time: with its message when
        it is at hand, else (from the spill) with the reading itself as the payload."""
        plant = batch.plant[row]
        if error.reason == STORE_REFUSED:
            self._identity.forget(batch, [row])
        if owner is not None:
            topic, payload = owner.topic, owner.payload
        else:
            topic = wire.telemetry_topic(plant)
            reading = wire.Reading(
                batch.meter[row], batch.ts_ms[row], batch.value[row], batch.unit[row],
                batch.duration_ms[row], batch.quality[row],
            )  # fmt: skip
            payload = wire.encode_telemetry(
                wire.TelemetryBatch(plant, "spill", 0, self._now_ms(), (reading,))
            )
        self.counters.rejected_by_plant[plant] += 1
        self._record(plant, topic, error, payload)

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
                await self._write(batch, None)
            except _NotWritten as exc:
                if exc.retryable:
                    log.warning("platform: store still down (%s); retry in %.1fs", exc.cause, delay)
                    await asyncio.sleep(delay)
                    delay = min(STORE_RETRY_MAX_S, delay * 2)
                    continue
                await self._isolate_refused(exc.batch, exc.cause)
            await loop.run_in_executor(self._store_thread, self._spill.remove_through, last_id)
            self.counters.spilled -= len(batch)
            delay = STORE_RETRY_MIN_S

    def _count_stored(self, batch: StoredBatch) -> None:
        self.counters.stored += len(batch)
        newest = self.counters.newest_stored_ms
        for plant, ts_ms in zip(batch.plant, batch.ts_ms, strict=True):
            if ts_ms > newest.get(plant, 0):
                newest[plant] = ts_ms
        if newest:
            self.counters.lag_s = max(0.0, (self._now_ms() - max(newest.values())) / 1000)

    def close(self) -> None:
        self._store_thread.shutdown(wait=True)
        self._spill.close()
        with contextlib.suppress(Exception):
            self._poison.close()


class _NotWritten(Exception):  # noqa: N818 (carries what is left, not a failure kind)
    """A batch (or the part of it left to write) that did not reach the store."""

    def __init__(self, batch: StoredBatch, cause: Exception) -> None:
        super().__init__(str(cause))
        self.batch = batch
        self.cause = cause

    @property
    def retryable(self) -> bool:
        return isinstance(self.cause, StoreError) and self.cause.retryable


def _row_owners(taken: list[_Received]) -> list[_Received]:
    """For each row of the concatenated batch, the message it came from."""
    return [item for item in taken for _ in range(len(item.batch))]
