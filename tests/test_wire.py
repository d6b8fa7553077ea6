"""Wire format v1 decoding: good samples survive bad neighbours, reasons are exact."""

from __future__ import annotations

import json

import pytest

from carbonlink import wire
from carbonlink.errors import RejectedReading
from carbonlink.wire import Reason

TOPIC = "carbonlink/v1/plant-a/meters/coal"


def payload(**body: object) -> bytes:
    return json.dumps({"v": 1, "unit": "t", **body}).encode()


def test_samples_list_with_rfc3339_and_epoch_ms() -> None:
    message = wire.decode_meter_message(
        TOPIC,
        payload(
            samples=[
                {"ts": "2026-11-23T08:00:00Z", "value": 1.5},
                {"ts": 1795420860000, "value": 2},
            ]
        ),
    )
    assert (message.plant, message.meter, message.unit, message.kind) == (
        "plant-a",
        "coal",
        "t",
        "interval",
    )
    assert [s.ts_ms for s in message.samples] == [1795420800000, 1795420860000]
    assert [s.value for s in message.samples] == [1.5, 2.0]
    assert message.rejected == ()


def test_flat_single_sample_and_offset_timestamp() -> None:
    message = wire.decode_meter_message(TOPIC, payload(ts="2026-11-23T16:00:00+08:00", value=3))
    assert message.samples[0].ts_ms == 1795420800000


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        ({"ts": 1795420800000, "value": "NaN-as-text"}, Reason.BAD_SCHEMA),
        ({"ts": "2026-11-23T08:00:00", "value": 1}, Reason.BAD_TIMESTAMP),
        ({"ts": "yesterday", "value": 1}, Reason.BAD_TIMESTAMP),
        ({"ts": True, "value": 1}, Reason.BAD_TIMESTAMP),
        ({"value": 1}, Reason.BAD_SCHEMA),
        ({"ts": 1795420800000, "value": 1, "q": "guessed"}, Reason.BAD_QUALITY),
        ({"ts": 1795420800000, "value": 1, "dur": 0}, Reason.BAD_SCHEMA),
        ("not an object", Reason.BAD_SCHEMA),
    ],
)
def test_bad_sample_rejected_with_reason_neighbours_kept(sample: object, reason: str) -> None:
    good = {"ts": 1795420860000, "value": 1.0}
    message = wire.decode_meter_message(
        TOPIC, payload(samples=[good, sample, good | {"ts": 1795420920000}])
    )
    assert [s.ts_ms for s in message.samples] == [1795420860000, 1795420920000]
    assert [r.reason for r in message.rejected] == [reason]
    assert message.rejected[0].detail.startswith("samples[1]")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_rejected(literal: str) -> None:
    raw = (
        b'{"v":1,"unit":"t","samples":'
        b'[{"ts":1795420800000,"value":%s},{"ts":1795420860000,"value":1}]}'
    )
    message = wire.decode_meter_message(TOPIC, raw % literal.encode())
    assert [r.reason for r in message.rejected] == [Reason.NOT_FINITE]
    assert len(message.samples) == 1


@pytest.mark.parametrize(
    ("topic", "raw", "reason"),
    [
        (TOPIC, b"{not json", Reason.MALFORMED_JSON),
        (TOPIC, b"\xff\xfe", Reason.MALFORMED_JSON),
        (TOPIC, b"[1,2]", Reason.BAD_SCHEMA),
        (TOPIC, b'{"v":2,"unit":"t","ts":1,"value":1}', Reason.UNSUPPORTED_VERSION),
        (TOPIC, b'{"v":1,"ts":1,"value":1}', Reason.BAD_SCHEMA),
        (TOPIC, b'{"v":1,"unit":"t","kind":"gauge","ts":1,"value":1}', Reason.BAD_SCHEMA),
        (TOPIC, b'{"v":1,"unit":"t","samples":[]}', Reason.BAD_SCHEMA),
        (TOPIC, b'{"v":1,"unit":"t","plant":"other","ts":1,"value":1}', Reason.TOPIC_MISMATCH),
        ("carbonlink/v1/plant-a/meters", b'{"v":1}', Reason.MISADDRESSED),
        ("elsewhere/plant-a/meters/coal", b'{"v":1}', Reason.TOPIC_MISMATCH),
    ],
)
def test_unreadable_messages_raise_with_reason(topic: str, raw: bytes, reason: str) -> None:
    with pytest.raises(RejectedReading) as caught:
        wire.decode_meter_message(topic, raw)
    assert caught.value.reason == reason


def test_oversized_payload_rejected() -> None:
    with pytest.raises(RejectedReading) as caught:
        wire.decode_meter_message(TOPIC, b" " * (wire.MAX_PAYLOAD_BYTES + 1))
    assert caught.value.reason == Reason.PAYLOAD_TOO_LARGE


def test_encode_decode_meter_round_trip() -> None:
    samples = [
        wire.Sample(1795420800000, 1.25, "estimated", 60000),
        wire.Sample(1795420860000, 0.0),
    ]
    raw = wire.encode_meter_message("plant-a", "coal", "t", "interval", samples, seq=7)
    message = wire.decode_meter_message(TOPIC, raw)
    assert message.samples == tuple(samples)
    assert message.seq == 7


def test_telemetry_round_trip_and_bad_rows_isolated() -> None:
    readings = (
        wire.Reading("coal", 1795420800000, 1.5, "t", 60000),
        wire.Reading("grid", 1795420800000, 400.0, "kWh", 60000, "estimated"),
    )
    batch = wire.TelemetryBatch("plant-a", "agent-plant-a", 3, 1795420801000, readings)
    topic = wire.telemetry_topic("plant-a")
    assert wire.decode_telemetry(topic, wire.encode_telemetry(batch)) == batch

    body = json.loads(wire.encode_telemetry(batch))
    body["readings"]["value"][0] = None
    decoded = wire.decode_telemetry(topic, json.dumps(body).encode())
    assert decoded.readings == readings[1:]
    assert [(r.reason, r.meter) for r in decoded.rejected] == [(Reason.BAD_SCHEMA, "coal")]


def test_telemetry_plant_must_match_topic() -> None:
    batch = wire.TelemetryBatch("plant-a", "agent-plant-a", 1, 0, ())
    with pytest.raises(RejectedReading) as caught:
        wire.decode_telemetry(wire.telemetry_topic("plant-b"), wire.encode_telemetry(batch))
    assert caught.value.reason == Reason.TOPIC_MISMATCH


def test_directive_round_trip_and_validation() -> None:
    directive = wire.Directive(
        "plant-a", 1795420800000, 1795420860000, "advanced_symbiosis", 4.58, 2.93, sigma=1.25,
        carbon_price=80.0, policy="stage3",
    )  # fmt: skip
    topic = wire.directive_topic("plant-a")
    assert wire.decode_directive(topic, wire.encode_directive(directive)) == directive
    body = json.loads(wire.encode_directive(directive))
    body["effort_firm"] = -1
    with pytest.raises(RejectedReading) as caught:
        wire.decode_directive(topic, json.dumps(body).encode())
    assert caught.value.reason == Reason.NEGATIVE
