"""The coordination endpoints and ``coordinate --verify-ledger``, over a journal that a
real coordinator wrote (real Mosquitto, a recorded SQLite store)."""

from __future__ import annotations

import asyncio
import io
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import aiomqtt
import pandas as pd
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from carbonlink.cli import main
from carbonlink.config import Settings
from carbonlink.coordination import Coordinator, Journal, load_policy
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import open_store
from carbonlink.web.api import create_app
from tests.coordination.conftest import REFERENCE_YAML
from tests.coordination.recording import HOUR, START_MS, flat_settings, record
from tests.servers import MosquittoServer

QUARTER: Final = HOUR // 4
STEPS: Final = 16  # four hours: the switch at +2h, so stage 1 then stage 3
POLICIES: Final = REFERENCE_YAML.parent


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """Ours alone: the ledger anchor is one retained topic per deployment."""
    with MosquittoServer(tmp_path_factory.mktemp("broker")) as server:
        yield server


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, broker: MosquittoServer
) -> tuple[Settings, str, Path]:
    """A coordinator run: switch-1-to-3 with stage 1 and 2 as shadows, over two plants."""
    directory = tmp_path_factory.mktemp("world")
    settings = flat_settings(
        directory / "config", {"api-cement": "cement-01", "api-steel": "steel-01"}
    )
    url = f"sqlite:///{directory / 'store.sqlite'}"
    store = open_store(url)
    record(settings, store, list(settings.plants.values()), START_MS, 5)
    journal_path = directory / "journal.sqlite"
    clock = [START_MS]
    with Journal(journal_path) as journal:
        policy = load_policy(POLICIES / "switch-1-to-3.yaml")
        coordinator = Coordinator(
            settings, store, parse_broker_url(broker.url), policy, journal,
            shadows=[load_policy(POLICIES / f"stage{n}.yaml") for n in (1, 2)],
            clock_ms=lambda: clock[0], period_s=900.0, read_lag_s=0.0,
        )  # fmt: skip

        async def run() -> None:
            async with aiomqtt.Client(broker.host, broker.port) as client:
                for k in range(STEPS + 1):
                    clock[0] = START_MS + k * QUARTER
                    await coordinator.step(client)

        asyncio.run(run())
    store.close()
    return settings, url, journal_path


@pytest.fixture(scope="module")
def client(world: tuple[Settings, str, Path]) -> Iterator[TestClient]:
    settings, url, journal_path = world
    store = open_store(url)
    with TestClient(create_app(store, settings, journal_path=journal_path)) as test_client:
        yield test_client
    store.close()


def test_without_a_journal_the_endpoints_say_why(
    world: tuple[Settings, str, Path], tmp_path: Path
) -> None:
    settings, url, _ = world
    store = open_store(url)
    missing = tmp_path / "nope.sqlite"
    with TestClient(create_app(store, settings, journal_path=missing)) as api:
        response = api.get("/api/v1/coordination/status")
    store.close()
    assert response.status_code == 503
    assert str(missing) in response.json()["detail"]
    assert "carbonlink coordinate" in response.json()["detail"]


def test_status_names_policy_stage_and_ledger_head(client: TestClient) -> None:
    status = client.get("/api/v1/coordination/status").json()
    assert status["policy"] == "switch-1-to-3"
    assert status["stage"] == 3
    assert status["shadows"] == ["stage1", "stage2"]
    assert status["periods"] == STEPS + 1
    assert set(status["directives"]) == {"api-cement", "api-steel"}
    assert status["directives"]["api-cement"]["sigma"] == pytest.approx(1.25)
    entries = client.get("/api/v1/coordination/ledger", params={"limit": 10_000}).json()
    assert status["ledger"]["reports"] == len(entries)
    assert status["ledger"]["head"] == entries[-1]["hash"]
    assert status["sharing"]["1"]["level"] == "self_reported"


def test_ledger_as_json_csv_and_the_newest(client: TestClient) -> None:
    entries = client.get("/api/v1/coordination/ledger", params={"limit": 10_000}).json()
    # Stage 3 (8 periods x 2 plants) is live; stage 1's totals were closed by the switch
    # and are due an hour after it, within the run.
    stages = [e["body"]["stage"] for e in entries]
    assert stages.count(3) == 2 * 8
    assert stages.count(1) == 2
    assert [e["index"] for e in entries] == list(range(len(entries)))
    newest = client.get("/api/v1/coordination/ledger", params={"newest": True, "limit": 2}).json()
    assert [e["index"] for e in newest] == [len(entries) - 2, len(entries) - 1]
    one = client.get("/api/v1/coordination/ledger", params={"plant": "api-steel"}).json()
    assert {e["body"]["plant"] for e in one} == {"api-steel"}
    csv = client.get("/api/v1/coordination/ledger", params={"format": "csv"})
    frame = pd.read_csv(io.StringIO(csv.text))
    assert {"index", "hash", "transfer_M", "transfer_P", "transfer_G"} <= set(frame.columns)
    assert frame[["transfer_M", "transfer_P", "transfer_G"]].sum(axis=1).abs().max() < 1e-9


