"""The bad-input corpus for the real path: every field of every payload type, mutated.

Each case builds its messages when it runs (timestamps must be fresh for the running
agent's clock and never collide with another case's), and says exactly what it must
cause: the refusals by stage and reason, and how many of its valid readings are kept.

The cases come in families: a valid message with one field changed to each kind of bad
value (types, ranges, lengths, encodings), whole payloads that are not what they claim,
duplicates, conflicts and overlaps within a message and across messages, retained
messages, and topics nobody listens on. ``tests/data/bad/mqtt/`` holds the hand-written
cases of the decoder-level corpus; they run through here as well (``yaml_cases``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Final

import yaml

from carbonlink import wire
from tests.poison.cases import Expect, Message, Path_
from tests.poison.pipeline import MINUTE_MS, Pipeline

MISSING: Final = object()  # a field left out of the payload
Builder = Callable[[Pipeline], list[Message]]
CORPUS: Final = Path(__file__).resolve().parents[1] / "data" / "bad" / "mqtt"
NESTED: Final = b'{"v":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@dataclass(frozen=True)
class Case:
    id: str
    path: Path_  # the canary's path: "meter" (agent and platform) or "telemetry"
    build: Builder
    expect: Expect
    fresh_agent: bool = False  # the case needs an agent with no memory of other cases
    cleanup: Builder | None = None  # messages that undo the case (clear a retained one)


def dumps(body: object) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def changed(body: dict[str, Any], **fields: object) -> dict[str, Any]:
    out = dict(body)
    for name, value in fields.items():
        if value is MISSING:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def wall_ms() -> int:
    return int(time.time() * 1000)


# --- meter messages (to the plant whose agent runs) --------------------------------------


def sample(pipe: Pipeline, **fields: object) -> dict[str, Any]:
    return changed({"ts": pipe.next_ts_ms(), "value": 0.4, "dur": 60}, **fields)


def meter_message(
    pipe: Pipeline, body: dict[str, Any] | bytes, meter: str = "kiln-coal"
) -> Message:
    payload = body if isinstance(body, bytes) else dumps(body)
    return Message(wire.meter_topic(pipe.meter_plant, meter), payload)


def meter_body(pipe: Pipeline, **fields: object) -> dict[str, Any]:
    return changed({"v": 1, "unit": "t", "samples": [sample(pipe)]}, **fields)


def envelope(name: str, reason: str, **fields: object) -> Case:
    """A meter message with one envelope field changed: the whole message is refused."""
    return Case(
        f"meter/{name}", "meter", lambda p: [meter_message(p, meter_body(p, **fields))],
        Expect(agent={reason: 1}),
    )  # fmt: skip


def raw_meter(name: str, reason: str | None, payload: bytes, kept: int = 0) -> Case:
    expect = Expect(agent={reason: 1}) if reason else Expect(kept=kept)
    return Case(f"meter/{name}", "meter", lambda p: [meter_message(p, payload)], expect)


def in_sample(name: str, reason: str | None, **fields: object) -> Case:
    """A bad sample beside a good one: the bad one refused, the good one kept."""

    def build(p: Pipeline) -> list[Message]:
        return [meter_message(p, meter_body(p, samples=[sample(p, **fields), sample(p)]))]

    expect = Expect(agent={reason: 1}, kept=1) if reason else Expect(kept=2)
    return Case(f"meter/sample-{name}", "meter", build, expect)


def meter_cases() -> list[Case]:
    long_text = "x" * 200
    cases = [
        raw_meter("not-json", "malformed_json", b"{not json"),
        raw_meter("invalid-utf8", "malformed_json", b"\xff\xfe\xfd"),
        raw_meter("empty-payload", "malformed_json", b""),
        raw_meter("whitespace-only", "malformed_json", b"   \n"),
        raw_meter("truncated", "malformed_json", b'{"v":1,"unit":"t","samples":[{"ts":'),
        raw_meter("json-null", "bad_schema", b"null"),
        raw_meter("json-array", "bad_schema", b"[1,2,3]"),
        raw_meter("json-string", "bad_schema", b'"0.38"'),
        raw_meter("bare-number", "bad_schema", b"0.38"),
        raw_meter("deeply-nested", "malformed_json", NESTED),
        raw_meter("over-1-mib", "payload_too_large", b'{"v":1,"pad":"' + b"x" * 1_100_000 + b'"}'),
        envelope("v-missing", "bad_schema", v=MISSING),
        envelope("v-2", "unsupported_version", v=2),
        envelope("v-text", "unsupported_version", v="1"),
        envelope("v-true", "unsupported_version", v=True),
        envelope("v-null", "unsupported_version", v=None),
        envelope("v-fraction", "unsupported_version", v=1.5),
        envelope("unit-missing", "bad_schema", unit=MISSING),
        envelope("unit-empty", "bad_schema", unit=""),
        envelope("unit-number", "bad_schema", unit=5),
        envelope("unit-null", "bad_schema", unit=None),
        envelope("unit-list", "bad_schema", unit=["t"]),
        envelope("unit-long", "bad_schema", unit=long_text),
        envelope("unit-other", "wrong_unit", unit="kg"),
        envelope("unit-case", "wrong_unit", unit="T"),
        # Two faults, one reading: refused once (was counted twice, once per fault).
        Case(
            "meter/unit-other-and-ts-words",
            "meter",
            lambda p: [
                meter_message(
                    p,
                    meter_body(
                        p,
                        unit="kg",
                        samples=[
                            sample(p, ts="yesterday"),
                        ],
                    ),
                )
            ],
            Expect(agent={"bad_timestamp": 1}),
        ),
        envelope("kind-unknown", "bad_schema", kind="gauge"),
        envelope("kind-number", "bad_schema", kind=1),
        envelope("kind-counter-on-interval-meter", "wrong_kind", kind="counter"),
        envelope("seq-negative", "bad_schema", seq=-1),
        envelope("seq-text", "bad_schema", seq="7"),
        envelope("seq-huge", "bad_schema", seq=2**62),
        envelope("seq-fraction", "bad_schema", seq=1.5),
        envelope("seq-true", "bad_schema", seq=True),
        envelope("samples-empty", "bad_schema", samples=[]),
        envelope("samples-object", "bad_schema", samples={"ts": 1, "value": 1}),
        envelope("samples-text", "bad_schema", samples="0.38"),
        envelope("samples-null", "bad_schema", samples=None),
        envelope("plant-differs", "topic_mismatch", plant="another-plant"),
        envelope("meter-differs", "topic_mismatch", meter="another-meter"),
        Case(
            "meter/too-many-samples",
            "meter",
            lambda p: [
                meter_message(
                    p,
                    meter_body(
                        p, samples=[{"ts": 1, "value": 0}] * (wire.MAX_SAMPLES_PER_MESSAGE + 1)
                    ),
                )
            ],
            Expect(agent={"payload_too_large": 1}),
        ),
        Case(
            "meter/unknown-meter",
            "meter",
            lambda p: [meter_message(p, meter_body(p), meter="ghost")],
            Expect(agent={"unknown_meter": 1}),
        ),
        Case(
            "meter/flat-without-ts",
            "meter",
            lambda p: [meter_message(p, {"v": 1, "unit": "t", "value": 0.4})],
            Expect(agent={"bad_schema": 1}),
        ),
        Case(
            "meter/flat-valid",
            "meter",
            lambda p: [meter_message(p, {"v": 1, "unit": "t", "ts": p.next_ts_ms(), "value": 0.4})],
            Expect(kept=1),
        ),
        Case(
            "meter/byte-order-mark-tolerated",
            "meter",
            lambda p: [meter_message(p, b"\xef\xbb\xbf" + dumps(meter_body(p)))],
            Expect(kept=1),
        ),
        # Timestamps
        in_sample("ts-missing", "bad_schema", ts=MISSING),
        in_sample("ts-null", "bad_timestamp", ts=None),
        in_sample("ts-true", "bad_timestamp", ts=True),
        in_sample("ts-words", "bad_timestamp", ts="yesterday"),
        in_sample("ts-month-13", "bad_timestamp", ts="2026-13-01T00:00:00Z"),
        in_sample("ts-without-offset", "bad_timestamp", ts="2026-12-01T00:00:00"),
        in_sample("ts-epoch-seconds", "bad_timestamp", ts=wall_ms() // 1000),
        in_sample("ts-epoch-microseconds", "bad_timestamp", ts=wall_ms() * 1000),
        in_sample("ts-negative", "bad_timestamp", ts=-60_000),
        in_sample("ts-fraction", "bad_timestamp", ts=float(wall_ms())),
        in_sample("ts-digits-as-text", "bad_timestamp", ts=str(wall_ms())),
        in_sample("ts-year-9999", "bad_timestamp", ts="9999-12-31T23:59:59Z"),
        in_sample("ts-year-1", "bad_timestamp", ts="0001-01-01T00:00:00+01:00"),
        in_sample("ts-huge", "bad_timestamp", ts=10**30),
        in_sample("ts-list", "bad_timestamp", ts=[wall_ms()]),
        in_sample("ts-long-text", "bad_timestamp", ts="2026-12-01T00:00:00Z" + " " * 300),
        in_sample("ts-an-hour-ahead", "clock_skew", ts=wall_ms() + 3_600_000),
        in_sample("ts-eight-days-old", "clock_skew", ts=wall_ms() - 8 * 86_400_000),
        # Values
        in_sample("value-missing", "bad_schema", value=MISSING),
        in_sample("value-null", "bad_schema", value=None),
        in_sample("value-text", "bad_schema", value="0.38"),
        in_sample("value-true", "bad_schema", value=True),
        in_sample("value-list", "bad_schema", value=[0.38]),
        in_sample("value-object", "bad_schema", value={"v": 0.38}),
        in_sample("value-nested", "bad_schema", value=json.loads("[" * 500 + "]" * 500)),
        in_sample("value-nan", "not_finite", value=float("nan")),
        in_sample("value-infinity", "not_finite", value=float("inf")),
        in_sample("value-minus-infinity", "not_finite", value=float("-inf")),
        in_sample("value-400-digits", "not_finite", value=10**400),
        in_sample("value-negative", "negative", value=-0.4),
        in_sample("value-a-billion", "implausible", value=1e9),
        in_sample("value-just-over-rated", "implausible", value=0.56),
        in_sample("value-zero", None, value=0),
        # Quality
        in_sample("q-unknown", "bad_quality", q="guessed"),
        in_sample("q-number", "bad_quality", q=1),
        in_sample("q-null", "bad_quality", q=None),
        in_sample("q-list", "bad_quality", q=["measured"]),
        in_sample("q-upper-case", "bad_quality", q="MEASURED"),
        in_sample("q-estimated", None, q="estimated"),
        # Interval lengths
        in_sample("dur-zero", "bad_schema", dur=0),
        in_sample("dur-negative", "bad_schema", dur=-60),
        in_sample("dur-text", "bad_schema", dur="60"),
        in_sample("dur-true", "bad_schema", dur=True),
        in_sample("dur-nan", "not_finite", dur=float("nan")),
        in_sample("dur-1e306", "implausible", dur=1e306),
        in_sample("dur-sub-millisecond", "bad_schema", dur=0.0004),
        in_sample("dur-a-day", "implausible", dur=86_400),
        in_sample("dur-over-ten-periods", "implausible", dur=601),
        in_sample("dur-null-means-the-period", None, dur=None),
        # Samples that are not samples
        in_sample_raw("sample-number", 5),
        in_sample_raw("sample-text", "0.38"),
        in_sample_raw("sample-null", None),
        in_sample_raw("sample-list", [1, 2]),
    ]
    return cases + identity_cases()


def in_sample_raw(name: str, bad: object) -> Case:
    def build(p: Pipeline) -> list[Message]:
        return [meter_message(p, meter_body(p, samples=[bad, sample(p)]))]

    return Case(f"meter/{name}", "meter", build, Expect(agent={"bad_schema": 1}, kept=1))


def identity_cases() -> list[Case]:
    def twice_in_one(p: Pipeline) -> list[Message]:
        s = sample(p)
        return [meter_message(p, meter_body(p, samples=[s, s]))]

    def conflict_in_one(p: Pipeline) -> list[Message]:
        s = sample(p)
        return [meter_message(p, meter_body(p, samples=[s, s | {"value": 0.3}]))]

    def overlap_in_one(p: Pipeline) -> list[Message]:
        s = sample(p)
        inside = s | {"ts": s["ts"] - 30_000, "value": 0.2}
        return [meter_message(p, meter_body(p, samples=[s, inside]))]

    def twice_across(p: Pipeline) -> list[Message]:
        body = meter_body(p)
        return [meter_message(p, body), meter_message(p, body)]

    def conflict_across(p: Pipeline) -> list[Message]:
        body = meter_body(p)
        other = body | {"samples": [body["samples"][0] | {"value": 0.5}]}
        return [meter_message(p, body), meter_message(p, other)]

    def overlap_across(p: Pipeline) -> list[Message]:
        body = meter_body(p)
        first = body["samples"][0]
        later = first | {"ts": first["ts"] + 20_000, "value": 0.1}
        return [meter_message(p, body), meter_message(p, body | {"samples": [later]})]

    def long_interval(p: Pipeline) -> list[Message]:
        end = p.block(15)  # its own quarter of an hour: ten minutes of it in one reading
        return [meter_message(p, meter_body(p, samples=[{"ts": end, "value": 3.0, "dur": 600}]))]

    def counter_reset(p: Pipeline) -> list[Message]:
        end = p.block(5)
        before = {"v": 1, "unit": "kWh", "kind": "counter", "ts": end - MINUTE_MS,
                  "value": 500_000}  # fmt: skip
        after = before | {"ts": end, "value": 100}
        return [meter_message(p, before, "grid-main"), meter_message(p, after, "grid-main")]

    def counter_backwards(p: Pipeline) -> list[Message]:
        end = p.block(5)
        later = {"v": 1, "unit": "kWh", "kind": "counter", "ts": end, "value": 500_200}
        earlier = later | {"ts": end - MINUTE_MS, "value": 500_100}
        return [meter_message(p, later, "grid-main"), meter_message(p, earlier, "grid-main")]

    def counter_intervals(p: Pipeline) -> list[Message]:
        end = p.block(5)
        first = {"v": 1, "unit": "kWh", "kind": "counter", "ts": end - MINUTE_MS, "value": 1000}
        return [meter_message(p, first, "grid-main"),
                meter_message(p, first | {"ts": end, "value": 1400}, "grid-main")]  # fmt: skip

    return [
        Case("meter/duplicate-in-one-message", "meter", twice_in_one,
             Expect(agent={"duplicate": 1}, kept=1)),
        Case("meter/conflict-in-one-message", "meter", conflict_in_one,
             Expect(agent={"conflict": 1}, kept=1)),
        Case("meter/overlap-in-one-message", "meter", overlap_in_one,
             Expect(agent={"overlap": 1}, kept=1)),
        Case("meter/duplicate-across-messages", "meter", twice_across,
             Expect(agent={"duplicate": 1}, kept=1)),
        Case("meter/conflict-across-messages", "meter", conflict_across,
             Expect(agent={"conflict": 1}, kept=1)),
        Case("meter/overlap-across-messages", "meter", overlap_across,
             Expect(agent={"overlap": 1}, kept=1)),
        Case("meter/ten-minutes-in-one-reading", "meter", long_interval, Expect(kept=1)),
        Case("meter/counter-reset", "meter", counter_reset,
             Expect(agent={"counter_reset": 1}), fresh_agent=True),
        Case("meter/counter-backwards", "meter", counter_backwards,
             Expect(agent={"out_of_order": 1}), fresh_agent=True),
        Case("meter/counter-interval", "meter", counter_intervals, Expect(kept=1),
             fresh_agent=True),
    ]  # fmt: skip


# --- telemetry (the test plays the agent of the plant without one) ---------------------


def row(pipe: Pipeline, **fields: object) -> dict[str, Any]:
    return changed(
        {"meter": "kiln-coal", "ts": pipe.next_ts_ms(), "value": 0.4, "unit": "t",
         "dur_ms": MINUTE_MS, "q": "measured"},
        **fields,
    )  # fmt: skip


def telemetry_body(pipe: Pipeline, rows: list[dict[str, Any]], **fields: object) -> dict[str, Any]:
    pipe._direct_seq += 1
    body = {
        "v": 1,
        "plant": pipe.direct_plant,
        "agent": wire.agent_id(pipe.direct_plant),
        "seq": pipe._direct_seq,
        "sent_ms": wall_ms(),
        "readings": {c: [r[c] for r in rows] for c in wire.TELEMETRY_COLUMNS},
    }
    return changed(body, **fields)


def telemetry_message(
    pipe: Pipeline, body: dict[str, Any] | bytes, plant: str | None = None
) -> Message:
    payload = body if isinstance(body, bytes) else dumps(body)
    return Message(wire.telemetry_topic(plant or pipe.direct_plant), payload)


def t_envelope(name: str, reason: str, **fields: object) -> Case:
    def build(p: Pipeline) -> list[Message]:
        return [telemetry_message(p, telemetry_body(p, [row(p)], **fields))]

    return Case(f"telemetry/{name}", "telemetry", build, Expect(platform={reason: 1}))


def t_raw(name: str, reason: str, payload: bytes) -> Case:
    return Case(f"telemetry/{name}", "telemetry", lambda p: [telemetry_message(p, payload)],
                Expect(platform={reason: 1}))  # fmt: skip


def t_row(name: str, reason: str | None, **fields: object) -> Case:
    def build(p: Pipeline) -> list[Message]:
        return [telemetry_message(p, telemetry_body(p, [row(p, **fields), row(p)]))]

    expect = Expect(platform={reason: 1}, kept=1) if reason else Expect(kept=2)
    return Case(f"telemetry/row-{name}", "telemetry", build, expect)


def telemetry_cases() -> list[Case]:
    def readings(**columns: object) -> Callable[[Pipeline], dict[str, Any]]:
        return lambda p: telemetry_body(p, [row(p)])["readings"] | columns

    def with_readings(name: str, reason: str, make: Callable[[Pipeline], object]) -> Case:
        def build(p: Pipeline) -> list[Message]:
            body = telemetry_body(p, [row(p)])
            return [telemetry_message(p, body | {"readings": make(p)})]

        return Case(f"telemetry/{name}", "telemetry", build, Expect(platform={reason: 1}))

    def unknown_plant(p: Pipeline) -> list[Message]:
        body = telemetry_body(p, [row(p)], plant="nobody", agent="agent-nobody")
        return [telemetry_message(p, body, plant="nobody")]

    def upper_case_plant(p: Pipeline) -> list[Message]:
        plant = p.direct_plant.upper()
        return [telemetry_message(p, telemetry_body(p, [row(p)], plant=plant), plant=plant)]

    def too_many(p: Pipeline) -> list[Message]:
        rows = [row(p)] * (wire.MAX_TELEMETRY_READINGS + 1)
        return [telemetry_message(p, telemetry_body(p, rows))]

    def repeat(p: Pipeline) -> list[Message]:
        r = row(p)
        return [telemetry_message(p, telemetry_body(p, [r, r]))]

    def conflict(p: Pipeline) -> list[Message]:
        r = row(p)
        return [telemetry_message(p, telemetry_body(p, [r, r | {"value": 0.3}]))]

    def overlap(p: Pipeline) -> list[Message]:
        r = row(p)
        return [telemetry_message(p, telemetry_body(p, [r, r | {"ts": r["ts"] - 30_000}]))]

    def stored_then(change: dict[str, Any]) -> Builder:
        def build(p: Pipeline) -> list[Message]:
            r = row(p)
            first = telemetry_message(p, telemetry_body(p, [r]))
            return [first, telemetry_message(p, telemetry_body(p, [r | change]))]

        return build

    def overlap_stored(p: Pipeline) -> list[Message]:
        r = row(p)
        later = r | {"ts": r["ts"] + 20_000}  # (ts - 40 s, ts + 20 s] overlaps (ts - 60 s, ts]
        first = telemetry_message(p, telemetry_body(p, [r]))
        return [first, telemetry_message(p, telemetry_body(p, [later]))]

    def long_interval(p: Pipeline) -> list[Message]:
        end = p.block(15)
        r = row(p, ts=end, dur_ms=600_000, value=3.0)
        return [telemetry_message(p, telemetry_body(p, [r]))]

    return [
        t_raw("not-json", "malformed_json", b"{not json"),
        t_raw("empty-payload", "malformed_json", b""),
        t_raw("invalid-utf8", "malformed_json", b'{"v":1,"plant":"\xff"}'),
        t_raw("json-array", "bad_schema", b"[]"),
        t_raw("json-null", "bad_schema", b"null"),
        t_raw("deeply-nested", "malformed_json", NESTED),
        t_raw("over-1-mib", "payload_too_large", b'{"pad":"' + b"x" * 1_100_000 + b'"}'),
        t_envelope("v-missing", "bad_schema", v=MISSING),
        t_envelope("v-2", "unsupported_version", v=2),
        t_envelope("plant-missing", "topic_mismatch", plant=MISSING),
        t_envelope("plant-differs", "topic_mismatch", plant="another-plant"),
        t_envelope("agent-missing", "bad_schema", agent=MISSING),
        t_envelope("agent-number", "bad_schema", agent=7),
        t_envelope("agent-empty", "bad_schema", agent=""),
        t_envelope("agent-long", "bad_schema", agent="agent-" + "x" * 200),
        t_envelope("agent-another", "unknown_agent", agent="agent-someone-else"),
        t_envelope("seq-missing", "bad_schema", seq=MISSING),
        t_envelope("seq-negative", "bad_schema", seq=-1),
        t_envelope("seq-text", "bad_schema", seq="1"),
        t_envelope("seq-fraction", "bad_schema", seq=1.5),
        t_envelope("seq-2-to-the-62", "bad_schema", seq=2**62),
        t_envelope("sent-ms-missing", "bad_schema", sent_ms=MISSING),
        t_envelope("sent-ms-text", "bad_schema", sent_ms="now"),
        t_envelope("readings-missing", "bad_schema", readings=MISSING),
        t_envelope("readings-list", "bad_schema", readings=[]),
        with_readings("readings-without-a-column", "bad_schema",
                      lambda p: {k: v for k, v in readings()(p).items() if k != "q"}),
        with_readings("readings-column-not-a-list", "bad_schema", readings(q="measured")),
        with_readings("readings-columns-differ", "bad_schema", readings(q=[])),
        Case("telemetry/too-many-readings", "telemetry", too_many,
             Expect(platform={"payload_too_large": 1})),
        Case("telemetry/unknown-plant", "telemetry", unknown_plant,
             Expect(platform={"unknown_plant": 1})),
        Case("telemetry/upper-case-plant", "telemetry", upper_case_plant,
             Expect(platform={"misaddressed": 1})),
        # Rows
        t_row("meter-number", "bad_schema", meter=5),
        t_row("meter-null", "bad_schema", meter=None),
        t_row("meter-empty", "bad_schema", meter=""),
        t_row("meter-long", "bad_schema", meter="m" * 200),
        t_row("meter-unknown", "unknown_meter", meter="ghost"),
        t_row("unit-other", "wrong_unit", unit="kg"),
        t_row("unit-number", "bad_schema", unit=1),
        t_row("unit-null", "bad_schema", unit=None),
        t_row("ts-null", "bad_timestamp", ts=None),
        t_row("ts-true", "bad_timestamp", ts=True),
        t_row("ts-words", "bad_timestamp", ts="yesterday"),
        t_row("ts-epoch-seconds", "bad_timestamp", ts=wall_ms() // 1000),
        t_row("ts-negative", "bad_timestamp", ts=-1),
        t_row("ts-fraction", "bad_timestamp", ts=1.5),
        t_row("ts-year-9999", "bad_timestamp", ts="9999-12-31T00:00:00Z"),
        t_row("ts-year-1", "bad_timestamp", ts="0001-01-01T00:00:00Z"),
        t_row("ts-huge", "bad_timestamp", ts=10**30),
        t_row("ts-a-day-ahead", "clock_skew", ts=wall_ms() + 86_400_000),
        t_row("value-null", "bad_schema", value=None),
        t_row("value-text", "bad_schema", value="0.4"),
        t_row("value-true", "bad_schema", value=True),
        t_row("value-list", "bad_schema", value=[0.4]),
        t_row("value-nan", "not_finite", value=float("nan")),
        t_row("value-infinity", "not_finite", value=float("inf")),
        t_row("value-400-digits", "not_finite", value=10**400),
        t_row("value-negative", "negative", value=-0.4),
        t_row("value-a-billion", "implausible", value=1e9),
        t_row("value-just-over-rated", "implausible", value=0.56),
        t_row("dur-ms-zero", "bad_schema", dur_ms=0),
        t_row("dur-ms-negative", "bad_schema", dur_ms=-60_000),
        t_row("dur-ms-fraction", "bad_schema", dur_ms=60_000.5),
        t_row("dur-ms-text", "bad_schema", dur_ms="60000"),
        t_row("dur-ms-true", "bad_schema", dur_ms=True),
        t_row("dur-ms-null", "bad_schema", dur_ms=None),
        t_row("dur-ms-400-digits", "implausible", dur_ms=10**400 - 1),
        t_row("dur-ms-an-hour", "implausible", dur_ms=3_600_000),
        t_row("q-unknown", "bad_quality", q="guessed"),
        t_row("q-number", "bad_quality", q=0),
        t_row("q-null", "bad_quality", q=None),
        Case("telemetry/the-same-row-twice", "telemetry", repeat, Expect(kept=1)),
        Case("telemetry/conflict-in-one-batch", "telemetry", conflict,
             Expect(platform={"conflict": 1}, kept=1)),
        Case("telemetry/overlap-in-one-batch", "telemetry", overlap,
             Expect(platform={"overlap": 1}, kept=1)),
        Case("telemetry/a-stored-reading-again", "telemetry", stored_then({}), Expect(kept=1)),
        Case("telemetry/conflict-with-a-stored-reading", "telemetry",
             stored_then({"value": 0.3}), Expect(platform={"conflict": 1}, kept=1)),
        Case("telemetry/overlap-with-a-stored-reading", "telemetry", overlap_stored,
             Expect(platform={"overlap": 1}, kept=1)),
        Case("telemetry/ten-minutes-in-one-reading", "telemetry", long_interval, Expect(kept=1)),
    ]  # fmt: skip


# --- agent status, directives, topics ---------------------------------------------------


def status_cases() -> list[Case]:
    def status(name: str, reason: str, body: object, plant: str | None = None,
               retain: bool = False) -> Case:  # fmt: skip
        def topic(p: Pipeline) -> str:
            return wire.status_topic(plant or p.direct_plant)

        def build(p: Pipeline) -> list[Message]:
            payload = (
                body
                if isinstance(body, bytes)
                else dumps(_fill(body, agent=wire.agent_id(p.direct_plant)))
            )
            return [Message(topic(p), payload, retain=retain)]

        cleanup = (lambda p: [Message(topic(p), b"", retain=True)]) if retain else None
        return Case(f"status/{name}", "telemetry", build, Expect(platform={reason: 1}),
                    cleanup=cleanup)  # fmt: skip

    good = {"v": 1, "state": "online", "agent": "$agent",
            "counters": {"received": 1, "accepted": 1, "forwarded": 1, "rejected": {}}}  # fmt: skip
    return [
        status("not-json", "malformed_json", b"{online"),
        status("deeply-nested", "malformed_json", NESTED),
        status("retained-and-nested", "malformed_json", NESTED, retain=True),
        status("json-array", "bad_schema", b"[]"),
        status("v-missing", "bad_schema", changed(good, v=MISSING)),
        status("state-missing", "bad_schema", changed(good, state=MISSING)),
        status("state-unknown", "bad_schema", changed(good, state="asleep")),
        status("agent-missing", "bad_schema", changed(good, agent=MISSING)),
        status("agent-another", "bad_status", changed(good, agent="agent-impostor")),
        status("counters-text", "bad_schema", changed(good, counters="many")),
        status("counter-negative", "bad_schema", good | {"counters": {"received": -1}}),
        status("counter-huge", "bad_schema", good | {"counters": {"accepted": 10**30}}),
        status("counter-text", "bad_schema", good | {"counters": {"forwarded": "5"}}),
        status("rejected-too-many-reasons", "bad_schema",
               good | {"counters": {"rejected": {f"r{i}": 1 for i in range(100)}}}),
        status("rejected-count-negative", "bad_schema",
               good | {"counters": {"rejected": {"negative": -5}}}),
        status("outbox-depth-text", "bad_schema", good | {"outbox_depth": "deep"}),
        status("of-an-unknown-plant", "unknown_plant", changed(good, agent="agent-nobody"),
               plant="nobody"),
        status("retained-impostor", "bad_status", changed(good, agent="agent-impostor"),
               retain=True),
    ]  # fmt: skip


def _fill(body: object, **values: str) -> object:
    text = json.dumps(body)
    return json.loads(Template(text).safe_substitute(values))


def directive_cases() -> list[Case]:
    def directive(name: str, reason: str, change: dict[str, object] | bytes,
                  retain: bool = False) -> Case:  # fmt: skip
        def build(p: Pipeline) -> list[Message]:
            if isinstance(change, bytes):
                payload = change
            else:
                now = wall_ms()
                body = {"v": 1, "plant": p.sim_plant, "issued_ms": now, "effective_ms": now,
                        "stage": "advanced_symbiosis", "effort_firm": 1.0,
                        "effort_platform": 1.0, "sigma": 1.2, "policy": "corpus"}  # fmt: skip
                payload = dumps(changed(body, **change))
            return [Message(wire.directive_topic(p.sim_plant), payload, retain=retain)]

        cleanup = (
            (lambda p: [Message(wire.directive_topic(p.sim_plant), b"", retain=True)])
            if retain else None
        )  # fmt: skip
        return Case(f"directive/{name}", "meter", build, Expect(simulator={reason: 1}),
                    cleanup=cleanup)  # fmt: skip

    return [
        directive("not-json", "malformed_json", b"{go faster"),
        directive("deeply-nested", "malformed_json", NESTED),
        directive("v-missing", "bad_schema", {"v": MISSING}),
        directive("for-another-plant", "topic_mismatch", {"plant": "another-plant"}),
        directive("effort-negative", "negative", {"effort_firm": -1.0}),
        directive("effort-nan", "not_finite", {"effort_platform": float("nan")}),
        directive("effort-text", "bad_schema", {"effort_firm": "high"}),
        directive("effort-huge", "implausible", {"effort_firm": 1e300}),
        directive("sigma-infinite", "not_finite", {"sigma": float("inf")}),
        directive("stage-missing", "bad_schema", {"stage": MISSING}),
        directive("stage-number", "bad_schema", {"stage": 3}),
        directive("issued-ms-text", "bad_timestamp", {"issued_ms": "soon"}),
        directive("effective-ms-year-1", "bad_timestamp", {"effective_ms": -62135596800000}),
        directive("policy-long", "bad_schema", {"policy": "p" * 500}),
        directive("retained-and-broken", "malformed_json", b"{stuck", retain=True),
    ]


def topic_cases() -> list[Case]:
    def topic(name: str, suffix: str) -> Case:
        def build(p: Pipeline) -> list[Message]:
            target = wire.TOPIC_ROOT + suffix.format(
                plant=p.meter_plant, PLANT=p.meter_plant.upper()
            )
            return [Message(target, dumps(meter_body(p)))]

        return Case(f"topic/{name}", "meter", build, Expect(platform={"misaddressed": 1}))

    return [
        topic("meter-with-a-tail", "/{plant}/meters/kiln-coal/x"),
        topic("plant-in-upper-case", "/{PLANT}/meters/kiln-coal"),
        topic("kind-misspelt", "/{plant}/meter/kiln-coal"),
        topic("no-kind", "/{plant}"),
        topic("nothing-after-the-root", ""),
        topic("telemetry-with-a-tail", "/{plant}/telemetry/extra"),
        topic("status-with-a-tail", "/{plant}/status/x"),
        topic("directives-with-a-tail", "/{plant}/directives/now"),
        topic("unknown-plant", "/nobody/meters/kiln-coal"),
        topic("unknown-kind", "/{plant}/readings"),
        topic("empty-level", "/{plant}//meters"),
        topic("plant-with-a-space", "/my plant/meters/kiln-coal"),
        Case("topic/meter-id-in-upper-case", "meter",
             lambda p: [Message(f"{wire.TOPIC_ROOT}/{p.meter_plant}/meters/Kiln-Coal",
                                dumps(meter_body(p)))],
             Expect(agent={"misaddressed": 1})),  # the agent hears it, and refuses it
    ]  # fmt: skip


# --- the decoder-level corpus, on the real path -------------------------------------------


def yaml_cases() -> list[Case]:
    cases = []
    for path in sorted(CORPUS.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        target = spec["target"]
        reason, kept = spec["expect"]["reason"], spec["expect"].get("kept", spec["expect"].get(
            "stored", 0))  # fmt: skip
        if target == "meter":
            if not spec["topic"].startswith(wire.TOPIC_ROOT):
                continue  # outside carbonlink/v1/: no carbonlink service hears it at all
            expect = Expect(agent={reason: 1}, kept=kept + _before_readings(spec))
            if not spec["topic"].startswith(f"{wire.TOPIC_ROOT}/$plant/meters/"):
                expect = Expect(platform={"misaddressed": 1})  # no agent hears such a topic
            case_path: Path_ = "meter"
        elif target == "telemetry":
            expect, case_path = Expect(platform={reason: 1}, kept=kept), "telemetry"
        else:
            expect, case_path = Expect(simulator={reason: 1}), "meter"
        fresh = "counter" in spec.get("payload", "")
        cases.append(Case(f"yaml/{path.stem}", case_path, _yaml_builder(spec), expect, fresh))
    return cases


def _before_readings(spec: dict[str, Any]) -> int:
    """Readings that the case's valid ``before`` messages add (interval meters only)."""
    return sum(0 if '"counter"' in b else 1 for b in spec.get("before", []))


