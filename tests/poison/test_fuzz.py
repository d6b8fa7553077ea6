"""A bounded fuzz run through the real path: hypothesis mutates valid payloads of every
type (fields replaced by any JSON, removed, added, bytes cut or spoilt, topics bent) and
publishes them to the running broker, agent, platform and simulator.

What must hold whatever arrives, checked as the run goes and at its end:

- every service is still running, and a canary sent after each few messages is stored;
- nothing invalid is stored: every stored reading is of a configured meter, in its unit,
  finite, within the meter's rating over an interval no longer than its longest, timed
  within range and not ahead of the clock, and no two intervals of a meter overlap;
- every refusal the services counted was dead-lettered;
- the services' memory stays within a bound.

The run is derandomized: CI runs the same examples every time, and a failure replays.
Canaries go to a meter the fuzzer never touches, so a fuzzed reading that happens to be
valid can never collide with one.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonlink import wire
from carbonlink.config import load_config
from carbonlink.platform import open_store
from carbonlink.storage import epoch_ms
from tests.poison.pipeline import CANARY_TIMEOUT_S, MINUTE_MS, Pipeline
from tests.waiting import wait_for

pytestmark = [pytest.mark.mosquitto, pytest.mark.influxdb, pytest.mark.slow]

EXAMPLES: Final = 1000
CANARY_EVERY: Final = 15
CANARY_METER: Final = "kiln-petcoke"  # the fuzzer sends to kiln-coal and grid-main only
MEMORY_GROWTH_LIMIT_KIB: Final = 48 * 1024

json_leaves = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=24)
    | st.sampled_from(["", "t", "kWh", "measured", "counter", "1", "2026-12-06T00:00:00Z"])
)  # fmt: skip
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
topic_level = st.text(
    st.characters(
        codec="utf-8", exclude_characters="+#/", exclude_categories=["Cs", "Cc", "Cn", "Co"]
    ),
    max_size=12,
)


class Budget:
    """How often a canary is due, and what the run saw."""

    def __init__(self) -> None:
        self.sent = 0
        self.canaries: list[tuple[str, str, int, float]] = []


BUDGET = Budget()


def _mutate(body: Any, data: st.DataObject) -> Any:
    """Change one place in a JSON body: replace it with any JSON, or remove it."""
    if isinstance(body, dict) and body:
        key = data.draw(st.sampled_from(sorted(body, key=str)))
        action = data.draw(st.sampled_from(["replace", "remove", "descend", "add"]))
        out = dict(body)
        if action == "replace":
            out[key] = data.draw(json_values)
        elif action == "remove":
            del out[key]
        elif action == "add":
            out[data.draw(st.text(max_size=8))] = data.draw(json_values)
        else:
            out[key] = _mutate(body[key], data)
        return out
    if isinstance(body, list) and body:
        index = data.draw(st.integers(0, len(body) - 1))
        out_list = list(body)
        out_list[index] = _mutate(body[index], data) if data.draw(st.booleans()) else (
            data.draw(json_values)
        )  # fmt: skip
        return out_list
    return data.draw(json_values)


def _spoil(payload: bytes, data: st.DataObject) -> bytes:
    # Positions are drawn as fractions: payload lengths change with the clock, and the
    # draws must not (hypothesis replays them).
    how = data.draw(st.sampled_from(["keep", "keep", "keep", "cut", "flip", "junk"]))
    if how == "cut":
        return payload[: int(data.draw(st.floats(0, 1, exclude_max=True)) * len(payload))]
    if how == "flip":
        at = int(data.draw(st.floats(0, 1, exclude_max=True)) * len(payload))
        byte = data.draw(st.integers(0, 255))
        return payload[:at] + bytes([byte]) + payload[at + 1 :]
    if how == "junk":
        return data.draw(st.binary(max_size=64))
    return payload


def _meter(pipe: Pipeline, data: st.DataObject) -> tuple[str, bytes]:
    counter = data.draw(st.booleans())
    if counter:
        samples: list[dict[str, Any]] = [{"ts": pipe.next_ts_ms(), "value": 1000.0}]
        body: dict[str, Any] = {"v": 1, "unit": "kWh", "kind": "counter", "samples": samples}
        meter = "grid-main"
    else:
        samples = [{"ts": pipe.next_ts_ms(), "value": 0.4, "dur": 60, "q": "measured"}]
        body = {"v": 1, "unit": "t", "seq": 1, "samples": samples}
        meter = "kiln-coal"
    return wire.meter_topic(pipe.meter_plant, meter), json.dumps(
        _mutate(body, data), allow_nan=True
    ).encode()


def _telemetry(pipe: Pipeline, data: st.DataObject) -> tuple[str, bytes]:
    pipe._direct_seq += 1
    rows = [("kiln-coal", pipe.next_ts_ms(), 0.4, "t", MINUTE_MS, "measured") for _ in range(3)]
    body = json.loads(pipe.telemetry(rows, seq=pipe._direct_seq))
    return wire.telemetry_topic(pipe.direct_plant), json.dumps(
        _mutate(body, data), allow_nan=True
    ).encode()


def _status(pipe: Pipeline, data: st.DataObject) -> tuple[str, bytes]:
    body = {"v": 1, "state": "online", "agent": wire.agent_id(pipe.direct_plant),
            "counters": {"received": 3, "accepted": 3, "rejected": {"negative": 1}}}  # fmt: skip
    return wire.status_topic(pipe.direct_plant), json.dumps(
        _mutate(body, data), allow_nan=True
    ).encode()


def _directive(pipe: Pipeline, data: st.DataObject) -> tuple[str, bytes]:
    now = int(time.time() * 1000)
    body = {"v": 1, "plant": pipe.sim_plant, "issued_ms": now, "effective_ms": now,
            "stage": "primary_neutrality", "effort_firm": 0.5, "effort_platform": 0.2,
            "sigma": 1.0, "policy": "fuzz"}  # fmt: skip
    return wire.directive_topic(pipe.sim_plant), json.dumps(
        _mutate(body, data), allow_nan=True
    ).encode()


def _topic(pipe: Pipeline, data: st.DataObject) -> tuple[str, bytes]:
    levels = data.draw(st.lists(topic_level, min_size=0, max_size=4))
    if levels[-2:] == ["meters", CANARY_METER]:
        levels.append("x")
    return "/".join([wire.TOPIC_ROOT, *levels]), data.draw(st.binary(max_size=32))


MAKERS: Final[dict[str, Callable[[Pipeline, st.DataObject], tuple[str, bytes]]]] = {
    "meter": _meter, "telemetry": _telemetry, "status": _status, "directive": _directive,
    "topic": _topic,
}  # fmt: skip


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(kind=st.sampled_from(sorted(MAKERS)), data=st.data())
def _fuzz(pipe: Pipeline, kind: str, data: st.DataObject) -> None:
    topic, payload = MAKERS[kind](pipe, data)
    payload = _spoil(payload, data)
    if "/directives" in topic or "/status" in topic:
        # Retained too, sometimes: it must be refused again whenever it is delivered.
        pipe.publisher.publish(topic, payload, retain=data.draw(st.booleans()))
        pipe.publisher.clear_retained(topic)
    else:
        pipe.publisher.publish(topic, payload)
    BUDGET.sent += 1
    if BUDGET.sent % CANARY_EVERY == 0:
        _canary(pipe)


def _canary(pipe: Pipeline) -> None:
    ts = pipe.next_ts_ms()
    value = round(0.05 + (ts // MINUTE_MS % 100) / 10_000, 4)
    body = {"v": 1, "unit": "t", "ts": ts, "value": value, "dur": 60}
    pipe.publisher.publish(wire.meter_topic(pipe.meter_plant, CANARY_METER),
                           json.dumps(body).encode())  # fmt: skip
    reading = (pipe.meter_plant, CANARY_METER, ts, value)
    BUDGET.canaries.append(reading)
    pipe.wait_stored(reading, CANARY_TIMEOUT_S)
    assert all(pipe.alive().values()), pipe.platform.log_tail()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_fuzzed_payloads_through_the_real_path(pipe: Pipeline) -> None:
    _canary(pipe)  # everything warmed up before memory is measured
    pids = {name: s._process.pid for name, s in  # type: ignore[union-attr]
            (("platform", pipe.platform), ("agent", pipe.agent))}  # fmt: skip
    before = {name: _rss_kib(pid) for name, pid in pids.items()}
    letters_before = pipe.observer.count()
    refused_before = pipe.refusals()
    _fuzz(pipe)
    _canary(pipe)
    after = {name: _rss_kib(pid) for name, pid in pids.items()}
    growth = {name: after[name] - before[name] for name in pids}
    assert all(g < MEMORY_GROWTH_LIMIT_KIB for g in growth.values()), growth
    # Every refusal counted was dead-lettered (the simulator's are seen as dead letters).
    refused_after = pipe.refusals()
    counted = sum(
        refused_after[stage].get(r, 0) - refused_before[stage].get(r, 0)
        for stage in refused_after for r in refused_after[stage]
    )  # fmt: skip

    def letters() -> int:
        new = [d for d in pipe.observer.since(letters_before) if d.get("stage") != "simulator"]
        return len(new)

    wait_for(lambda: letters() >= counted, "every refusal dead-lettered", 20.0,
             detail=lambda: f"{letters()} dead letters for {counted} refusals")  # fmt: skip
    assert letters() == counted
    _nothing_invalid_stored(pipe)
    print(f"\nfuzz: {BUDGET.sent} payloads, {counted} refusals, "
          f"{len(BUDGET.canaries)} canaries stored; RSS growth {growth} KiB")  # fmt: skip


def _nothing_invalid_stored(pipe: Pipeline) -> None:
    settings_ = load_config(pipe.config)
    store = open_store(pipe.store_url)
    now = int(time.time() * 1000)
    try:
        for plant_id in (pipe.meter_plant, pipe.direct_plant):
            plant = settings_.plant(plant_id)
            frame = store.activity(plant_id)
            intervals: dict[str, list[tuple[int, int]]] = {}
            for meter_id, ts, value, unit, seconds, quality in zip(
                frame["meter"], epoch_ms(frame["time"]), frame["value"], frame["unit"],
                frame["duration_s"], frame["quality"], strict=True,
            ):  # fmt: skip
                meter = plant.meter(str(meter_id))
                duration = round(float(seconds) * 1000)
                assert meter is not None, meter_id
                assert unit == meter.unit
                assert quality in wire.QUALITIES
                assert wire.MIN_EPOCH_MS <= ts <= now + 300_000
                assert 1 <= duration <= meter.longest_interval_ms
                assert 0 <= float(value) <= meter.ceiling(duration), (meter_id, value, duration)
                intervals.setdefault(meter.id, []).append((ts - duration, ts))
            for meter_id, spans in intervals.items():
                spans.sort(key=lambda s: s[1])
                for (_, before_end), (start, _) in itertools.pairwise(spans):
                    assert start >= before_end, f"{plant_id}/{meter_id}: overlapping intervals"
    finally:
        store.close()
