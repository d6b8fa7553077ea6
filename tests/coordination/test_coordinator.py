"""The coordinator's bookkeeping on a real Mosquitto: periods on a grid, resuming after
a restart, redoing a period when the broker is lost mid-step, and the read lag."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import aiomqtt
import pytest

from carbonlink.config import Settings
from carbonlink.coordination import Coordinator, Journal, load_policy
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import open_store
from carbonlink.storage import Store
from tests.coordination.conftest import REFERENCE_YAML
from tests.coordination.recording import HOUR, START_MS, flat_settings, record
from tests.servers import MosquittoServer

QUARTER: Final = HOUR // 4
POLICIES: Final = REFERENCE_YAML.parent


class ManualClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    """Six hours of a flat cement line, already stored."""
    directory = tmp_path_factory.mktemp("recorded")
    settings = flat_settings(directory / "config", {"co-cement": "cement-01"})
    url = f"sqlite:///{directory / 'store.sqlite'}"
    store = open_store(url)
    record(settings, store, list(settings.plants.values()), START_MS, 6)
    store.close()
    return settings, url


@pytest.fixture
def store(recorded: tuple[Settings, str]) -> Iterator[Store]:
    opened = open_store(recorded[1])
    yield opened
    opened.close()


def _coordinator(
    settings: Settings, store: Store, broker: MosquittoServer, journal: Journal,
    clock: ManualClock, policy: str = "stage3", read_lag_s: float = 0.0,
) -> Coordinator:  # fmt: skip
    return Coordinator(
        settings, store, parse_broker_url(broker.url), load_policy(POLICIES / f"{policy}.yaml"),
        journal, clock_ms=clock, period_s=900.0, read_lag_s=read_lag_s,
    )  # fmt: skip


async def _steps(coordinator: Coordinator, broker: MosquittoServer, clock: ManualClock,
                 times: list[int]) -> None:  # fmt: skip
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for t in times:
            clock.now = t
            await coordinator.step(client)


def _contiguous(journal: Journal) -> list[tuple[int, int]]:
    periods = journal.periods()
    spans = list(zip(periods["start_ms"], periods["end_ms"], strict=True))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start == end, "a gap or an overlap between periods"
    return spans


def test_resumes_where_it_stopped(
    recorded: tuple[Settings, str], store: Store, mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    settings, _ = recorded
    clock = ManualClock(START_MS)
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        first = _coordinator(settings, store, mosquitto, journal, clock)
        asyncio.run(_steps(first, mosquitto, clock, [START_MS + k * QUARTER for k in range(4)]))
        assert first.periods == 4
        reports_before = len(journal.ledger)
    with Journal(path) as journal:
        again = _coordinator(settings, store, mosquitto, journal, clock)
        assert again.periods == 4  # picked up from the journal
        asyncio.run(_steps(again, mosquitto, clock, [START_MS + k * QUARTER for k in (4, 5, 6)]))
        spans = _contiguous(journal)
        assert spans[0] == (START_MS, START_MS + QUARTER)
        assert spans[-1] == (START_MS + 5 * QUARTER, START_MS + 6 * QUARTER)
        assert len(spans) == 6  # no period twice, none missing
        assert len(journal.ledger) == reports_before + 3  # stage 3: a report every period
        assert journal.ledger.verify().ok
        ends = [e["body"]["period_end_ms"] for e in journal.ledger.entries()]
        assert ends == sorted(set(ends))


def test_a_step_that_fails_midway_is_redone_once(
    recorded: tuple[Settings, str], store: Store, tmp_path: Path
) -> None:
    settings, _ = recorded
    clock = ManualClock(START_MS)
    with MosquittoServer(tmp_path / "broker") as broker, Journal(tmp_path / "j.sqlite") as journal:
        coordinator = _coordinator(settings, store, broker, journal, clock)
        asyncio.run(_steps(coordinator, broker, clock, [START_MS, START_MS + QUARTER]))

        async def lose_the_broker() -> None:
            async with aiomqtt.Client(broker.host, broker.port) as client:
                clock.now = START_MS + 2 * QUARTER
                broker.stop()
                with pytest.raises(aiomqtt.MqttError):
                    await coordinator.step(client)

        asyncio.run(lose_the_broker())
        assert coordinator.periods == 2  # the failed step left nothing behind
        assert len(journal.periods()) == 1
        broker.start()
        asyncio.run(_steps(coordinator, broker, clock, [START_MS + 3 * QUARTER]))
        spans = _contiguous(journal)
        # The lost step's period and the next one become one period, recorded once.
        assert spans == [
            (START_MS, START_MS + QUARTER),
            (START_MS + QUARTER, START_MS + 3 * QUARTER),
        ]
        assert journal.ledger.verify().ok
        assert len(journal.ledger) == 2


def test_read_lag_waits_for_data_in_flight(
    recorded: tuple[Settings, str], store: Store, mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    settings, _ = recorded
    clock = ManualClock(START_MS)
    with Journal(tmp_path / "j.sqlite") as journal:
        coordinator = _coordinator(settings, store, mosquitto, journal, clock, read_lag_s=300)
        asyncio.run(_steps(coordinator, mosquitto, clock, [START_MS, START_MS + QUARTER]))
        assert journal.periods().empty  # the period ended less than 5 minutes ago
        asyncio.run(_steps(coordinator, mosquitto, clock, [START_MS + 2 * QUARTER + 300_000]))
        spans = _contiguous(journal)
        assert spans == [
            (START_MS, START_MS + QUARTER),
            (START_MS + QUARTER, START_MS + 2 * QUARTER),
        ]
        # Every period was read whole: 15 one-minute readings of each of the 5 meters.
        assert list(journal.periods()["readings"]) == [
            75 - 1,
            75,
        ]  # the counter's first sets a baseline


def test_early_wakeups_change_nothing(
    recorded: tuple[Settings, str], store: Store, mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    settings, _ = recorded
    clock = ManualClock(START_MS)
    with Journal(tmp_path / "j.sqlite") as journal:
        coordinator = _coordinator(settings, store, mosquitto, journal, clock)
        times = [START_MS, START_MS + 60_000, START_MS + QUARTER - 1, START_MS + QUARTER + 5]
        asyncio.run(_steps(coordinator, mosquitto, clock, times))
        assert coordinator.periods == 2
        assert _contiguous(journal) == [(START_MS, START_MS + QUARTER)]  # on the grid