def _yaml_builder(spec: dict[str, Any]) -> Builder:
    def build(p: Pipeline) -> list[Message]:
        end = p.block(5)
        plant = {"meter": p.meter_plant, "telemetry": p.direct_plant}.get(
            spec["target"], p.sim_plant
        )
        wall = wall_ms()
        values = {
            "plant": plant,
            "now": wire.format_timestamp(end),
            "now_ms": end,
            "now_minus_1m": wire.format_timestamp(end - MINUTE_MS),
            "now_minus_30s": wire.format_timestamp(end - MINUTE_MS // 2),
            "earlier": wire.format_timestamp(end - 2 * MINUTE_MS),
            "future": wire.format_timestamp(wall + 3_600_000),
            "ancient": wire.format_timestamp(wall - 8 * 86_400_000),
        }
        if spec["target"] == "telemetry":
            p._direct_seq += 1
            values["seq"] = p._direct_seq

        def fill(text: str) -> bytes:
            return Template(text).substitute(values).encode()

        topic = Template(spec["topic"]).substitute(values)
        messages = [Message(topic, fill(before)) for before in spec.get("before", [])]
        if "payload_hex" in spec:
            payload = bytes.fromhex(spec["payload_hex"])
        elif "payload_size" in spec:
            body = fill('{"v":1,"unit":"t","ts":"$now","value":0.38}')
            payload = body[:-1] + b" " * (spec["payload_size"] - len(body)) + b"}"
        else:
            payload = fill(spec["payload"])
        return [*messages, Message(topic, payload)]

    return build


def all_cases() -> list[Case]:
    return (
        meter_cases() + telemetry_cases() + status_cases() + directive_cases() + topic_cases()
        + yaml_cases()
    )  # fmt: skip
