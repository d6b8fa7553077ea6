"""Each finding of the poison-pipeline review, replayed through the real broker, agent and
platform: refused with its reason, counted, dead-lettered, and a canary still lands."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from carbonlink import wire
from carbonlink.platform._service import MAX_SEQUENCE_GAP
from tests.poison.cases import Expect, Message, check, run
from tests.poison.pipeline import MINUTE_MS, Pipeline

pytestmark = [pytest.mark.mosquitto, pytest.mark.influxdb, pytest.mark.slow]


def _meter(pipe: Pipeline, body: dict[str, object], meter: str = "kiln-coal") -> Message:
    return Message(wire.meter_topic(pipe.meter_plant, meter), json.dumps(body).encode())


def _telemetry(pipe: Pipeline, payload: bytes) -> Message:
    return Message(wire.telemetry_topic(pipe.direct_plant), payload)


def _row(pipe: Pipeline, meter: str = "kiln-coal", value: float = 0.4, **change: object) -> tuple:
    row = {"meter": meter, "ts": pipe.next_ts_ms(), "value": value, "unit": "t",
           "dur_ms": MINUTE_MS, "q": "measured"} | change  # fmt: skip
    return tuple(row[c] for c in wire.TELEMETRY_COLUMNS)


def test_one_bad_row_beside_a_good_one_is_refused_alone(pipe: Pipeline) -> None:
    payload = pipe.telemetry([_row(pipe, meter="no-such-meter"), _row(pipe)])
    expect = Expect(platform={"unknown_meter": 1}, kept=1)
    check(run(pipe, [_telemetry(pipe, payload)], expect, "telemetry"), expect, "telemetry", pipe)


def test_a_batch_of_many_bad_rows_and_good_ones(pipe: Pipeline) -> None:
    rows = [_row(pipe, meter="no-such-meter") if i % 3 == 0 else _row(pipe) for i in range(30)]
    expect = Expect(platform={"unknown_meter": 10}, kept=20)
    payload = pipe.telemetry(rows)
    check(run(pipe, [_telemetry(pipe, payload)], expect, "telemetry"), expect, "telemetry", pipe)


NESTED = b'{"v":1,"unit":"t","ts":1,"value":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_deeply_nested_json_to_the_agent(pipe: Pipeline) -> None:
    expect = Expect(agent={"malformed_json": 1})
    message = Message(wire.meter_topic(pipe.meter_plant, "kiln-coal"), NESTED)
    check(run(pipe, [message], expect, "meter"), expect, "meter", pipe)


def test_deeply_nested_json_to_the_platform(pipe: Pipeline) -> None:
    expect = Expect(platform={"malformed_json": 1})
    check(run(pipe, [_telemetry(pipe, NESTED)], expect, "telemetry"), expect, "telemetry", pipe)


def test_huge_dur_in_a_meter_sample(pipe: Pipeline) -> None:
    body = {"v": 1, "unit": "t", "ts": pipe.next_ts_ms(), "value": 0.4, "dur": 1e306}
    expect = Expect(agent={"implausible": 1})
    check(run(pipe, [_meter(pipe, body)], expect, "meter"), expect, "meter", pipe)


def test_a_400_digit_dur_ms_beside_a_valid_reading(pipe: Pipeline) -> None:
    payload = pipe.telemetry([_row(pipe, dur_ms=10**400 - 1), _row(pipe)])
    expect = Expect(platform={"implausible": 1}, kept=1)
    check(run(pipe, [_telemetry(pipe, payload)], expect, "telemetry"), expect, "telemetry", pipe)


def test_a_billion_tonnes_over_a_long_interval_is_implausible(pipe: Pipeline) -> None:
    body = {"v": 1, "unit": "t", "ts": pipe.next_ts_ms(), "value": 1e9, "dur": 1e12}
    expect = Expect(agent={"implausible": 1})
    check(run(pipe, [_meter(pipe, body)], expect, "meter"), expect, "meter", pipe)
    payload = pipe.telemetry([_row(pipe, value=1e9, dur_ms=10**15)])
    expect = Expect(platform={"implausible": 1})
    check(run(pipe, [_telemetry(pipe, payload)], expect, "telemetry"), expect, "telemetry", pipe)


def test_a_sub_millisecond_interval_is_not_stored_as_a_whole_period(pipe: Pipeline) -> None:
    body = {"v": 1, "unit": "t", "ts": pipe.next_ts_ms(), "value": 0.0001, "dur": 0.0004}
    expect = Expect(agent={"bad_schema": 1})
    check(run(pipe, [_meter(pipe, body)], expect, "meter"), expect, "meter", pipe)


def test_a_conflicting_value_for_a_stored_reading_is_refused(pipe: Pipeline) -> None:
    first = _row(pipe, value=0.5)
    expect = Expect(kept=1)
    message = _telemetry(pipe, pipe.telemetry([first]))
    check(run(pipe, [message], expect, "telemetry"), expect, "telemetry", pipe)
    again = _telemetry(pipe, pipe.telemetry([first]))  # the same reading: kept once
    check(run(pipe, [again], Expect(), "telemetry"), Expect(), "telemetry", pipe)
    changed = (*first[:2], 0.45, *first[3:])
    expect = Expect(platform={"conflict": 1})
    message = _telemetry(pipe, pipe.telemetry([changed]))
    check(run(pipe, [message], expect, "telemetry"), expect, "telemetry", pipe)
    assert pipe.stored(pipe.direct_plant)[first[0], first[1]] == 0.5


def test_duplicates_within_one_batch_count_once(pipe: Pipeline) -> None:
    row = _row(pipe)
    expect = Expect(kept=1)
    message = _telemetry(pipe, pipe.telemetry([row, row]))
    outcome = run(pipe, [message], expect, "telemetry")
    check(outcome, expect, "telemetry", pipe)
    conflict = (*row[:1], pipe.next_ts_ms(), *row[2:])
    changed = (*conflict[:2], 0.45, *conflict[3:])
    expect = Expect(platform={"conflict": 1}, kept=1)
    message = _telemetry(pipe, pipe.telemetry([conflict, changed]))
    check(run(pipe, [message], expect, "telemetry"), expect, "telemetry", pipe)


def test_a_reading_between_interval_samples_overlaps(pipe: Pipeline) -> None:
    ts = pipe.next_ts_ms()
    first = {"v": 1, "unit": "t", "ts": ts, "value": 0.4, "dur": 60}
    check(run(pipe, [_meter(pipe, first)], Expect(kept=1), "meter"), Expect(kept=1), "meter", pipe)
    between = {"v": 1, "unit": "t", "ts": ts - 30_000, "value": 0.2, "dur": 60}
    expect = Expect(agent={"overlap": 1})
    check(run(pipe, [_meter(pipe, between)], expect, "meter"), expect, "meter", pipe)
    row = _row(pipe)
    inside = (row[0], row[1] - 30_000, *row[2:])
    expect = Expect(platform={"overlap": 1}, kept=1)
    message = _telemetry(pipe, pipe.telemetry([row, inside]))
    check(run(pipe, [message], expect, "telemetry"), expect, "telemetry", pipe)


def test_a_duplicate_with_another_value_after_an_agent_restart(pipe: Pipeline) -> None:
    ts = pipe.next_ts_ms()
    body = {"v": 1, "unit": "t", "ts": ts, "value": 0.4}
    check(run(pipe, [_meter(pipe, body)], Expect(kept=1), "meter"), Expect(kept=1), "meter", pipe)
    pipe.agent.stop()
    pipe.start_agent()
    expect = Expect(agent={"conflict": 1})
    changed = body | {"value": 0.5}
    check(run(pipe, [_meter(pipe, changed)], expect, "meter"), expect, "meter", pipe)
    expect = Expect(agent={"duplicate": 1})
    check(run(pipe, [_meter(pipe, body)], expect, "meter"), expect, "meter", pipe)


def test_unknown_agents_and_plants_keep_no_state(pipe: Pipeline) -> None:
    messages = []
    for i in range(200):
        body = json.loads(pipe.telemetry([_row(pipe)]))
        body["agent"] = f"rogue-{i}"
        messages.append(_telemetry(pipe, json.dumps(body).encode()))
    for i in range(200):
        plant = f"ghost-{i}"
        body = json.loads(pipe.telemetry([_row(pipe)])) | {"plant": plant}
        messages.append(Message(wire.telemetry_topic(plant), json.dumps(body).encode()))
    expect = Expect(platform={"unknown_agent": 200, "unknown_plant": 200})
    check(run(pipe, messages, expect, "telemetry"), expect, "telemetry", pipe)
    health = json.dumps(pipe.platform_health())
    assert "rogue-" not in health
    assert "ghost-" not in health
    assert len(health) < 20_000


def test_a_huge_seq_does_not_poison_the_gap_count(pipe: Pipeline) -> None:
    gaps = pipe.platform_health()["ingestion"]["sequence_gaps"]
    payload = pipe.telemetry([_row(pipe)], seq=2**62)
    expect = Expect(platform={"bad_schema": 1})
    check(run(pipe, [_telemetry(pipe, payload)], expect, "telemetry"), expect, "telemetry", pipe)
    # The count comes back from the store every SEQUENCE_REFRESH_S, so the earlier tests'
    # numbers may still add a few; the poisoned count was 2**62 minus the last number.
    added = pipe.platform_health()["ingestion"]["sequence_gaps"] - gaps
    assert 0 <= added < MAX_SEQUENCE_GAP


@pytest.mark.parametrize(
    "ts", ["0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z", 1, 1_795_420_800, 2**63, -1]
)
def test_timestamps_out_of_range_at_the_platform(pipe: Pipeline, ts: object) -> None:
    payload = pipe.telemetry([_row(pipe, ts=ts)])
    expect = Expect(platform={"bad_timestamp": 1})
    check(run(pipe, [_telemetry(pipe, payload)], expect, "telemetry"), expect, "telemetry", pipe)


def test_a_reading_ahead_of_the_platforms_clock(pipe: Pipeline) -> None:
    ahead = int(time.time() * 1000) + 86_400_000
    payload = pipe.telemetry([_row(pipe, ts=ahead), _row(pipe)])
    expect = Expect(platform={"clock_skew": 1}, kept=1)
    check(run(pipe, [_telemetry(pipe, payload)], expect, "telemetry"), expect, "telemetry", pipe)


@pytest.mark.parametrize(
    "suffix", ["{plant}/meters/kiln-coal/x", "{Plant}/meters/kiln-coal", "{plant}/meter/kiln-coal",
               "{plant}", "{plant}/telemetry/extra", "{plant}/status/x", "nobody/meters/m"],
)  # fmt: skip
def test_misaddressed_messages_are_counted(pipe: Pipeline, suffix: str) -> None:
    topic = f"{wire.TOPIC_ROOT}/" + suffix.format(
        plant=pipe.meter_plant, Plant=pipe.meter_plant.upper()
    )
    body = json.dumps({"v": 1, "unit": "t", "ts": pipe.next_ts_ms(), "value": 0.4}).encode()
    expect = Expect(platform={"misaddressed": 1})
    check(run(pipe, [Message(topic, body)], expect, "meter"), expect, "meter", pipe)


def test_telemetry_for_an_unknown_plant(pipe: Pipeline) -> None:
    body = json.loads(pipe.telemetry([_row(pipe)])) | {"plant": "nobody"}
    message = Message(wire.telemetry_topic("nobody"), json.dumps(body).encode())
    expect = Expect(platform={"unknown_plant": 1})
    check(run(pipe, [message], expect, "telemetry"), expect, "telemetry", pipe)


def test_a_fake_status_shows_no_fake_agent(pipe: Pipeline) -> None:
    topic = wire.status_topic(pipe.direct_plant)
    counters = {"received": 10**30, "rejected": {"x": 10**30}}
    absurd = json.dumps({"v": 1, "state": "online", "agent": f"agent-{pipe.direct_plant}",
                         "counters": counters}).encode()  # fmt: skip
    stranger = json.dumps({"v": 1, "state": "online", "agent": "agent-ghost"}).encode()
    ghost = json.dumps({"v": 1, "state": "online", "agent": "agent-ghost"}).encode()
    messages = [Message(topic, absurd), Message(topic, stranger),
                Message(wire.status_topic("ghost"), ghost)]  # fmt: skip
    expect = Expect(platform={"bad_schema": 1, "bad_status": 1, "unknown_plant": 1})
    check(run(pipe, messages, expect, "telemetry"), expect, "telemetry", pipe)
    agents = pipe.platform_health()["ingestion"]["agents"]
    assert pipe.direct_plant not in agents
    assert "ghost" not in agents


def test_a_retained_nested_status_survives_a_platform_restart(pipe: Pipeline) -> None:
    topic = wire.status_topic(pipe.direct_plant)
    expect = Expect(platform={"malformed_json": 1})
    message = Message(topic, NESTED, retain=True)
    try:
        check(run(pipe, [message], expect, "telemetry"), expect, "telemetry", pipe)
        pipe.platform.stop()
        pipe.start_platform()  # the retained message arrives again, and is refused again
        check(run(pipe, [], Expect(), "telemetry"), Expect(), "telemetry", pipe)
    finally:
        pipe.publisher.clear_retained(topic)


@pytest.mark.parametrize("start", ["%C2%B2", "9" * 5000, "-1", "1e3", "\u0661\u0662"])
def test_odd_query_times_are_a_clear_422(pipe: Pipeline, start: str) -> None:
    answer = httpx.get(
        f"http://127.0.0.1:{pipe.platform_port}/api/v1/plants/{pipe.direct_plant}/series"
        f"?start={start}",
        timeout=10,
        trust_env=False,
    )
    assert answer.status_code == 422, answer.text
    assert "start" in answer.text
    assert all(pipe.alive().values())
