"""The MQTT wire format, version 1: topics and JSON payloads (see docs/wire-format.md).

Decoders never raise on a bad *sample*: they return the good ones and a rejection (with
a stable reason code) for each bad one, so one broken value never costs its neighbours.
A payload that cannot be read at all raises :class:`RejectedReading`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from carbonlink._exceptions import RejectedReading

WIRE_VERSION: Final = 1
TOPIC_ROOT: Final = f"carbonlink/v{WIRE_VERSION}"
MAX_PAYLOAD_BYTES: Final = 1_048_576
MAX_SAMPLES_PER_MESSAGE: Final = 10_000

QUALITIES: Final = frozenset({"measured", "estimated"})
MAX_EPOCH_MS: Final = 32_503_680_000_000  # year 3000 in ms: seconds sent as ms stay out


class Reason:
    """Stable rejection codes; counted, logged and dead-lettered under these names."""

    MALFORMED_JSON = "malformed_json"
    BAD_SCHEMA = "bad_schema"
    UNSUPPORTED_VERSION = "unsupported_version"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_PLANT = "unknown_plant"
    UNKNOWN_METER = "unknown_meter"
    WRONG_UNIT = "wrong_unit"
    WRONG_KIND = "wrong_kind"
    BAD_TIMESTAMP = "bad_timestamp"
    NOT_FINITE = "not_finite"
    NEGATIVE = "negative"
    IMPLAUSIBLE = "implausible"
    CLOCK_SKEW = "clock_skew"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    COUNTER_RESET = "counter_reset"
    BAD_QUALITY = "bad_quality"


# --- topics -----------------------------------------------------------------------------


def meter_topic(plant: str, meter: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/meters/{meter}"


def meter_subscription(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/meters/+"


def telemetry_topic(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/telemetry"


TELEMETRY_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/telemetry"
STATUS_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/status"


def status_topic(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/status"


def deadletter_topic(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/deadletter"


def directive_topic(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/directives"


def parse_topic(topic: str) -> tuple[str, str, str | None]:
    """Split ``carbonlink/v1/PLANT/KIND[/METER]`` into (plant, kind, meter)."""
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"not a carbonlink v1 topic: {topic!r}")
    plant, kind = parts[2], parts[3]
    meter = parts[4] if kind == "meters" and len(parts) == 5 else None
    if kind == "meters" and meter is None:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"meter topic without meter id: {topic!r}")
    return plant, kind, meter


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One meter sample as sent by a meter: interval amount or counter register."""

    ts_ms: int
    value: float
    quality: str = "measured"
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MeterMessage:
    plant: str
    meter: str
    unit: str
    kind: str
    seq: int | None
    samples: tuple[Sample, ...]
    rejected: tuple[RejectedReading, ...] = ()


@dataclass(frozen=True, slots=True)
class Reading:
    """A validated interval reading, as the agent forwards it and the platform stores it."""

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


def parse_timestamp(raw: object) -> int:
    """RFC 3339 text with a UTC offset, or integer Unix epoch milliseconds."""
    if isinstance(raw, bool):
        raise RejectedReading(Reason.BAD_TIMESTAMP, "timestamp is a boolean")
    if isinstance(raw, int):
        if not 0 <= raw < MAX_EPOCH_MS:
            raise RejectedReading(Reason.BAD_TIMESTAMP, f"epoch ms out of range: {raw}")
        return raw
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise RejectedReading(Reason.BAD_TIMESTAMP, f"not RFC 3339: {raw!r}") from None
        if moment.tzinfo is None:
            raise RejectedReading(Reason.BAD_TIMESTAMP, f"timestamp without UTC offset: {raw!r}")
        return round(moment.timestamp() * 1000)
    raise RejectedReading(Reason.BAD_TIMESTAMP, f"timestamp must be text or integer ms: {raw!r}")


