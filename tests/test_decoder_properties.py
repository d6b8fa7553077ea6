"""Property tests on every decoder (hypothesis): whatever arrives, a decoder returns a
value or raises RejectedReading with a known reason, never anything else; and what the
encoders write decodes back to the same thing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonlink import wire
from carbonlink.agent._validation import MeterValidator
from carbonlink.config import AgentConfig, load_config
from carbonlink.coordination import CoordinationParams
from carbonlink.core.yamlfiles import validate_model
from carbonlink.errors import ConfigError, RejectedReading
from carbonlink.platform import Ingestor
from tests.configs import REPO_CONFIG

REASONS: Final = {v for k, v in vars(wire.Reason).items() if not k.startswith("_")}
NOW_MS: Final = 1_795_420_800_000
PLANT: Final = "cement-01"
EXAMPLES: Final = 200
PROPERTY = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
# Objects that look nearly right: the real keys, any values.
meter_keys = st.sampled_from(
    ["v", "unit", "kind", "seq", "ts", "value", "samples", "q", "dur", "plant", "meter"]
)
near_meter_messages = st.dictionaries(meter_keys, json_values, max_size=8)
telemetry_keys = st.sampled_from(["v", "plant", "agent", "seq", "sent_ms", "readings"])
near_telemetry = st.dictionaries(telemetry_keys, json_values, max_size=6)
topics = st.text(max_size=40) | st.builds(
    lambda plant, kind, rest: f"carbonlink/v1/{plant}/{kind}{rest}",
    st.text(max_size=12), st.sampled_from(["meters", "telemetry", "directives", "status"]),
    st.sampled_from(["", "/kiln-coal", "/x/y"]),
)  # fmt: skip


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _refused_properly(call: Any) -> object:
    try:
        return call()
    except RejectedReading as exc:
        refused = exc
    assert refused.reason in REASONS, refused.reason
    assert isinstance(refused.detail, str)
    return refused


@PROPERTY
@given(st.text(max_size=40) | st.integers() | st.floats() | st.none() | st.booleans())
def test_parse_timestamp_returns_ms_or_refuses(raw: object) -> None:
    result = _refused_properly(lambda: wire.parse_timestamp(raw))
    assert isinstance(result, int | RejectedReading)


@PROPERTY
@given(st.integers(min_value=wire.MIN_EPOCH_MS, max_value=wire.MAX_EPOCH_MS - 1))
def test_timestamps_round_trip_through_text(ts_ms: int) -> None:
    assert wire.parse_timestamp(wire.format_timestamp(ts_ms)) == ts_ms


@PROPERTY
@given(topics)
def test_parse_topic_parses_or_refuses(topic: str) -> None:
    result = _refused_properly(lambda: wire.parse_topic(topic))
    if isinstance(result, RejectedReading):
        assert result.reason in (wire.Reason.TOPIC_MISMATCH, wire.Reason.MISADDRESSED)


@PROPERTY
@given(topics, st.binary(max_size=200) | near_meter_messages.map(_dumps) | json_values.map(_dumps))
def test_meter_decoder_never_fails_otherwise(topic: str, payload: bytes) -> None:
    result = _refused_properly(lambda: wire.decode_meter_message(topic, payload))
    if isinstance(result, wire.MeterMessage):
        for error in result.rejected:
            assert error.reason in REASONS
        for sample in result.samples:
            assert math.isfinite(sample.value)


@PROPERTY
@given(near_meter_messages.map(lambda d: {"v": 1, "unit": "t", **d}).map(_dumps))
def test_agent_checks_never_fail_otherwise(payload: bytes) -> None:
    plant = SETTINGS.plant(PLANT)
    validator = MeterValidator(plant, AgentConfig(), now_ms=lambda: NOW_MS)
    message = _refused_properly(
        lambda: wire.decode_meter_message(wire.meter_topic(PLANT, "kiln-coal"), payload)
    )
    if isinstance(message, wire.MeterMessage):
        verdict = validator.check(message)
        assert all(r.reason in REASONS for r in verdict.rejected)
        assert all(math.isfinite(r.value) and r.value >= 0 for r in verdict.accepted)


samples = st.lists(
    st.tuples(
        st.integers(min_value=NOW_MS - 86_400_000, max_value=NOW_MS),
        st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
    ),
    min_size=1,
    max_size=20,
    unique_by=lambda s: s[0],
)


@PROPERTY
@given(samples, st.sampled_from(["interval", "counter"]), st.none() | st.integers(0, 2**31))
def test_meter_messages_round_trip(
    rows: list[tuple[int, float]], kind: str, seq: int | None
) -> None:
    encoded = wire.encode_meter_message(
        PLANT, "kiln-coal", "t", kind, [wire.Sample(ts, value) for ts, value in rows], seq
    )
    decoded = wire.decode_meter_message(wire.meter_topic(PLANT, "kiln-coal"), encoded)
    assert decoded.kind == kind
    assert decoded.seq == seq
    assert [(s.ts_ms, s.value) for s in decoded.samples] == rows
    assert decoded.rejected == ()


@PROPERTY
@given(st.binary(max_size=200) | near_telemetry.map(_dumps) | json_values.map(_dumps))
def test_platform_ingest_never_fails_otherwise(payload: bytes) -> None:
    """The platform's whole path for a message: decode, plant, meters, units, factors."""
    result = INGESTOR.ingest(wire.telemetry_topic(PLANT), payload)
    assert all(r.reason in REASONS for r in result.rejected)
    for stored in result.stored:
        assert math.isfinite(stored.value)
        assert stored.value >= 0