def test_transfers_balance(client: TestClient) -> None:
    transfers = client.get("/api/v1/coordination/transfers").json()
    assert abs(transfers["balance"]) < 1e-9
    ends = [row["period_end_ms"] for row in transfers["rows"]]
    assert ends == sorted(ends)  # time order, not the ledger's release order
    last = transfers["rows"][-1]
    assert last["cumulative_G"] == pytest.approx(transfers["totals"]["G"])
    assert any(row["G"] != 0 for row in transfers["rows"])


def test_verify_the_chain_and_against_storage(client: TestClient) -> None:
    result = client.get("/api/v1/coordination/ledger/verify").json()
    assert result["ok"] is True
    deep = client.get("/api/v1/coordination/ledger/verify", params={"against_store": True}).json()
    assert deep["ok"] is True, deep["lines"]
    assert deep["store_checked"] is True
    assert deep["findings"] == []  # recorded data: nothing was in flight
    assert deep["lines"][-1].startswith("OK: every report re-derives from sqlite:///")


def test_the_api_and_the_cli_say_the_same(
    client: TestClient, world: tuple[Settings, str, Path]
) -> None:
    """One check, one set of figures: ledger/verify (what the dashboard shows) gives the
    very lines `carbonlink coordinate --verify-ledger --store` prints."""
    settings, url, journal_path = world
    api = client.get("/api/v1/coordination/ledger/verify", params={"against_store": True})
    cli = CliRunner().invoke(
        main,
        ["coordinate", "--config", str(settings.path), "--verify-ledger", str(journal_path),
         "--store", url],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert cli.stdout.splitlines() == api.json()["lines"]
    assert api.json()["reports"] == int(cli.stdout.split()[1])


def test_shadows_and_periods(client: TestClient) -> None:
    shadows = client.get("/api/v1/coordination/shadows").json()
    assert [s["policy"] for s in shadows] == ["switch-1-to-3", "stage1", "stage2"]
    assert shadows[0]["active"] is True
    assert shadows[1]["emissions_t"] > shadows[0]["emissions_t"]  # stage 3 abates more
    assert shadows[0]["hours"] == pytest.approx(STEPS / 4)
    history = client.get("/api/v1/coordination/shadows", params={"history": True}).json()
    assert len(history) == 3 * STEPS
    periods = client.get("/api/v1/coordination/periods", params={"plant": "api-cement"}).json()
    assert len(periods) == STEPS
    assert {p["stage"] for p in periods} == {1, 3}
    csv = client.get("/api/v1/coordination/periods", params={"format": "csv"})
    assert len(pd.read_csv(io.StringIO(csv.text))) == 2 * STEPS
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/coordination/ledger/verify" in paths


def test_cli_verifies_chain_anchor_and_storage(
    world: tuple[Settings, str, Path], broker: MosquittoServer, tmp_path: Path
) -> None:
    settings, url, journal_path = world
    copy = tmp_path / "journal.sqlite"
    shutil.copy(journal_path, copy)
    runner = CliRunner()
    verify = ["coordinate", "--config", str(settings.path), "--verify-ledger", str(copy)]
    ok = runner.invoke(
        main, [*verify, "--store", url, "--anchor", "broker", "--broker", broker.url]
    )
    assert ok.exit_code == 0, ok.output
    assert "chain intact and matches the anchor" in ok.stdout
    assert "every report re-derives" in ok.stdout
    with Journal.open_readonly(copy) as journal:
        head = journal.ledger.head()
    # Remove the newest report: the chain still holds, the anchor does not.
    with sqlite3.connect(copy) as db:
        db.execute("DELETE FROM reports WHERE idx = ?", (head[0] - 1,))
    assert runner.invoke(main, verify).exit_code == 0
    cut = runner.invoke(main, [*verify, "--anchor", f"{head[0]}:{head[1]}"])
    assert cut.exit_code == 1
    assert "remain" in cut.stdout
    # Change what storage holds for one reported period: re-derivation finds it.
    shutil.copy(journal_path, copy)
    tampered_store = tmp_path / "store.sqlite"
    shutil.copy(url.removeprefix("sqlite:///"), tampered_store)
    one_reading = START_MS + 3 * HOUR + 7 * 60_000  # a stage-3 period's reading
    with sqlite3.connect(tampered_store) as db:
        changed = db.execute(
            "UPDATE emissions SET co2e_kg = co2e_kg * 2 WHERE plant = ? AND ts_ms = ?",
            ("api-cement", one_reading),
        ).rowcount
    assert changed >= 1
    wrong = runner.invoke(main, [*verify, "--store", f"sqlite:///{tampered_store}"])
    assert wrong.exit_code == 1
    assert "MISMATCH at report" in wrong.stdout
    bad = runner.invoke(main, [*verify, "--anchor", "12"])
    assert bad.exit_code == 2
    assert "--anchor" in bad.stderr
