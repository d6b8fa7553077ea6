"""Property tests (hypothesis) on the plant-tool decoders and the Sparkplug host: whatever
arrives, a refusal with a known reason or a value, never another exception."""

from __future__ import annotations

import json
import math
from typing import Any, Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonlink import wire
from carbonlink.agent import SparkplugHost
from carbonlink.errors import RejectedReading
from tests.plant.test_rules import NOW, host, payload

REASONS: Final = {v for k, v in vars(wire.Reason).items() if not k.startswith("_")}
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOPIC: Final = "carbonlink/v1/p1/meters/coal"
MAPPINGS: Final = (
    wire.PayloadMapping(wire.PayloadFormat.BARE),
    wire.PayloadMapping(wire.PayloadFormat.JSON, "$.fields.value", "$.timestamp", wire.EpochUnit.S),
    wire.PayloadMapping(wire.PayloadFormat.JSON, "values.kwh", "ts"),
    wire.PayloadMapping(wire.PayloadFormat.JSON, "$[0]"),
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
near_payloads = st.dictionaries(
    st.sampled_from(["fields", "timestamp", "values", "ts", "value", "v"]),
    json_values | st.dictionaries(st.sampled_from(["value", "kwh"]), json_values, max_size=2),
    max_size=4,
)
raw = (
    st.binary(max_size=64)
    | json_values.map(lambda value: json.dumps(value, allow_nan=True).encode())
    | near_payloads.map(lambda value: json.dumps(value, allow_nan=True).encode())
)


def _value_or_refusal(call: Any) -> object:
    try:
        return call()
    except RejectedReading as exc:
        refused = exc
    assert refused.reason in REASONS, refused.reason
    return refused


@PROPERTY
@given(raw, st.sampled_from(MAPPINGS))
def test_mapped_payloads_decode_or_are_refused(
    payload: bytes, mapping: wire.PayloadMapping
) -> None:
    result = _value_or_refusal(
        lambda: wire.decode_mapped(
            TOPIC, payload, mapping, unit="t", kind="interval", arrival_ms=NOW
        )
    )
    if isinstance(result, wire.MeterMessage):
        (sample,) = result.samples
        assert sample.value == sample.value  # never NaN
        assert wire.MIN_EPOCH_MS <= sample.ts_ms < wire.MAX_EPOCH_MS


metrics = st.lists(
    st.tuples(
        st.none() | st.sampled_from(["Coal", "bdSeq", "Other"]) | st.text(max_size=6),
        st.none() | st.integers(min_value=0, max_value=5),
        st.sampled_from(["Double", "Int64", "Int32", "String", "Boolean"]),
        st.floats() | st.integers(min_value=0, max_value=2**32 - 1),
    ),
    max_size=4,
)


def _payload(seq: int | None, found: list[tuple[Any, ...]]) -> bytes:
    """``found``'s values made to fit each datatype (any float or int was drawn)."""
    return payload(
        seq, *((name, alias, kind, _fit(kind, value)) for name, alias, kind, value in found)
    )


def _fit(kind: str, value: float) -> object:
    if kind == "Double":
        return float(value)
    if kind == "String":
        return str(value)
    if kind == "Boolean":
        return bool(value)
    return _whole(value) % (2**32 if kind == "Int32" else 2**64)


def _whole(value: float) -> int:
    return int(value) if math.isfinite(value) else 0


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["NBIRTH", "NDATA", "NDEATH", "DBIRTH/d1", "DDATA/d1", "DDEATH/d1",
                             "NCMD", "XDATA"]),
            st.none() | st.integers(min_value=0, max_value=300),
            metrics | st.binary(max_size=32).map(lambda b: [b]),
        ),
        max_size=8,
    )
)  # fmt: skip
def test_any_message_sequence_gives_readings_or_refusals(
    messages: list[tuple[str, int | None, list[Any]]],
) -> None:
    node: SparkplugHost = host()
    for kind, seq, body in messages:
        kind_name, _, device = kind.partition("/")
        topic = f"spBv1.0/plant-a/{kind_name}/gw-1" + (f"/{device}" if device else "")
        payload = body[0] if body and isinstance(body[0], bytes) else _payload(seq, body)
        outcome = node.handle(topic, payload, NOW)
        assert all(error.reason in REASONS for error in outcome.refused)
        for message in outcome.messages:
            assert message.meter == "coal"
            assert all(s.value == s.value for s in message.samples)  # never NaN
