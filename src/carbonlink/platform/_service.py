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

``sequence_gaps`` is counted from the store, not from what one worker sees: in a shared
group each worker gets only some of an agent's batches, so the numbers it misses are
mostly the other workers' share, not lost batches. Every worker records the
``(agent, seq)`` of each batch it receives in the store (``Store.record_sequences``), and
every few seconds reads back, per agent, the numbers missing between the recorded ones
(``Store.sequence_gaps``): the same figure on every worker, correct for any number of
them. A batch another worker holds but has not recorded yet (at most
``SEQUENCE_REFRESH_S``) may show as a gap until it is.

Nor does a subscription that silently delivers nothing let it run: at startup, before it
says it is connected, the platform proves that its telemetry subscription (shared group
included) delivers, by publishing probes to ``wire.PROBE_TOPIC`` until one (or any
telemetry) arrives through it, and otherwise fails with :class:`DeliveryProbeError`
(docs/platform.md, "The startup probe").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from carbonlink import wire
from carbonlink.config import JetStreamConfig, MqttVersion, PlatformConfig, Uplink
from carbonlink.core.clock import wall_clock_ms
from carbonlink.core.memory import AllocatorTrim
from carbonlink.core.metrics import Metric, counter, gauge, registry_reading, store_latency
from carbonlink.errors import DeliveryProbeError, RejectedReading, StoreError
from carbonlink.mqtt.client import BrokerAddress
from carbonlink.mqtt.consumer import ConsumerClient, Incoming, PublishRefusedError
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
SEQUENCE_REFRESH_S: Final = 2.0  # how often received (agent, seq) go to the store, gaps back
# The gap count reads every recorded number; as they pile up it is refreshed less often,
# so that it takes at most 1/SEQUENCE_COST_SHARE of one store thread's time.
SEQUENCE_COST_SHARE: Final = 20
MAX_PENDING_SEQUENCES: Final = 100_000  # while the store is down; beyond, a gap may show
# A probe that went to another member of the group (or to the stale session of a stopped
# one) proves nothing to this worker: send another after this long, until the deadline.
PROBE_INTERVAL_S: Final = 0.5
NO_MATCHING_SUBSCRIBERS: Final = 0x10  # MQTT 5 PUBACK reason code


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
    sequence_gaps: int = 0  # from the store: every worker's batches (module docstring)
    sequence_gaps_by_agent: dict[str, int] = field(default_factory=dict)
    sequence_resets: int = 0  # seen by this worker
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
            "sequence_gaps_by_agent": dict(self.sequence_gaps_by_agent),
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
        memory: AllocatorTrim | None = None,
    ) -> None:
        """``memory``: the process's allocator trim, run and counted with the platform;
        only a process that is the platform passes one (``carbonlink platform``), never
        one that runs it beside other services (the demo, tests): it acts process-wide."""
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
        # Set once anything arrives through the telemetry subscription: a probe (this
        # worker's or another's) or telemetry. Either proves the subscription delivers.
        self._delivering = asyncio.Event()
        self._sequences_pending: dict[tuple[str, int], None] = {}  # ordered set
        # Store calls run on these threads, so a blocking write never stalls the MQTT
        # loop; up to write_concurrency batches are written at once (every backend's
        # write_batch is safe to call from several threads).
        self._store_thread = ThreadPoolExecutor(
            self.config.write_concurrency, thread_name_prefix="carbonlink-store"
        )
        # Prometheus: the counters above, read when scraped; store latency observed.
        self.metrics = registry_reading(self._metric_families)
        self._memory = memory
        self._store_seconds = store_latency(self.metrics)

    async def run(self) -> None:
        """Run until cancelled; raise DeliveryProbeError (bare, not in a group) if the
        telemetry subscription does not deliver at startup."""
        if len(self._spill):
            self._spill_waiting.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._write_loop())
                tasks.create_task(self._drain_spill())
                if self._memory is not None:
                    tasks.create_task(self._memory.run())
                tasks.create_task(self._mqtt_loop())
                if self._jetstream is not None:
                    # Gaps come from the stream's own order there (_update_sequence).
                    tasks.create_task(self._jetstream_loop())
                else:
                    tasks.create_task(self._sequence_loop())
                if self._audit:
                    tasks.create_task(self._audit_loop())
        except* DeliveryProbeError as group:
            raise _first(group) from None

    def health(self) -> dict[str, object]:
        """The counters, and whether the platform is subscribed now (the API's health)."""
        self._update_sequence()
        pulling = self._jetstream_intake is None or self._jetstream_intake.connected.is_set()
        return self.counters.as_dict() | {"connected": self.connected.is_set() and pulling}

    def _metric_families(self) -> Iterator[Metric]:
        c = self.counters
        yield counter("carbonlink_platform_messages", "Telemetry messages handled", c.messages)
        yield counter("carbonlink_platform_readings_received", "Readings received", c.received)
        yield counter("carbonlink_platform_readings_stored", "Readings written", c.stored)
        yield counter(
            "carbonlink_platform_readings_repeated", "Readings received again, stored once",
            c.repeats,
        )  # fmt: skip
        refused: dict[tuple[str, ...], float] = {
            ("platform", r): float(n) for r, n in c.rejected.items()
        }
        for counts in c.agent_rejected.values():
            for reason, n in counts.items():
                refused["agent", reason] = refused.get(("agent", reason), 0.0) + n
        yield counter(
            "carbonlink_readings_rejected",
            "Readings refused, by where (agent statuses, platform) and reason",
            refused, ("at", "reason"),
        )  # fmt: skip
        yield counter(
            "carbonlink_platform_store_failures", "Store writes that failed", c.store_failures
        )
        yield gauge(
            "carbonlink_platform_intake_readings",
            "Readings received and not yet written (the intake queue)", self._intake_readings,
        )  # fmt: skip
        yield gauge(
            "carbonlink_platform_intake_messages", "Messages in the intake queue",
            len(self._intake),
        )  # fmt: skip
        yield gauge(
            "carbonlink_platform_spill_readings", "Readings waiting in the spill file", c.spilled
        )
        if c.lag_s is not None:
            yield gauge(
                "carbonlink_platform_lag_seconds",
                "Wall clock minus the newest stored reading's time, seconds", c.lag_s,
            )  # fmt: skip
        yield gauge("carbonlink_platform_connected", "1 when subscribed", self.connected.is_set())
        if self._memory is None:
            return
        yield gauge(
            "carbonlink_platform_allocator", "The memory allocator this process runs on (1)",
            {(self._memory.allocator,): 1.0}, ("allocator",),
        )  # fmt: skip
        trimmed = self._memory.counts
        yield counter(
            "carbonlink_platform_memory_trims", "Freed memory handed back to the OS (malloc_trim)",
            trimmed.trims,
        )  # fmt: skip
        yield counter(
            "carbonlink_platform_memory_trim_seconds", "Time spent in malloc_trim, seconds",
            trimmed.seconds,
        )  # fmt: skip
        yield counter(
            "carbonlink_platform_memory_released_bytes",
            "Fall in resident memory across the trims, bytes", trimmed.released_bytes,
        )  # fmt: skip

    def _timed_write(self, batch: StoredBatch) -> None:
        with self._store_seconds.time():
            self.store.write_batch(batch)

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
            # Once per process, at startup; on JetStream the stream's acks prove delivery.
            if self._jetstream is None and not self._delivering.is_set():
                await self._prove_delivery(client, subscription)
            self.connected.set()
            connected()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._rejections.publish(client))
                await client.wait_closed()

    async def _prove_delivery(self, client: ConsumerClient, subscription: str) -> None:
        """Publish probes to wire.PROBE_TOPIC until something arrives through the telemetry
        subscription, or fail with DeliveryProbeError at ``startup_probe_s``.

        A broker may accept a subscription and deliver nothing on it: NATS 2.9 and
        RabbitMQ 3.10 take ``$share/GROUP/...`` as a plain filter that no topic matches,
        while acknowledging every batch the agents publish. In a group, a probe may be
        dealt to another worker, so probes repeat (any worker's probe counts)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.startup_probe_s
        sent = unmatched = 0
        while not self._delivering.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeliveryProbeError(
                    self._broker.url, subscription, _probe_failure(sent, unmatched, self.config)
                )
            try:
                reason = await client.publish(
                    wire.PROBE_TOPIC, wire.encode_probe(self.client_id, secrets.token_hex(8))
                )
            except PublishRefusedError as exc:
                raise DeliveryProbeError(
                    self._broker.url, subscription,
                    f"the broker refused the probe to {wire.PROBE_TOPIC} (reason code "
                    f"0x{exc.reason:02x}); a platform login must be allowed to publish there",
                ) from exc  # fmt: skip
            sent += 1
            unmatched += reason == NO_MATCHING_SUBSCRIBERS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(PROBE_INTERVAL_S, remaining)):
                    await self._delivering.wait()
        log.info("platform: %s delivers (checked at startup)", subscription)

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
            if message.topic == wire.PROBE_TOPIC:
                self._delivering.set()
                client.ack((message.packet_id,))
                return
            if not message.topic.endswith("/status"):
                self._delivering.set()  # only the telemetry subscription brings anything else
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
        """Queue (agent, seq) for the store, where gaps are counted; count resets here."""
        if result.agent is None or result.seq is None:
            return
        if self._jetstream is None and len(self._sequences_pending) < MAX_PENDING_SEQUENCES:
            self._sequences_pending[(result.agent, result.seq)] = None
        last = self.counters.last_seq.get(result.agent)
        if last is not None and abs(result.seq - last) > MAX_SEQUENCE_GAP:
            self.counters.sequence_resets += 1  # a new outbox starts again from 1
        if last is None or result.seq > last or result.seq < last - MAX_SEQUENCE_GAP:
            self.counters.last_seq[result.agent] = result.seq

    async def _sequence_loop(self) -> None:
        """Record received (agent, seq) in the store, then read every agent's gaps back."""
        loop = asyncio.get_running_loop()
        pause = SEQUENCE_REFRESH_S
        while True:
            await asyncio.sleep(pause)
            rows = list(self._sequences_pending)
            try:
                if rows:
                    await loop.run_in_executor(
                        self._store_thread, self.store.record_sequences, rows
                    )
                    for row in rows:
                        self._sequences_pending.pop(row, None)
                started = loop.time()
                gaps = await loop.run_in_executor(
                    self._store_thread, self.store.sequence_gaps, MAX_SEQUENCE_GAP
                )
                pause = max(SEQUENCE_REFRESH_S, SEQUENCE_COST_SHARE * (loop.time() - started))
            except Exception as exc:  # the store is down: readings spill; this waits
                log.debug("platform: sequence numbers not recorded yet: %s", exc)
                continue
            self.counters.sequence_gaps_by_agent = gaps
            self.counters.sequence_gaps = sum(gaps.values())

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
            await loop.run_in_executor(self._store_thread, self._timed_write, batch)
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
        with contextlib.suppress(Exception):  # best effort: a lost row shows as a gap
            self.store.record_sequences(list(self._sequences_pending))
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


def _probe_failure(sent: int, unmatched: int, config: PlatformConfig) -> str:
    why = (
        f"; the broker answered {unmatched} of them 'no matching subscribers'"
        if unmatched else ""
    )  # fmt: skip
    return (
        f"accepted, but none of {sent} probes published to {wire.PROBE_TOPIC} came back "
        f"through it within {config.startup_probe_s:g}s{why}. The broker may not support "
        "shared subscriptions (NATS 2.9 and RabbitMQ 3.10 accept $share/... and deliver "
        "nothing): run without --shared-group there. Refusing to run, or what the agents "
        "publish would be acknowledged and lost"
    )


def _first(group: BaseExceptionGroup[DeliveryProbeError]) -> DeliveryProbeError:
    """The first DeliveryProbeError in a (possibly nested) exception group."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        return error
    raise AssertionError("empty exception group")


def _row_owners(taken: list[_Received]) -> list[_Received]:
    """For each row of the concatenated batch, the message it came from."""
    return [item for item in taken for _ in range(len(item.batch))]
