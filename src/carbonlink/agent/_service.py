"""The factory-side agent: meters -> validation -> durable outbox -> telemetry batches.

Delivery: a meter message is acknowledged to the broker only after its good readings
are committed to the outbox, and readings leave the outbox only after the broker has
acknowledged the telemetry batch carrying them (QoS 1 PUBACK). A crash anywhere in
between makes something be sent again, never lost; the platform stores by reading
identity, so a repeat is stored once. Over MQTT 5, a PUBACK that says "no matching
subscribers" (no platform has ever subscribed, so the broker dropped the batch) does not
count: the batch stays in the outbox, counted as ``unheard_batches`` and logged, and is
sent again after a growing delay.

What each meter sent lately (the validator's state) is kept in the outbox file too, in
the same transaction as the readings, so duplicates, conflicting values and overlapping
intervals are refused after a restart as before it.

No message can stop the agent: whatever goes wrong while handling one is refused as
``internal_error`` (logged, counted, dead-lettered) and the message is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiomqtt

from carbonlink import wire
from carbonlink.agent._jetstream import EPOCH_KEY, JetStreamUplink, Send, new_epoch
from carbonlink.agent._sparkplug import SparkplugHost, SparkplugOutcome
from carbonlink.agent._validation import MeterValidator, Remembered, Verdict
from carbonlink.config import (
    AgentConfig,
    JetStreamConfig,
    MqttVersion,
    OutboxFullPolicy,
    PlantConfig,
    Uplink,
)
from carbonlink.core.clock import wall_clock_ms
from carbonlink.core.metrics import Metric, counter, gauge, registry_reading
from carbonlink.emissions import FactorLibrary, FactorSet, ResolvedFactor
from carbonlink.errors import CarbonlinkError, RejectedReading
from carbonlink.mqtt.client import (
    NO_MATCHING_SUBSCRIBERS,
    BrokerAddress,
    acknowledge,
    make_client,
    manual_acks,
    publish_with_reason,
)
from carbonlink.mqtt.reconnect import Backoff, keep_connected
from carbonlink.mqtt.rejections import Rejections
from carbonlink.storage.queue import DurableQueue, DurableQueueError
from carbonlink.wire import Reason

log = logging.getLogger(__name__)

STATUS_INTERVAL_S: Final = 10.0
# A batch nobody subscribes to is sent again after a delay growing between these: soon
# after a platform first subscribes, without hammering a broker that has none.
UNHEARD_RETRY_MIN_S: Final = 0.5
UNHEARD_RETRY_MAX_S: Final = 30.0
LOG_FIRST_UNHEARD: Final = 3  # then one in LOG_EVERY_UNHEARD: the count stays exact
LOG_EVERY_UNHEARD: Final = 100
STATE_OFFLINE_TIMEOUT_S: Final = 2.0  # Sparkplug STATE offline on the way out, best effort
OUTBOX_FULL: Final = "outbox_full"
OUTBOX_UNWRITABLE: Final = "outbox_unwritable"
# On a full disk, drop_oldest frees at least this many readings' pages at once: freeing
# exactly what one message needs would hit the wall again on the next message.
DISK_FULL_DROP_MIN: Final = 1000
_SEQ_KEY: Final = "seq"
_COUNTER_KEY_PREFIX: Final = "counter:"  # outboxes written before the `seen` table
_FORGOTTEN_KEY_PREFIX: Final = "forgotten:"
# The validator's state, beside the outbox (see the module docstring).
_SEEN_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS seen (
    meter TEXT NOT NULL, ts_ms INTEGER NOT NULL, value REAL NOT NULL,
    duration_ms INTEGER NOT NULL, PRIMARY KEY (meter, ts_ms)
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class AgentCounters:
    """Every counter counts readings (meter samples), never messages, so that after each
    message ``received == accepted + sum(rejected) + baselines``: a reading is accepted,
    rejected (by reason), or is a counter's first register value, which only sets the
    baseline (an interval needs two). ``forwarded`` and ``dropped_oldest`` count accepted
    readings that left the outbox."""

    received: int = 0
    accepted: int = 0
    baselines: int = 0
    forwarded: int = 0
    dropped_oldest: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # Telemetry *batches* (not readings) the broker took with "no matching subscribers"
    # (MQTT 5): kept in the outbox and sent again.
    unheard_batches: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "baselines": self.baselines,
            "forwarded": self.forwarded,
            "dropped_oldest": self.dropped_oldest,
            "rejected": dict(self.rejected),
            "unheard_batches": self.unheard_batches,
        }


# Refusals of a whole message (its meter, unit or kind is wrong): every sample goes.
_MESSAGE_REASONS: Final = frozenset({Reason.UNKNOWN_METER, Reason.WRONG_UNIT, Reason.WRONG_KIND})


def _refused_whole(message: wire.MeterMessage, verdict: Verdict) -> str | None:
    """The reason when the validator refused the message as a whole, else None."""
    if verdict.accepted or len(verdict.rejected) != len(message.rejected) + 1:
        return None
    reason = verdict.rejected[0].reason
    return reason if reason in _MESSAGE_REASONS and message.samples else None


def _encode_reading(r: wire.Reading) -> bytes:
    return json.dumps([r.meter, r.ts_ms, r.value, r.unit, r.duration_ms, r.quality]).encode()


def _decode_reading(item: bytes) -> wire.Reading:
    meter, ts_ms, value, unit, duration_ms, quality = json.loads(item)
    return wire.Reading(meter, ts_ms, value, unit, duration_ms, quality)


class Agent:
    """One plant's agent. ``run()`` serves until cancelled, reconnecting as needed."""

    def __init__(
        self,
        plant: PlantConfig,
        broker: BrokerAddress,
        config: AgentConfig | None = None,
        *,
        outbox_path: Path,
        factor_set: FactorSet | None = None,
        now_ms: Callable[[], int] = wall_clock_ms,
        jetstream: JetStreamConfig | None = None,
    ) -> None:
        self.plant = plant
        self.config = config or AgentConfig()
        self.counters = AgentCounters()
        self.latest: dict[str, wire.Reading] = {}
        self.co2e_kg = 0.0  # running total since start, for the local view
        self.connected = asyncio.Event()
        self._broker = broker
        self._now_ms = now_ms
        self._validator = MeterValidator(plant, self.config, now_ms)
        self._outbox = DurableQueue(outbox_path, extra_schema=_SEEN_SCHEMA)
        self._outbox_refusing = False
        self._appended = asyncio.Event()
        self._rejections = Rejections("agent", log, self.counters.rejected)
        self._unsent: tuple[int, wire.TelemetryBatch] | None = None
        self._forgotten: list[tuple[str, int]] = []  # to delete from `seen` next commit
        meta = self._outbox.meta()
        self._seq = int(meta.get(_SEQ_KEY, "0"))
        self._restore_state(meta)
        self._factors = _local_factors(plant, factor_set)
        self._uplink: JetStreamUplink | None = None
        if self.config.uplink is Uplink.JETSTREAM:
            if jetstream is None or not jetstream.servers:
                raise ValueError("agent.uplink is jetstream: pass the jetstream settings")
            epoch = meta.get(EPOCH_KEY)
            if epoch is None:  # a new outbox: its message ids must not repeat an old one's
                epoch = new_epoch()
                self._outbox.append([], {EPOCH_KEY: epoch})
            self._uplink = JetStreamUplink(jetstream, plant.id, self.identity, epoch)
        # Meters whose payloads are not the envelope: a bare number or JSON of its own.
        self._mapped = {
            m.id: m for m in plant.meters if m.payload.format is not wire.PayloadFormat.ENVELOPE
        }
        self.sparkplug = (
            SparkplugHost(plant, plant.sparkplug) if plant.sparkplug is not None else None
        )
        self.sparkplug_connected = asyncio.Event()
        self.metrics = registry_reading(self._metric_families)

    def _metric_families(self) -> Iterator[Metric]:
        """Prometheus: the counters, read when scraped (labelled with the plant, so one
        Prometheus job can hold every agent)."""
        c, plant = self.counters, (self.plant.id,)
        labels = ("plant",)
        for name, help_text, value in (
            ("received", "Meter readings received", c.received),
            ("accepted", "Readings accepted into the outbox", c.accepted),
            ("forwarded", "Readings the broker acknowledged as telemetry", c.forwarded),
            ("dropped_oldest", "Unsent readings dropped for room (drop_oldest)",
             c.dropped_oldest),
        ):  # fmt: skip
            yield counter(f"carbonlink_agent_readings_{name}", help_text, {plant: value}, labels)
        yield counter(
            "carbonlink_agent_readings_rejected", "Readings refused, by reason",
            {(self.plant.id, r): float(n) for r, n in c.rejected.items()}, ("plant", "reason"),
        )  # fmt: skip
        yield gauge(
            "carbonlink_agent_outbox_readings", "Readings in the outbox, not yet acknowledged",
            {plant: self.outbox_depth}, labels,
        )  # fmt: skip
        yield gauge(
            "carbonlink_agent_connected", "1 when connected to the broker",
            {plant: self.connected.is_set()}, labels,
        )  # fmt: skip

    def _restore_state(self, meta: dict[str, str]) -> None:
        for key, value in meta.items():
            if key.startswith(_COUNTER_KEY_PREFIX):
                ts_ms, register = json.loads(value)
                self._validator.restore_counter(key[len(_COUNTER_KEY_PREFIX) :], ts_ms, register)
            elif key.startswith(_FORGOTTEN_KEY_PREFIX):
                self._validator.restore_forgotten(key[len(_FORGOTTEN_KEY_PREFIX) :], int(value))
        rows = self._outbox.read("SELECT meter, ts_ms, value, duration_ms FROM seen ORDER BY ts_ms")
        self._validator.restore(
            Remembered(str(m), int(str(t)), float(str(v)), int(str(d))) for m, t, v, d in rows
        )

    @property
    def identity(self) -> str:
        return wire.agent_id(self.plant.id)

    @property
    def outbox_depth(self) -> int:
        return len(self._outbox)

    def view(self) -> dict[str, object]:
        """The local view: latest reading per meter and the running CO2e."""
        return {
            "plant": self.plant.id,
            "connected": self.connected.is_set(),
            "co2e_kg_since_start": self.co2e_kg,
            "outbox_depth": self.outbox_depth,
            "latest": {
                meter: {
                    "ts": wire.format_timestamp(r.ts_ms),
                    "value": r.value,
                    "unit": r.unit,
                    "duration_s": r.duration_ms / 1000,
                }
                for meter, r in sorted(self.latest.items())
            },
            "counters": self.counters.as_dict(),
        } | ({"sparkplug": self.sparkplug.view()} if self.sparkplug is not None else {})

    async def run(self) -> None:
        meters = keep_connected(
            self._session, what=f"agent {self.plant.id}", log=log, lost=self.connected.clear
        )
        try:
            if self.sparkplug is None and self._uplink is None:
                await meters
                return
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(meters)
                    if self._uplink is not None:  # forwards whether or not MQTT is connected
                        tasks.create_task(self._uplink.run(self._forward))
                    if self.sparkplug is not None:
                        tasks.create_task(
                            keep_connected(
                                self._sparkplug_session,
                                what=f"agent {self.plant.id} (Sparkplug B)",
                                log=log,
                                lost=self.sparkplug_connected.clear,
                            )
                        )
            except BaseExceptionGroup as group:
                # The service's own error, as callers (the CLI's one-line errors) expect it.
                raise group.exceptions[0] from None
        finally:
            self.connected.clear()
            self.sparkplug_connected.clear()
            self._outbox.close()

    async def _sparkplug_session(self, connected: Callable[[], None]) -> None:
        """The agent as its edge node's Sparkplug B host application, on a connection of
        its own: Sparkplug wants the host's STATE as that connection's will, and a clean
        session (edge nodes publish data at QoS 0 and rebirth on request instead)."""
        host = self.sparkplug
        assert host is not None
        state_id = host.config.host_id
        # One timestamp for the session's STATE online and its will: Sparkplug 3.0 lets
        # an edge node tell a late will from the current state by it.
        stamp = self._now_ms()
        will = None
        if state_id is not None:
            offline = wire.encode_state(False, stamp)
            will = aiomqtt.Will(wire.state_topic(state_id), offline, qos=1, retain=True)
        client = make_client(self._broker, f"{self.identity}-sparkplug", will=will)
        manual_acks(client)
        async with client:
            connected()
            for topic in host.subscriptions:
                await client.subscribe(topic, qos=1)
            if state_id is not None:
                # Online once subscribed: edge nodes that wait for their primary host
                # send their births now.
                online = wire.encode_state(True, stamp)
                await client.publish(wire.state_topic(state_id), online, qos=1, retain=True)
            self.sparkplug_connected.set()
            try:
                await self._serve_sparkplug(client, host)
            finally:
                if state_id is not None:
                    # A clean disconnect sends no will: say offline ourselves.
                    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                        async with asyncio.timeout(STATE_OFFLINE_TIMEOUT_S):
                            await client.publish(
                                wire.state_topic(state_id), wire.encode_state(False, stamp),
                                qos=1, retain=True,
                            )  # fmt: skip

    async def _serve_sparkplug(self, client: aiomqtt.Client, host: SparkplugHost) -> None:
        config = host.config
        async for message in client.messages:
            rebirth = self.handle_sparkplug(str(message.topic), _payload_bytes(message.payload))
            acknowledge(client, message)
            if rebirth:
                log.warning("agent %s: asking edge node %s for a rebirth",
                            self.plant.id, config.edge_node)  # fmt: skip
                await client.publish(
                    wire.ncmd_topic(config.group, config.edge_node),
                    wire.encode_rebirth(self._now_ms()), qos=0,
                )  # fmt: skip

    def handle_sparkplug(self, topic: str, payload: bytes) -> bool:
        """One message of the edge node: its readings go through the meters' path, each
        refusal is counted and dead-lettered. True when the node should rebirth.

        Never raises: anything unexpected is refused as ``internal_error``."""
        assert self.sparkplug is not None
        try:
            outcome = self.sparkplug.handle(topic, payload, self._now_ms())
        except Exception as exc:
            log.exception("agent %s: failed on a Sparkplug message to %s", self.plant.id,
                          wire.shown(topic))  # fmt: skip
            outcome = SparkplugOutcome(refused=(RejectedReading(
                wire.Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {wire.shown(str(exc))}"
            ),))  # fmt: skip
        for error in outcome.refused:
            self.counters.received += 1  # as an unreadable meter message: one reading
            self._reject(topic, error, payload)
        for message in outcome.messages:
            self._guarded(topic, payload, functools.partial(self._take, topic, payload, message))
        return outcome.rebirth

    async def _session(self, connected: Callable[[], None]) -> None:
        will = aiomqtt.Will(
            wire.status_topic(self.plant.id), self._status("offline"), qos=1, retain=True
        )
        client = make_client(
            self._broker, self.identity, clean_session=False, will=will,
            mqtt5=self.config.mqtt_version is MqttVersion.V5,
        )  # fmt: skip
        manual_acks(client)
        async with client:
            connected()
            await self._serve(client)

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.publish(
            wire.status_topic(self.plant.id), self._status("online"), qos=1, retain=True
        )
        await client.subscribe(wire.meter_subscription(self.plant.id), qos=1)
        self.connected.set()
        async with asyncio.TaskGroup() as tasks:
            if self._uplink is None:
                tasks.create_task(self._forward(self._mqtt_sender(client)))
            tasks.create_task(self._rejections.publish(client))
            tasks.create_task(self._report_status(client))
            async for message in client.messages:
                self.handle(str(message.topic), _payload_bytes(message.payload))
                acknowledge(client, message)

    def handle(self, topic: str, payload: bytes) -> None:
        """Validate one meter message; commit the good readings, dead-letter the rest.

        Never raises: anything unexpected is refused as ``internal_error``."""
        self._guarded(topic, payload, lambda: self._handle(topic, payload))

    def _guarded(self, topic: str, payload: bytes, work: Callable[[], None]) -> None:
        received_before = self.counters.received
        try:
            work()
        except Exception as exc:
            log.exception("agent %s: failed on a message to %s", self.plant.id, wire.shown(topic))
            detail = f"{type(exc).__name__}: {wire.shown(str(exc))}"
            if self.counters.received == received_before:
                self.counters.received += 1  # counted as one refused reading
            self._reject(topic, RejectedReading(wire.Reason.INTERNAL_ERROR, detail), payload)

    def _handle(self, topic: str, payload: bytes) -> None:
        try:
            message = self._decode(topic, payload)
        except RejectedReading as exc:
            self.counters.received += 1  # an unreadable message: one refused reading
            self._reject(topic, exc, payload)
            return
        self._take(topic, payload, message)

    def _decode(self, topic: str, payload: bytes) -> wire.MeterMessage:
        """The envelope, or the meter's own payload shape when its plant file says so."""
        if self._mapped:
            meter = self._mapped.get(wire.address_of(topic).meter or "")
            if meter is not None:
                return wire.decode_mapped(
                    topic, payload, meter.payload.mapping, unit=meter.unit,
                    kind=meter.reading.value, arrival_ms=self._now_ms(),
                )  # fmt: skip
        return wire.decode_meter_message(topic, payload)

    def _take(self, topic: str, payload: bytes, message: wire.MeterMessage) -> None:
        """Validate a decoded message and keep what passes; count every reading in it."""
        refused_before = self.counters.rejected.total()
        accepted_before = self.counters.accepted
        try:
            verdict = self._validator.check(message, commit=False)
        except RejectedReading as exc:
            self.counters.received += 1
            self._reject(topic, exc, payload)
            return
        readings = len(message.samples) + len(message.rejected)
        self.counters.received += readings
        try:
            self._keep(topic, payload, message, verdict)
        finally:
            whole = _refused_whole(message, verdict)
            if whole is not None:
                # One dead letter for the message, but every sample in it is refused.
                self.counters.rejected[whole] += len(message.samples) - 1
            counted = (self.counters.accepted - accepted_before) + (
                self.counters.rejected.total() - refused_before
            )
            self.counters.baselines += max(0, readings - counted)

    def _keep(
        self, topic: str, payload: bytes, message: wire.MeterMessage, verdict: Verdict
    ) -> None:
        errors = verdict.rejected
        if not message.samples:
            # Every reading was refused by the decoder already: a refusal of the message
            # as a whole (its unit, say) would count one of them twice.
            errors = errors[len(errors) - len(message.rejected) :]
        for error in errors:
            self._reject(topic, error, payload)
        accepted = self._make_room(topic, payload, list(verdict.accepted))
        kept = {(r.meter, r.ts_ms) for r in accepted}
        remembered = [
            row
            for row in verdict.remembered
            if row.duration_ms == 0 or (row.meter, row.ts_ms) in kept  # counters: registers
        ]
        if not accepted and not remembered:
            return  # nothing to keep: spare the disk a transaction
        try:
            self._commit(accepted, remembered)
        except DurableQueueError as exc:
            # Refused with the reason, dead-lettered, counted: accounted for, not lost.
            reason = OUTBOX_FULL if exc.full else OUTBOX_UNWRITABLE
            detail = f"disk full: {exc.problem}" if exc.full else exc.problem
            if not self._outbox_refusing:  # once per episode: each refusal is counted anyway
                self._outbox_refusing = True
                log.error("agent %s: outbox %s, refusing readings: %s", self.plant.id, reason,
                          detail)  # fmt: skip
            for reading in accepted:
                self._reject(topic, RejectedReading(reason, detail, meter=reading.meter), payload)
            return
        self._forgotten += self._validator.commit(Verdict(tuple(accepted), (), tuple(remembered)))
        if self._outbox_refusing:
            self._outbox_refusing = False
            log.warning("agent %s: outbox writable again", self.plant.id)
        for reading in accepted:
            self.counters.accepted += 1
            self.latest[reading.meter] = reading
            factor = self._factors.get(reading.meter)
            if factor is not None:
                self.co2e_kg += factor.co2e_kg_per_unit * reading.value
        if accepted:
            self._appended.set()

    def _commit(self, readings: list[wire.Reading], remembered: list[Remembered]) -> None:
        """Append to the outbox, with what the validator now remembers. A full disk gets
        the configured policy, as a full outbox does: ``drop_oldest`` discards the oldest
        unsent readings in the same transaction as it appends, and the outbox gives their
        pages back to the disk (its reserve pays for the deletion when nothing is left)."""
        items = [_encode_reading(r) for r in readings]
        forgotten = list(self._forgotten)
        meta = {
            _FORGOTTEN_KEY_PREFIX + meter: str(self._validator.forgotten(meter))
            for meter in {m for m, _ in forgotten}
        }

        def remember(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO seen VALUES (?, ?, ?, ?)",
                [(r.meter, r.ts_ms, r.value, r.duration_ms) for r in remembered],
            )
            db.executemany("DELETE FROM seen WHERE meter = ? AND ts_ms = ?", forgotten)

        try:
            self._outbox.append(items, meta, remember)
        except DurableQueueError as exc:
            if not exc.full or self.config.outbox_full_policy is not OutboxFullPolicy.DROP_OLDEST:
                raise
            dropped = self._outbox.replace_oldest(
                max(len(items), DISK_FULL_DROP_MIN), items, meta, remember
            )
            self.counters.dropped_oldest += dropped
            log.error("agent %s: disk full, dropped the %d oldest readings", self.plant.id, dropped)
        del self._forgotten[: len(forgotten)]

    def _make_room(
        self, topic: str, payload: bytes, readings: list[wire.Reading]
    ) -> list[wire.Reading]:
        room = self.config.outbox_max_readings - len(self._outbox)
        overflow = len(readings) - room
        if overflow <= 0:
            return readings
        if self.config.outbox_full_policy is OutboxFullPolicy.DROP_OLDEST:
            dropped = self._outbox.drop_oldest(overflow)
            self.counters.dropped_oldest += dropped
            log.error(
                "agent %s: outbox full, dropped the %d oldest readings", self.plant.id, dropped
            )
            return readings
        for reading in readings[max(room, 0) :]:
            detail = f"outbox holds its limit of {self.config.outbox_max_readings} readings"
            self._reject(topic, RejectedReading(OUTBOX_FULL, detail, meter=reading.meter), payload)
        return readings[: max(room, 0)]

    def _reject(self, topic: str, error: RejectedReading, payload: bytes) -> None:
        self._rejections.record(self.plant.id, topic, error, payload)

    async def _forward(self, send: Send) -> None:
        """Send batches from the outbox; ``send`` returns once the next hop holds one."""
        while True:
            if self._unsent is None:
                self._unsent = self._next_batch(await self._next_rows())
            last_id, batch = self._unsent
            # A batch cut off by a disconnect is sent again (same seq) after reconnecting.
            await send(batch, wire.encode_telemetry(batch))
            # The sequence number moves with the readings it sent: a restart continues it.
            self._outbox.remove_through(last_id, {_SEQ_KEY: str(batch.seq)})
            self.counters.forwarded += len(batch.readings)
            self._unsent = None

    def _next_batch(self, rows: list[tuple[int, bytes]]) -> tuple[int, wire.TelemetryBatch]:
        """The next telemetry batch from the oldest rows: as many as the platform takes in
        one message (long meter ids could make even the configured count too large)."""
        while True:
            readings = tuple(_decode_reading(item) for _, item in rows)
            batch = wire.TelemetryBatch(
                self.plant.id, self.identity, self._seq + 1, self._now_ms(), readings
            )
            if len(rows) == 1 or wire.fits(wire.encode_telemetry(batch)):
                self._seq += 1
                return rows[-1][0], batch
            rows = rows[: len(rows) // 2]

    async def _next_rows(self) -> list[tuple[int, bytes]]:
        """Wait for a full batch, or for the oldest pending reading to be old enough."""
        loop = asyncio.get_running_loop()
        limit = self.config.batch_max_readings
        deadline: float | None = None
        while True:
            depth = len(self._outbox)
            if depth and (depth >= limit or (deadline is not None and loop.time() >= deadline)):
                return self._outbox.peek(limit)
            if depth and deadline is None:
                deadline = loop.time() + self.config.batch_max_delay_s
            self._appended.clear()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the event fires, and the agent would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._appended.wait()

    def _mqtt_sender(self, client: aiomqtt.Client) -> Send:
        """Publish to the telemetry topic, returning on the broker's PUBACK. On MQTT 5 a
        PUBACK saying "no matching subscribers" means nobody got the batch: it is sent
        again (same seq) after a growing delay, and stays in the outbox meanwhile."""
        topic = wire.telemetry_topic(self.plant.id)
        unheard = Backoff(UNHEARD_RETRY_MIN_S, UNHEARD_RETRY_MAX_S)

        async def send(batch: wire.TelemetryBatch, payload: bytes) -> None:
            if self.config.mqtt_version is not MqttVersion.V5:
                await client.publish(topic, payload, qos=1)
                return
            while await publish_with_reason(client, topic, payload) == NO_MATCHING_SUBSCRIBERS:
                await self._unheard(batch, unheard.next())
            unheard.reset()

        return send

    async def _unheard(self, batch: wire.TelemetryBatch, delay: float) -> None:
        self.counters.unheard_batches += 1
        count = self.counters.unheard_batches
        if count <= LOG_FIRST_UNHEARD or count % LOG_EVERY_UNHEARD == 0:
            log.error(
                "agent %s: the broker took telemetry batch %d (%d readings) but no one "
                "subscribes to %s (PUBACK 'no matching subscribers', #%d); kept in the "
                "outbox, sending it again in %.1fs. Is the platform running?",
                self.plant.id, batch.seq, len(batch.readings),
                wire.telemetry_topic(self.plant.id), count, delay,
            )  # fmt: skip
        await asyncio.sleep(delay)

    async def _report_status(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            await client.publish(
                wire.status_topic(self.plant.id), self._status("online"), qos=1, retain=True
            )

    def _status(self, state: str) -> bytes:
        counters = self.counters
        return wire.encode_status(
            wire.AgentStatus(
                self.plant.id,
                self.identity,
                state,
                {name: count for name, count in counters.as_dict().items()
                 if isinstance(count, int)},
                dict(counters.rejected),
                self.outbox_depth,
            )
        )  # fmt: skip


def _local_factors(plant: PlantConfig, factor_set: FactorSet | None) -> dict[str, ResolvedFactor]:
    """Factors for the local running CO2e; the platform's stored figures stay authoritative."""
    if factor_set is None:
        return {}
    library = FactorLibrary.builtin()
    factors = {}
    for meter in plant.meters:
        if meter.activity is not None:
            with contextlib.suppress(CarbonlinkError):
                factors[meter.id] = factor_set.resolve(
                    library, meter.activity, meter.unit, region=plant.grid_region
                )
    return factors


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()
