"""The factory-side agent: meters -> validation -> durable outbox -> telemetry batches.

Delivery: a meter message is acknowledged to the broker only after its good readings
are committed to the outbox, and readings leave the outbox only after the broker has
acknowledged the telemetry batch carrying them (QoS 1 PUBACK). A crash anywhere in
between makes something be sent again, never lost; the platform stores by reading
identity, so a repeat is stored once.

What each meter sent lately (the validator's state) is kept in the outbox file too, in
the same transaction as the readings, so duplicates, conflicting values and overlapping
intervals are refused after a restart as before it.

No message can stop the agent: whatever goes wrong while handling one is refused as
``internal_error`` (logged, counted, dead-lettered) and the message is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiomqtt

from carbonlink import wire
from carbonlink.agent._jetstream import EPOCH_KEY, JetStreamUplink, Send, new_epoch
from carbonlink.agent._validation import MeterValidator, Remembered, Verdict
from carbonlink.config import AgentConfig, JetStreamConfig, OutboxFullPolicy, PlantConfig, Uplink
from carbonlink.core.clock import wall_clock_ms
from carbonlink.emissions import FactorLibrary, FactorSet, ResolvedFactor
from carbonlink.errors import CarbonlinkError, RejectedReading
from carbonlink.mqtt.client import (
    BrokerAddress,
    acknowledge,
    make_client,
    manual_acks,
)
from carbonlink.mqtt.reconnect import keep_connected
from carbonlink.mqtt.rejections import Rejections
from carbonlink.storage.queue import DurableQueue, DurableQueueError
from carbonlink.wire import Reason

log = logging.getLogger(__name__)

STATUS_INTERVAL_S: Final = 10.0
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

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "baselines": self.baselines,
            "forwarded": self.forwarded,
            "dropped_oldest": self.dropped_oldest,
            "rejected": dict(self.rejected),
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
        }

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                if self._uplink is not None:  # forwards whether or not MQTT is connected
                    tasks.create_task(self._uplink.run(self._forward))
                await keep_connected(
                    self._session, what=f"agent {self.plant.id}", log=log,
                    lost=self.connected.clear,
                )  # fmt: skip
        finally:
            self.connected.clear()
            self._outbox.close()

    async def _session(self, connected: Callable[[], None]) -> None:
        will = aiomqtt.Will(
            wire.status_topic(self.plant.id), self._status("offline"), qos=1, retain=True
        )
        client = make_client(self._broker, self.identity, clean_session=False, will=will)
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
                tasks.create_task(self._forward(_mqtt_sender(client, self.plant.id)))
            tasks.create_task(self._rejections.publish(client))
            tasks.create_task(self._report_status(client))
            async for message in client.messages:
                self.handle(str(message.topic), _payload_bytes(message.payload))
                acknowledge(client, message)

    def handle(self, topic: str, payload: bytes) -> None:
        """Validate one meter message; commit the good readings, dead-letter the rest.

        Never raises: anything unexpected is refused as ``internal_error``."""
        received_before = self.counters.received
        try:
            self._handle(topic, payload)
        except Exception as exc:
            log.exception("agent %s: failed on a message to %s", self.plant.id, wire.shown(topic))
            detail = f"{type(exc).__name__}: {wire.shown(str(exc))}"
            if self.counters.received == received_before:
                self.counters.received += 1  # counted as one refused reading
            self._reject(topic, RejectedReading(wire.Reason.INTERNAL_ERROR, detail), payload)

    def _handle(self, topic: str, payload: bytes) -> None:
        refused_before = self.counters.rejected.total()
        accepted_before = self.counters.accepted
        try:
            message = wire.decode_meter_message(topic, payload)
            verdict = self._validator.check(message, commit=False)
        except RejectedReading as exc:
            self.counters.received += 1  # an unreadable message: one refused reading
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
        for error in verdict.rejected:
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


def _mqtt_sender(client: aiomqtt.Client, plant: str) -> Send:
    topic = wire.telemetry_topic(plant)

    async def send(_batch: wire.TelemetryBatch, payload: bytes) -> None:
        await client.publish(topic, payload, qos=1)  # returns on the broker's PUBACK

    return send


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