readings = st.lists(
    st.builds(
        wire.Reading,
        meter=st.sampled_from(["kiln-coal", "kiln-petcoke", "clinker-output"]),
        ts_ms=st.integers(min_value=wire.MIN_EPOCH_MS, max_value=wire.MAX_EPOCH_MS - 1),
        value=st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
        unit=st.just("t"),
        duration_ms=st.integers(min_value=1, max_value=86_400_000),
        quality=st.sampled_from(sorted(wire.QUALITIES)),
    ),
    max_size=30,
)


@PROPERTY
@given(readings, st.integers(0, 2**31), st.text(min_size=1, max_size=20))
def test_telemetry_round_trips(batch: list[wire.Reading], seq: int, agent: str) -> None:
    sent = wire.TelemetryBatch(PLANT, agent, seq, NOW_MS, tuple(batch))
    decoded = wire.decode_telemetry(wire.telemetry_topic(PLANT), wire.encode_telemetry(sent))
    assert decoded == sent


@PROPERTY
@given(topics, st.binary(max_size=200) | json_values.map(_dumps))
def test_directive_decoder_never_fails_otherwise(topic: str, payload: bytes) -> None:
    _refused_properly(lambda: wire.decode_directive(topic, payload))


efforts = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@PROPERTY
@given(
    efforts,
    efforts,
    st.floats(min_value=1, max_value=3),
    st.sampled_from(["primary_neutrality", "advanced_symbiosis"]),
)
def test_directives_round_trip(e_m: float, e_p: float, sigma: float, stage: str) -> None:
    sent = wire.Directive(PLANT, NOW_MS, NOW_MS, stage, e_m, e_p, sigma, policy="lab")
    decoded = wire.decode_directive(wire.directive_topic(PLANT), wire.encode_directive(sent))
    assert decoded == sent


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from([*sorted(CoordinationParams.model_fields), "zeta"]),
        json_scalars,
        max_size=16,
    )
)
def test_config_validation_names_a_key_or_accepts(data: dict[str, Any]) -> None:
    """Any mapping: a valid model, or one ConfigError naming the file and a key."""
    try:
        validate_model(CoordinationParams, data, Path("params.yaml"))
    except ConfigError as exc:
        refused = exc
    else:
        return
    assert refused.path == "params.yaml"
    assert refused.key
    assert refused.problem


SETTINGS: Final = load_config(REPO_CONFIG / "carbonlink.yaml")
INGESTOR: Final = Ingestor.from_settings(SETTINGS)
