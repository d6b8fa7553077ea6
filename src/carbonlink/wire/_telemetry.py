"""Telemetry batches: what an agent forwards to the platform (internal to carbonlink).

The batch is columnar, one list per field, which decodes several times faster than a list
of objects. It is carbonlink's own format between its agent and its platform: devices and
other tools send meter readings (``_meter.py``), never this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from carbonlink.errors import RejectedReading
from carbonlink.wire._bounds import (
    MAX_INTERVAL_MS,
    MAX_PAYLOAD_BYTES,
    MAX_TELEMETRY_READINGS,
    MIN_INTERVAL_MS,
)
from carbonlink.wire._json import (
    WIRE_VERSION,
    integer,
    load_object,
    number,
    parse_timestamp,
    shown,
    text,
)
from carbonlink.wire._meter import QUALITIES
from carbonlink.wire._reasons import Reason
from carbonlink.wire._topics import Kind, address_of

TELEMETRY_COLUMNS: Final = ("meter", "ts", "value", "unit", "dur_ms", "q")


@dataclass(frozen=True, slots=True)
class Reading:
    """A validated interval reading, as the agent forwards it and the platform stores it:
    ``value`` used during the ``duration_ms`` that end at ``ts_ms``."""

    meter: str
    ts_ms: int
    value: float
    unit: str
    duration_ms: int
    quality: str = "measured"


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    plant: str
    agent: str
    seq: int
    sent_ms: int
    readings: tuple[Reading, ...]
    rejected: tuple[RejectedReading, ...] = field(default=())


def encode_telemetry(batch: TelemetryBatch) -> bytes:
    """Columnar: one list per field, which decodes far faster than a list of objects."""
    readings = batch.readings
    body = {
        "v": WIRE_VERSION,
        "plant": batch.plant,
        "agent": batch.agent,
        "seq": batch.seq,
        "sent_ms": batch.sent_ms,
        "readings": {
            "meter": [r.meter for r in readings],
            "ts": [r.ts_ms for r in readings],
            "value": [r.value for r in readings],
            "unit": [r.unit for r in readings],
            "dur_ms": [r.duration_ms for r in readings],
            "q": [r.quality for r in readings],
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


def fits(payload: bytes) -> bool:
    """Whether a receiver takes a payload this size (else send fewer readings at once)."""
    return len(payload) <= MAX_PAYLOAD_BYTES


@dataclass(frozen=True, slots=True)
class TelemetryColumns:
    """A telemetry message whose envelope is checked, its ``readings`` columns not yet:
    lists of equal length under each name of ``TELEMETRY_COLUMNS``, items unchecked."""

    plant: str
    agent: str
    seq: int
    sent_ms: int
    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.columns["ts"])


def decode_telemetry(topic: str, payload: bytes) -> TelemetryBatch:
    message = decode_telemetry_columns(topic, payload)
    readings, rejected = telemetry_readings(message.columns)
    return TelemetryBatch(
        message.plant, message.agent, message.seq, message.sent_ms, readings, rejected
    )


def decode_telemetry_columns(topic: str, payload: bytes) -> TelemetryColumns:
    """Check topic, JSON and envelope; raise RejectedReading if the message is unusable."""
    address = address_of(topic)
    if address.kind is not Kind.TELEMETRY:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"not a telemetry topic: {shown(topic)}")
    plant = address.plant
    data = load_object(payload)
    if data.get("plant") != plant:
        raise RejectedReading(
            Reason.TOPIC_MISMATCH,
            f"payload plant {shown(data.get('plant'))} but topic says {plant!r}",
        )
    agent = text(data.get("agent"), "`agent`")
    seq = integer(data.get("seq"), "`seq`")
    sent_ms = integer(data.get("sent_ms"), "`sent_ms`")
    columns = data.get("readings")
    if not isinstance(columns, dict) or any(
        not isinstance(columns.get(c), list) for c in TELEMETRY_COLUMNS
    ):
        raise RejectedReading(Reason.BAD_SCHEMA, f"`readings` needs lists {TELEMETRY_COLUMNS}")
    lengths = {len(columns[c]) for c in TELEMETRY_COLUMNS}
    if len(lengths) != 1:
        raise RejectedReading(Reason.BAD_SCHEMA, "`readings` columns differ in length")
    (length,) = lengths
    if length > MAX_TELEMETRY_READINGS:
        raise RejectedReading(
            Reason.PAYLOAD_TOO_LARGE, f"{length} readings, over {MAX_TELEMETRY_READINGS}"
        )
    return TelemetryColumns(plant, agent, seq, sent_ms, {c: columns[c] for c in TELEMETRY_COLUMNS})


def telemetry_readings(
    columns: dict[str, list[Any]],
) -> tuple[tuple[Reading, ...], tuple[RejectedReading, ...]]:
    """Check each row on its own: the good ones as readings, a refusal for each bad one."""
    readings: list[Reading] = []
    rejected: list[RejectedReading] = []
    for meter, ts, value, unit, dur_ms, quality in zip(
        *(columns[c] for c in TELEMETRY_COLUMNS), strict=True
    ):
        try:
            readings.append(telemetry_reading(meter, ts, value, unit, dur_ms, quality))
        except RejectedReading as exc:
            meter_id = meter if isinstance(meter, str) and len(meter) <= 63 else None
            rejected.append(RejectedReading(exc.reason, exc.detail, meter=meter_id))
    return tuple(readings), tuple(rejected)


def telemetry_reading(
    meter: object, ts: object, value: object, unit: object, dur_ms: object, quality: object
) -> Reading:
    """One row, checked against the wire's bounds (not yet against its meter)."""
    meter_id = text(meter, "meter")
    unit_text = text(unit, "unit")
    if isinstance(dur_ms, bool) or not isinstance(dur_ms, int) or dur_ms < MIN_INTERVAL_MS:
        raise RejectedReading(
            Reason.BAD_SCHEMA, f"dur_ms must be a positive integer: {shown(dur_ms)}"
        )
    if dur_ms > MAX_INTERVAL_MS:
        raise RejectedReading(
            Reason.IMPLAUSIBLE,
            f"dur_ms {shown(dur_ms)} is longer than any interval ({MAX_INTERVAL_MS} ms)",
        )
    if not isinstance(quality, str) or quality not in QUALITIES:
        raise RejectedReading(Reason.BAD_QUALITY, f"q={shown(quality)}")
    return Reading(
        meter_id, parse_timestamp(ts), number(value, "value"), unit_text, dur_ms, quality
    )
