"""The agent as a Sparkplug B host application for its plant's edge node.

Pure and synchronous, like the validator: :meth:`SparkplugHost.handle` takes one message
of the edge node (or of one of its devices) and returns the meter messages it carries,
in the plant's terms, the refusals, and whether to ask the node for a rebirth. The agent
(``_service.py``) sends those meter messages through the same validation, outbox and
accounting as any meter's.

Session rules (Eclipse Sparkplug 3.0):

- NBIRTH starts a session: its metrics name the aliases that data may use, its ``bdSeq``
  ties it to the NDEATH the broker will publish for it, and it resets the devices;
- DBIRTH does the same for one device; NDATA/DDATA carry readings by name or alias;
- every message but NDEATH carries ``seq``, one more (mod 256) than the node's last: a
  gap means something was lost, so the message is refused (``seq_gap``) and so is all
  data until a new birth, which the agent asks for (NCMD ``Node Control/Rebirth``);
- data without a birth (the agent started after it) is refused (``no_birth``) with a
  rebirth request too;
- NDEATH with the birth's ``bdSeq`` ends the session (a stale one is ignored); DDEATH
  ends one device's.

Births carry the metrics' current values; readings are taken from data messages only, so
a rebirth never repeats a reading. Metrics the plant file does not map to a meter are
ignored (an edge node publishes far more than meters).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

from carbonlink import wire
from carbonlink.config import MeterConfig, PlantConfig, SparkplugConfig
from carbonlink.errors import RejectedReading
from carbonlink.wire import Reason
from carbonlink.wire import SparkplugType as T

log = logging.getLogger(__name__)

REBIRTH_EVERY_MS: Final = 5_000
"""At most one rebirth request this often: a node may take a while to answer one."""


@dataclass(frozen=True, slots=True)
class SparkplugOutcome:
    messages: tuple[wire.MeterMessage, ...] = ()
    refused: tuple[RejectedReading, ...] = ()
    rebirth: bool = False


@dataclass(slots=True)
class _Birth:
    aliases: dict[int, str] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Node:
    online: bool = False
    birth: _Birth | None = None  # None: no valid birth (never seen, dead, or a seq gap)
    bd_seq: float | None = None
    seq: int | None = None
    devices: dict[str, _Birth] = field(default_factory=dict)
    offline_devices: set[str] = field(default_factory=set)
    rebirth_asked_ms: int | None = None
    births: int = 0
    ignored_metrics: int = 0


@dataclass(frozen=True, slots=True, eq=False)  # keyed by identity: one per mapped metric
class _Target:
    meter: MeterConfig
    unit: str


class SparkplugHost:
    """One plant's edge node, as its host application tracks it."""

    def __init__(self, plant: PlantConfig, config: SparkplugConfig) -> None:
        self._plant = plant
        self.config = config
        self._targets: dict[tuple[str | None, str], _Target] = {}
        for metric in config.metrics:
            meter = plant.meter(metric.meter)
            if meter is not None:  # the plant's validation guarantees it
                self._targets[(metric.device, metric.name)] = _Target(
                    meter, metric.unit or meter.unit
                )
        self._node = _Node()

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return wire.sparkplug_subscription(self.config.group, self.config.edge_node)

    def view(self) -> dict[str, object]:
        node = self._node
        return {
            "group": self.config.group,
            "edge_node": self.config.edge_node,
            "online": node.online,
            "born": node.birth is not None,
            "bd_seq": node.bd_seq,
            "births": node.births,
            "devices": {d: d not in node.offline_devices for d in sorted(node.devices)}
            | dict.fromkeys(sorted(node.offline_devices - set(node.devices)), False),
            "ignored_metrics": node.ignored_metrics,
        }

    def handle(self, topic: str, payload: bytes, now_ms: int) -> SparkplugOutcome:
        """What one message means; refusals come back, they are never raised."""
        try:
            address = wire.parse_sparkplug_topic(topic)
            if (address.group, address.edge_node) != (self.config.group, self.config.edge_node):
                raise RejectedReading(Reason.MISADDRESSED, f"not our edge node: {topic}")
            if address.type in (T.NCMD, T.DCMD):
                return SparkplugOutcome()  # commands to the node (ours among them)
            decoded = wire.decode_sparkplug(address.type, payload)
            return self._session(address, decoded, now_ms)
        except RejectedReading as exc:
            return SparkplugOutcome(refused=(exc,))

    # --- the session ------------------------------------------------------------------

    def _session(
        self, address: wire.SparkplugTopic, payload: wire.SparkplugPayload, now_ms: int
    ) -> SparkplugOutcome:
        node = self._node
        kind = address.type
        if kind is T.NBIRTH:
            bd_seq = payload.metric(wire.BD_SEQ)
            node.birth = _birth(payload)
            node.bd_seq = None if bd_seq is None else bd_seq.value
            node.seq = payload.seq
            node.devices.clear()
            node.offline_devices.clear()
            node.online = True
            node.rebirth_asked_ms = None
            node.births += 1
            self._note_unmapped(None, node.birth)
            return SparkplugOutcome()
        if kind is T.NDEATH:
            bd_seq = payload.metric(wire.BD_SEQ)
            if bd_seq is None or bd_seq.value != node.bd_seq:
                # The will of an earlier session, delivered late: this one lives on.
                log.info("sparkplug %s: NDEATH of another session (bdSeq %s, ours %s)",
                         address.edge_node, None if bd_seq is None else bd_seq.value,
                         node.bd_seq)  # fmt: skip
                return SparkplugOutcome()
            node.online = False
            node.birth = None
            node.offline_devices.update(node.devices)
            node.devices.clear()
            return SparkplugOutcome()
        if node.birth is None:
            return self._refuse_until_birth(
                now_ms, Reason.NO_BIRTH, f"{kind} before the node's NBIRTH: rebirth requested"
            )
        gap = self._seq_gap(payload.seq)
        if gap is not None:
            node.birth = None  # aliases and values are in doubt until the next birth
            return self._refuse_until_birth(now_ms, Reason.SEQ_GAP, gap)
        if kind is T.DBIRTH:
            assert address.device is not None  # parse_sparkplug_topic checks it
            node.devices[address.device] = _birth(payload)
            node.offline_devices.discard(address.device)
            self._note_unmapped(address.device, node.devices[address.device])
            return SparkplugOutcome()
        if kind is T.DDEATH:
            assert address.device is not None
            node.devices.pop(address.device, None)
            node.offline_devices.add(address.device)
            return SparkplugOutcome()
        birth = node.birth
        if address.device is not None:
            device_birth = node.devices.get(address.device)
            if device_birth is None:
                return self._refuse_until_birth(
                    now_ms, Reason.NO_BIRTH,
                    f"DDATA of device {address.device!r} before its DBIRTH: rebirth requested",
                )  # fmt: skip
            birth = device_birth
        return self._readings(address.device, birth, payload, now_ms)

    def _seq_gap(self, seq: int | None) -> str | None:
        node = self._node
        if seq is None:
            return "no seq: every message but NDEATH carries one"
        expected = None if node.seq is None else (node.seq + 1) % wire.SEQ_MODULUS
        node.seq = seq
        if expected is not None and seq != expected:
            return f"seq {seq}, expected {expected}: messages were lost; rebirth requested"
        return None

    def _refuse_until_birth(self, now_ms: int, reason: str, detail: str) -> SparkplugOutcome:
        node = self._node
        ask = node.rebirth_asked_ms is None or now_ms - node.rebirth_asked_ms >= REBIRTH_EVERY_MS
        if ask:
            node.rebirth_asked_ms = now_ms
        return SparkplugOutcome(refused=(RejectedReading(reason, detail),), rebirth=ask)

    def _readings(
        self, device: str | None, birth: _Birth, payload: wire.SparkplugPayload, now_ms: int
    ) -> SparkplugOutcome:
        samples: dict[_Target, list[wire.Sample]] = defaultdict(list)
        refused: list[RejectedReading] = []
        for metric in payload.metrics:
            name = metric.name
            if name is None and metric.alias is not None:
                name = birth.aliases.get(metric.alias)
            if name is None or name not in birth.names:
                what = f"alias {metric.alias}" if metric.name is None else repr(metric.name)
                refused.append(RejectedReading(
                    Reason.UNKNOWN_METRIC,
                    f"metric {what} is not in the {'DBIRTH' if device else 'NBIRTH'}",
                ))  # fmt: skip
                continue
            target = self._targets.get((device, name))
            if target is None:
                self._node.ignored_metrics += 1
                continue
            meter = target.meter.id
            if metric.value is None:
                if metric.kind in _NUMERIC_KINDS:
                    continue  # is_null: the node has no value now, and says so
                refused.append(RejectedReading(
                    Reason.BAD_SCHEMA, f"metric {name!r} is {metric.kind}, not a number",
                    meter=meter,
                ))  # fmt: skip
                continue
            if not math.isfinite(metric.value):
                refused.append(RejectedReading(
                    Reason.NOT_FINITE, f"metric {name!r} is {metric.value}", meter=meter
                ))  # fmt: skip
                continue
            ts_ms = metric.timestamp_ms or payload.timestamp_ms or now_ms
            samples[target].append(wire.Sample(ts_ms, metric.value))
        messages = tuple(
            wire.MeterMessage(self._plant.id, target.meter.id, target.unit,
                              target.meter.reading.value, None, tuple(found))
            for target, found in samples.items()
        )  # fmt: skip
        return SparkplugOutcome(messages, tuple(refused))

    def _note_unmapped(self, device: str | None, birth: _Birth) -> None:
        missing = [
            name for (dev, name) in self._targets if dev == device and name not in birth.names
        ]
        if missing:
            log.warning("sparkplug %s/%s: the birth has no metric %s that the plant file maps",
                        self.config.edge_node, device or "node", ", ".join(missing))  # fmt: skip


_NUMERIC_KINDS: Final = frozenset(
    {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float", "Double"}
)


def _birth(payload: wire.SparkplugPayload) -> _Birth:
    birth = _Birth()
    for metric in payload.metrics:
        if metric.name is None:
            continue
        birth.names.add(metric.name)
        if metric.alias is not None:
            birth.aliases[metric.alias] = metric.name
    return birth