def format_timestamp(ts_ms: int) -> str:
    from datetime import UTC

    return (
        datetime.fromtimestamp(ts_ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _number(raw: object, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise RejectedReading(Reason.BAD_SCHEMA, f"{what} must be a number, got {raw!r}")
    try:
        value = float(raw)
    except OverflowError:  # an integer beyond any float
        raise RejectedReading(Reason.NOT_FINITE, f"{what} is too large: {raw!r}") from None
    if not math.isfinite(value):
        raise RejectedReading(Reason.NOT_FINITE, f"{what} is {raw!r}")
    return value


def _parse_constant(name: str) -> float:
    return float(name.lower())


def _load_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedReading(Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes")
    try:
        # orjson decodes telemetry 3-5x faster than json (docs/performance.md). It is
        # strict RFC 8259, so whatever it refuses gets a second chance below: json also
        # reads NaN/Infinity (turned into floats here so that one sample is rejected as
        # not_finite, not the whole message) and integers beyond 64 bits.
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(payload, parse_constant=_parse_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RejectedReading(Reason.MALFORMED_JSON, str(exc)[:200]) from None
    if not isinstance(data, dict):
        raise RejectedReading(Reason.BAD_SCHEMA, "payload must be a JSON object")
    version = data.get("v")
    if version != WIRE_VERSION:
        raise RejectedReading(Reason.UNSUPPORTED_VERSION, f"v={version!r}, expected {WIRE_VERSION}")
    return data


# --- meter -> agent -------------------------------------------------------------------


def decode_meter_message(topic: str, payload: bytes) -> MeterMessage:
    plant, kind, meter = parse_topic(topic)
    if kind != "meters" or meter is None:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"not a meter topic: {topic!r}")
    data = _load_object(payload)
    for key, expected in (("plant", plant), ("meter", meter)):
        if key in data and data[key] != expected:
            raise RejectedReading(
                Reason.TOPIC_MISMATCH, f"payload {key} {data[key]!r} but topic says {expected!r}"
            )
    unit = data.get("unit")
    if not isinstance(unit, str) or not unit:
        raise RejectedReading(Reason.BAD_SCHEMA, "`unit` must be a non-empty string", meter=meter)
    reading_kind = data.get("kind", "interval")
    if reading_kind not in ("interval", "counter"):
        raise RejectedReading(Reason.BAD_SCHEMA, f"kind {reading_kind!r}", meter=meter)
    seq = data.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise RejectedReading(Reason.BAD_SCHEMA, "`seq` must be an integer", meter=meter)
    raw_samples = data.get("samples")
    if raw_samples is None:
        if "value" not in data:
            raise RejectedReading(Reason.BAD_SCHEMA, "need `samples` or `ts`+`value`", meter=meter)
        raw_samples = [{k: data[k] for k in ("ts", "value", "q", "dur") if k in data}]
    if not isinstance(raw_samples, list) or not raw_samples:
        raise RejectedReading(Reason.BAD_SCHEMA, "`samples` must be a non-empty list", meter=meter)
    if len(raw_samples) > MAX_SAMPLES_PER_MESSAGE:
        raise RejectedReading(Reason.PAYLOAD_TOO_LARGE, f"{len(raw_samples)} samples", meter=meter)
    samples: list[Sample] = []
    rejected: list[RejectedReading] = []
    for index, raw in enumerate(raw_samples):
        try:
            samples.append(_decode_sample(raw))
        except RejectedReading as exc:
            rejected.append(
                RejectedReading(exc.reason, f"samples[{index}]: {exc.detail}", meter=meter)
            )
    return MeterMessage(plant, meter, unit, reading_kind, seq, tuple(samples), tuple(rejected))


def _decode_sample(raw: object) -> Sample:
    if not isinstance(raw, dict):
        raise RejectedReading(Reason.BAD_SCHEMA, "sample must be an object")
    if "ts" not in raw or "value" not in raw:
        raise RejectedReading(Reason.BAD_SCHEMA, "sample needs `ts` and `value`")
    quality = raw.get("q", "measured")
    # isinstance first: an unhashable `q` (a list) would make the set lookup raise.
    if not isinstance(quality, str) or quality not in QUALITIES:
        raise RejectedReading(
            Reason.BAD_QUALITY, f"q={quality!r}, expected one of {sorted(QUALITIES)}"
        )
    duration = raw.get("dur")
    duration_ms = None
    if duration is not None:
        seconds = _number(duration, "dur")
        if seconds <= 0:
            raise RejectedReading(Reason.BAD_SCHEMA, f"dur must be > 0 s, got {duration!r}")
        duration_ms = round(seconds * 1000)
    return Sample(parse_timestamp(raw["ts"]), _number(raw["value"], "value"), quality, duration_ms)


def encode_meter_message(
    plant: str, meter: str, unit: str, kind: str, samples: list[Sample], seq: int | None = None
) -> bytes:
    body: dict[str, Any] = {"v": WIRE_VERSION, "unit": unit, "kind": kind}
    if seq is not None:
        body["seq"] = seq
    body["samples"] = [
        {"ts": s.ts_ms, "value": s.value, "q": s.quality}
        | ({"dur": s.duration_ms / 1000} if s.duration_ms is not None else {})
        for s in samples
    ]
    return json.dumps(body, separators=(",", ":"), allow_nan=True).encode()


# --- agent -> platform ----------------------------------------------------------------

TELEMETRY_COLUMNS: Final = ("meter", "ts", "value", "unit", "dur_ms", "q")


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
    plant, kind, _ = parse_topic(topic)
    if kind != "telemetry":
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"not a telemetry topic: {topic!r}")
    data = _load_object(payload)
    if data.get("plant") != plant:
        raise RejectedReading(
            Reason.TOPIC_MISMATCH, f"payload plant {data.get('plant')!r} but topic says {plant!r}"
        )
    agent, seq, sent_ms = data.get("agent"), data.get("seq"), data.get("sent_ms")
    if not isinstance(agent, str) or not isinstance(seq, int) or not isinstance(sent_ms, int):
        raise RejectedReading(Reason.BAD_SCHEMA, "need string `agent`, integer `seq` and `sent_ms`")
    columns = data.get("readings")
    if not isinstance(columns, dict) or any(
        not isinstance(columns.get(c), list) for c in TELEMETRY_COLUMNS
    ):
        raise RejectedReading(Reason.BAD_SCHEMA, f"`readings` needs lists {TELEMETRY_COLUMNS}")
    lengths = {len(columns[c]) for c in TELEMETRY_COLUMNS}
    if len(lengths) != 1:
        raise RejectedReading(Reason.BAD_SCHEMA, "`readings` columns differ in length")
    return TelemetryColumns(plant, agent, seq, sent_ms, columns)


def telemetry_readings(
    columns: dict[str, list[Any]],
) -> tuple[tuple[Reading, ...], tuple[RejectedReading, ...]]:
    """Check each row on its own: the good ones as readings, a rejection for each bad one."""
    readings: list[Reading] = []
    rejected: list[RejectedReading] = []
    for meter, ts, value, unit, dur_ms, quality in zip(
        *(columns[c] for c in TELEMETRY_COLUMNS), strict=True
    ):
        try:
            readings.append(_telemetry_reading(meter, ts, value, unit, dur_ms, quality))
        except RejectedReading as exc:
            meter_id = meter if isinstance(meter, str) else None
            rejected.append(RejectedReading(exc.reason, exc.detail, meter=meter_id))
    return tuple(readings), tuple(rejected)


def _telemetry_reading(
    meter: object, ts: object, value: object, unit: object, dur_ms: object, quality: object
) -> Reading:
    if not isinstance(meter, str) or not isinstance(unit, str):
        raise RejectedReading(Reason.BAD_SCHEMA, "meter and unit must be strings")
    if isinstance(dur_ms, bool) or not isinstance(dur_ms, int) or dur_ms <= 0:
        raise RejectedReading(Reason.BAD_SCHEMA, f"dur_ms must be a positive integer: {dur_ms!r}")
    if not isinstance(quality, str) or quality not in QUALITIES:
        raise RejectedReading(Reason.BAD_QUALITY, f"q={quality!r}")
    return Reading(meter, parse_timestamp(ts), _number(value, "value"), unit, dur_ms, str(quality))


def encode_rejection(stage: str, topic: str, error: RejectedReading, payload: bytes) -> bytes:
    """Dead-letter body: why, where, and the start of what was refused."""
    body = {
        "v": WIRE_VERSION,
        "stage": stage,
        "reason": error.reason,
        "detail": error.detail,
        "meter": error.meter,
        "topic": topic,
        "payload": payload[:2048].decode("utf-8", errors="replace"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


# --- coordination -> plant ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Directive:
    """What coordination asks of a plant from ``effective_ms`` on (retained, latest wins).

    Efforts are the E_M and E_P of the coordination model (docs/coordination.md);
    ``sigma`` is its stage multiplier (1 outside advanced symbiosis).
    """

    plant: str
    issued_ms: int
    effective_ms: int
    stage: str
    effort_firm: float
    effort_platform: float
    sigma: float = 1.0
    subsidy_rate_firm: float = 0.0
    subsidy_rate_platform: float = 0.0
    carbon_price: float = 0.0
    policy: str = ""


_DIRECTIVE_NUMBERS: Final = (
    "effort_firm",
    "effort_platform",
    "sigma",
    "subsidy_rate_firm",
    "subsidy_rate_platform",
    "carbon_price",
)


def encode_directive(directive: Directive) -> bytes:
    body = {"v": WIRE_VERSION} | {
        name: getattr(directive, name) for name in Directive.__dataclass_fields__
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_directive(topic: str, payload: bytes) -> Directive:
    plant, kind, _ = parse_topic(topic)
    if kind != "directives":
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"not a directives topic: {topic!r}")
    data = _load_object(payload)
    if data.get("plant") != plant:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"directive for {data.get('plant')!r}")
    numbers = {}
    for name in _DIRECTIVE_NUMBERS:
        value = _number(data.get(name, 1.0 if name == "sigma" else 0.0), name)
        if value < 0:
            raise RejectedReading(Reason.NEGATIVE, f"{name} = {value} < 0")
        numbers[name] = value
    stage, policy = data.get("stage"), data.get("policy", "")
    if not isinstance(stage, str) or not isinstance(policy, str):
        raise RejectedReading(Reason.BAD_SCHEMA, "`stage` and `policy` must be strings")
    return Directive(
        plant=plant,
        issued_ms=parse_timestamp(data.get("issued_ms")),
        effective_ms=parse_timestamp(data.get("effective_ms")),
        stage=stage,
        policy=policy,
        **numbers,
    )
