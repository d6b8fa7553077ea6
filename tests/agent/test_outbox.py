"""The agent's outbox: bounded on disk, with the documented policy when it is full."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carbonlink import wire
from carbonlink.agent import Agent
from carbonlink.config import AgentConfig, OutboxFullPolicy, load_config
from carbonlink.mqtt.client import parse_broker_url
from tests.configs import REPO_CONFIG

NOW_MS = 1_795_420_800_000
MINUTE = 60_000
TOPIC = wire.meter_topic("cement-01", "kiln-coal")


def agent(tmp_path: Path, policy: OutboxFullPolicy, limit: int = 5) -> Agent:
    plant = load_config(REPO_CONFIG / "carbonlink.yaml").plant("cement-01")
    config = AgentConfig(outbox_max_readings=limit, outbox_full_policy=policy)
    # No broker needed: handle() validates and commits to the outbox synchronously.
    return Agent(
        plant, parse_broker_url("mqtt://127.0.0.1:9"), config,
        outbox_path=tmp_path / "outbox.sqlite", now_ms=lambda: NOW_MS,
    )  # fmt: skip


def coal(*minutes: int) -> bytes:
    samples = [{"ts": NOW_MS - m * MINUTE, "value": 0.3} for m in minutes]
    return json.dumps({"v": 1, "unit": "t", "samples": samples}).encode()


def test_reject_new_refuses_the_overflow_with_its_reason(tmp_path: Path) -> None:
    a = agent(tmp_path, OutboxFullPolicy.REJECT_NEW)
    a.handle(TOPIC, coal(9, 8, 7, 6))
    a.handle(TOPIC, coal(5, 4, 3))  # room for one of three
    assert a.outbox_depth == 5
    assert a.counters.accepted == 5
    assert dict(a.counters.rejected) == {"outbox_full": 2}


def test_drop_oldest_keeps_the_newest_readings(tmp_path: Path) -> None:
    a = agent(tmp_path, OutboxFullPolicy.DROP_OLDEST)
    a.handle(TOPIC, coal(9, 8, 7, 6))
    a.handle(TOPIC, coal(5, 4, 3))
    assert a.outbox_depth == 5
    assert a.counters.dropped_oldest == 2
    assert a.counters.rejected == {}
    kept = [json.loads(item)[1] for _, item in a._outbox.peek(10)]
    assert kept == [NOW_MS - m * MINUTE for m in (7, 6, 5, 4, 3)]


@pytest.mark.parametrize("policy", list(OutboxFullPolicy))
def test_outbox_survives_a_restart(tmp_path: Path, policy: OutboxFullPolicy) -> None:
    first = agent(tmp_path, policy, limit=100)
    first.handle(TOPIC, coal(3, 2, 1))
    first._outbox.close()  # the process dies with readings unsent
    second = agent(tmp_path, policy, limit=100)
    assert second.outbox_depth == 3


def test_unwritable_outbox_refuses_with_reason(tmp_path: Path) -> None:
    a = agent(tmp_path, OutboxFullPolicy.REJECT_NEW, limit=100)
    a._outbox.close()  # stands in for a disk that fails: writes raise sqlite3 errors
    a.handle(TOPIC, coal(2, 1))
    assert dict(a.counters.rejected) == {"outbox_unwritable": 2}
    assert a.counters.accepted == 0


def test_forwarded_readings_leave_with_their_sequence_number(tmp_path: Path) -> None:
    """Removing sent readings and recording the batch number is one transaction, so a
    restart continues the sequence even if nothing arrived after the last send."""
    from carbonlink.storage.queue import DurableQueue

    queue = DurableQueue(tmp_path / "q.sqlite")
    queue.append([b"a", b"b", b"c"])
    (last_id, _), *_ = reversed(queue.peek(2))
    queue.remove_through(last_id, {"seq": "41"})
    queue.close()
    reopened = DurableQueue(tmp_path / "q.sqlite")
    assert len(reopened) == 1
    assert reopened.meta() == {"seq": "41"}
    reopened.close()


def test_a_message_with_nothing_to_keep_writes_nothing(tmp_path: Path) -> None:
    a = agent(tmp_path, OutboxFullPolicy.REJECT_NEW)
    bad = json.dumps({"v": 1, "unit": "t", "ts": NOW_MS, "value": -1}).encode()
    a.handle(TOPIC, bad)
    assert a._outbox.meta() == {}
    assert a.outbox_depth == 0
    assert dict(a.counters.rejected) == {"negative": 1}


def test_counters_count_readings_and_add_up(tmp_path: Path) -> None:
    # One definition: readings, never messages. Before, a batch of four counted one
    # "received" and four "accepted" (an agent reported received 1,802 and accepted 1,803).
    a = agent(tmp_path, OutboxFullPolicy.REJECT_NEW, limit=100)

    def adds_up() -> bool:
        c = a.counters
        return c.received == c.accepted + c.rejected.total() + c.baselines

    a.handle(TOPIC, coal(9, 8, 7, 6))  # four readings in one message
    assert (a.counters.received, a.counters.accepted) == (4, 4)
    a.handle(TOPIC, coal(5, 5))  # a duplicate within the message
    assert a.counters.received == 6
    assert adds_up()
    wrong_unit = json.dumps({"v": 1, "unit": "kg", "samples": [
        {"ts": NOW_MS - 4 * MINUTE, "value": 1.0}, {"ts": NOW_MS - 3 * MINUTE, "value": 1.0},
    ]}).encode()  # fmt: skip
    a.handle(TOPIC, wrong_unit)  # refused as a whole: both readings refused
    assert a.counters.rejected["wrong_unit"] == 2
    assert adds_up()
    both_wrong = json.dumps({"v": 1, "unit": "kg", "samples": [
        {"ts": "yesterday", "value": 1.0},
    ]}).encode()  # fmt: skip
    a.handle(TOPIC, both_wrong)  # one reading, two faults: refused once
    assert a.counters.rejected["wrong_unit"] == 2
    assert a.counters.rejected["bad_timestamp"] == 1
    assert adds_up()
    grid = wire.meter_topic("cement-01", "grid-main")
    register = json.dumps({"v": 1, "unit": "kWh", "kind": "counter", "samples": [
        {"ts": NOW_MS - 2 * MINUTE, "value": 1000.0}, {"ts": NOW_MS - MINUTE, "value": 1400.0},
    ]}).encode()  # fmt: skip
    a.handle(grid, register)  # the first register value only sets the baseline
    assert a.counters.baselines == 1
    assert adds_up()
    a.handle(TOPIC, b"{not json")
    assert a.counters.received == 12
    assert adds_up()
