"""Sparkplug B (Eclipse Sparkplug 3.0) topics and payloads, as a host application reads them.

The protobuf classes are Eclipse Tahu's, generated from the specification's
``sparkplug_b.proto`` (Tahu 1.0.11, as the tahutils package ships them); this module turns
what they decode into plain values and every failure into :class:`RejectedReading`, as
the other decoders here do. The session rules
(births, aliases, sequence numbers, rebirth requests) are the agent's
(``carbonlink.agent``): they need state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from tahutils.tahu import sparkplug_b_pb2 as _pb

from carbonlink.errors import RejectedReading
from carbonlink.wire._bounds import MAX_PAYLOAD_BYTES
from carbonlink.wire._json import dumps, shown
from carbonlink.wire._reasons import Reason

SPARKPLUG_NAMESPACE: Final = "spBv1.0"
BD_SEQ: Final = "bdSeq"
REBIRTH: Final = "Node Control/Rebirth"
SEQ_MODULUS: Final = 256  # seq runs 0..255 and wraps


class SparkplugType(StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    group: str
    type: SparkplugType
    edge_node: str
    device: str | None = None


@dataclass(frozen=True, slots=True)
class SparkplugMetricValue:
    """One metric of a payload: named (births, some data) or aliased (data)."""

    name: str | None
    alias: int | None
    timestamp_ms: int | None
    value: float | None  # None: is_null, or not a number (see ``kind``)
    kind: str  # the Sparkplug datatype's name (Double, Int64, Boolean, String...)


@dataclass(frozen=True, slots=True)
class SparkplugPayload:
    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[SparkplugMetricValue, ...]

    def metric(self, name: str) -> SparkplugMetricValue | None:
        return next((m for m in self.metrics if m.name == name), None)


def sparkplug_subscription(group: str, edge_node: str) -> tuple[str, str]:
    """The topics of one edge node and its devices (node and device messages)."""
    root = f"{SPARKPLUG_NAMESPACE}/{group}"
    return f"{root}/+/{edge_node}", f"{root}/+/{edge_node}/+"


def state_topic(host_id: str) -> str:
    """Where a Sparkplug 3.0 host application publishes its STATE (retained)."""
    return f"{SPARKPLUG_NAMESPACE}/STATE/{host_id}"


def ncmd_topic(group: str, edge_node: str) -> str:
    return f"{SPARKPLUG_NAMESPACE}/{group}/{SparkplugType.NCMD}/{edge_node}"


def parse_sparkplug_topic(topic: str) -> SparkplugTopic:
    parts = topic.split("/")
    if parts[0] != SPARKPLUG_NAMESPACE or len(parts) not in (4, 5):
        raise RejectedReading(
            Reason.MISADDRESSED,
            f"not {SPARKPLUG_NAMESPACE}/GROUP/TYPE/EDGE_NODE[/DEVICE]: {shown(topic)}",
        )
    try:
        kind = SparkplugType(parts[2])
    except ValueError:
        raise RejectedReading(
            Reason.MISADDRESSED, f"{shown(parts[2])} is not a Sparkplug message type"
        ) from None
    device = parts[4] if len(parts) == 5 else None
    if (device is None) != kind.value.startswith("N"):
        raise RejectedReading(
            Reason.MISADDRESSED, f"a {kind} message with{'' if device else 'out'} a device id"
        )
    return SparkplugTopic(parts[1], kind, parts[3], device)


def decode_sparkplug(kind: SparkplugType, payload: bytes) -> SparkplugPayload:
    """A Sparkplug B payload's sequence number, timestamp and metrics, or a refusal
    (``malformed_protobuf``) that says what is wrong with it."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedReading(
            Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes, over {MAX_PAYLOAD_BYTES}"
        )
    if not payload and kind is SparkplugType.NDEATH:
        raise RejectedReading(Reason.MALFORMED_PROTOBUF, "empty NDEATH: it needs bdSeq")
    try:
        decoded = _pb.Payload.FromString(payload)
    except Exception as exc:  # protobuf's DecodeError, and whatever a hostile buffer raises
        raise RejectedReading(
            Reason.MALFORMED_PROTOBUF, f"not a Sparkplug B {kind} payload: {exc}"[:300]
        ) from None
    seq = decoded.seq if decoded.HasField("seq") else None
    if seq is not None and not 0 <= seq < SEQ_MODULUS:
        raise RejectedReading(Reason.SEQ_GAP, f"seq {seq} is outside 0..{SEQ_MODULUS - 1}")
    timestamp = decoded.timestamp if decoded.HasField("timestamp") else None
    return SparkplugPayload(timestamp, seq, tuple(_metric(m) for m in decoded.metrics))


# Sparkplug's signed integers travel as unsigned protobuf fields (two's complement).
_SIGNED_BITS: Final = {"Int8": 8, "Int16": 16, "Int32": 32, "Int64": 64}


def _metric(metric: Any) -> SparkplugMetricValue:
    try:
        kind = _pb.DataType.Name(metric.datatype)
    except ValueError:
        kind = f"datatype {metric.datatype}"
    field = metric.WhichOneof("value")
    raw = None if metric.is_null or field is None else getattr(metric, field)
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        bits = _SIGNED_BITS.get(kind)
        if bits is not None and isinstance(raw, int) and raw >= 2 ** (bits - 1):
            raw -= 2**bits
        value = float(raw)
    return SparkplugMetricValue(
        metric.name if metric.HasField("name") else None,
        metric.alias if metric.HasField("alias") else None,
        metric.timestamp if metric.HasField("timestamp") else None,
        value,
        kind,
    )


def encode_rebirth(timestamp_ms: int) -> bytes:
    """An NCMD asking the edge node for a new birth certificate (after a seq gap or data
    whose birth we never saw)."""
    command = _pb.Payload(timestamp=timestamp_ms)
    metric = command.metrics.add()
    metric.name = REBIRTH
    metric.timestamp = timestamp_ms
    metric.datatype = _pb.DataType.Value("Boolean")
    metric.boolean_value = True
    return bytes(command.SerializeToString())


def encode_state(online: bool, timestamp_ms: int) -> bytes:
    """A host application's STATE (Sparkplug 3.0: JSON, published retained)."""
    return dumps({"online": online, "timestamp": timestamp_ms})
