"""API tokens on state-changing endpoints, protected reads, and commands (stage switches,
shadow policies) travelling from the API through the journal to a real coordinator."""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import aiomqtt
import pytest
import yaml
from fastapi.testclient import TestClient

from carbonlink.config import Settings, load_config
from carbonlink.coordination import Coordinator, Journal, load_policy
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import open_store
from carbonlink.storage import Store
from carbonlink.web.api import create_app
from carbonlink.web.dashboard import mount_dashboard
from tests.configs import REPO_CONFIG
from tests.coordination.recording import HOUR, START_MS, flat_settings, record
from tests.servers import MosquittoServer

TOKEN: Final = "s3cret-token-for-tests"
QUARTER: Final = HOUR // 4


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    directory = tmp_path_factory.mktemp("recorded")
    settings = flat_settings(directory / "config", {"cmd-cement": "cement-01"})
    shutil.copytree(REPO_CONFIG / "policies", directory / "config" / "policies")
    url = f"sqlite:///{directory / 'store.sqlite'}"
    store = open_store(url)
    record(settings, store, list(settings.plants.values()), START_MS, 4)
    store.close()
    return load_config(settings.path), url


@pytest.fixture
def store(recorded: tuple[Settings, str]) -> Iterator[Store]:
    opened = open_store(recorded[1])
    yield opened
    opened.close()


def _client(settings: Settings, store: Store, journal: Path | None = None) -> TestClient:
    app = create_app(store, settings, journal_path=journal, clock_ms=lambda: START_MS)
    mount_dashboard(app, store, settings)
    return TestClient(app)


RECOMPUTE: Final = {"start": str(START_MS), "end": str(START_MS + HOUR)}


def test_state_changes_are_disabled_without_a_token(
    recorded: tuple[Settings, str], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARBONLINK_API_TOKEN", raising=False)
    settings, _ = recorded
    with _client(settings, store) as api:
        refused = api.post("/api/v1/plants/cmd-cement/recompute", json=RECOMPUTE)
        assert refused.status_code == 403
        assert "$CARBONLINK_API_TOKEN" in refused.json()["detail"]
        assert api.get("/api/v1/plants").status_code == 200  # reads stay open


def test_token_is_checked_on_every_state_change(
    recorded: tuple[Settings, str], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONLINK_API_TOKEN", TOKEN)
    settings, _ = recorded
    url = "/api/v1/plants/cmd-cement/recompute"
    with _client(settings, store) as api:
        missing = api.post(url, json=RECOMPUTE)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = api.post(url, json=RECOMPUTE, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = api.post(url, json=RECOMPUTE, headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200, good.text
        # [start, end) holds minutes 1..59 of the five emitting meters (clinker's process
        # emissions too), less the counter's first register, which only sets its baseline.
        assert good.json()["readings"] == 5 * 59 - 1
        basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        again = api.post(url, json=RECOMPUTE, headers={"Authorization": f"Basic {basic}"})
        assert again.status_code == 200
        bad_range = api.post(
            url, json={"start": RECOMPUTE["end"], "end": RECOMPUTE["start"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )  # fmt: skip
        assert bad_range.status_code == 422
        assert "end must be after start" in bad_range.json()["detail"][0]["msg"]


def test_protected_reads_cover_the_dashboard(
    recorded: tuple[Settings, str], store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CARBONLINK_API_TOKEN", TOKEN)
    settings, _ = recorded
    raw = yaml.safe_load(settings.path.read_text())
    raw["api"] = {"read_requires_token": True}
    path = settings.path.with_name("protected.yaml")
    path.write_text(yaml.safe_dump(raw))
    protected = load_config(path)
    with _client(protected, store) as api:
        for page in ("/api/v1/plants", "/dashboard", "/dashboard/static/common.js"):
            answer = api.get(page)
            assert answer.status_code == 401, page
            assert answer.headers["www-authenticate"].startswith("Basic")  # a browser prompt
        basic = base64.b64encode(f"me:{TOKEN}".encode()).decode()
        assert api.get("/dashboard", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert api.get("/api/v1/plants", headers=bearer).status_code == 200


def test_commands_reach_the_coordinator(
    recorded: tuple[Settings, str], store: Store, mosquitto: MosquittoServer,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("CARBONLINK_API_TOKEN", TOKEN)
    settings, _ = recorded
    journal_path = tmp_path / "journal.sqlite"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    clock = [START_MS]
    policy = load_policy(settings.policies_dir() / "stage1.yaml")
    shadows = [load_policy(settings.policies_dir() / "stage2.yaml")]

    async def steps(coordinator: Coordinator, times: list[int]) -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            for t in times:
                clock[0] = t
                await coordinator.step(client)

    with Journal(journal_path) as journal:
        coordinator = Coordinator(
            settings, store, parse_broker_url(mosquitto.url), policy, journal, shadows=shadows,
            clock_ms=lambda: clock[0], period_s=900.0, read_lag_s=0.0,
        )  # fmt: skip
        asyncio.run(steps(coordinator, [START_MS, START_MS + QUARTER]))
        with _client(settings, store, journal_path) as api:
            switch = api.post("/api/v1/coordination/stage", json={"stage": 3}, headers=auth)
            assert switch.status_code == 202, switch.text
            assert switch.json()["status"] == "queued"
            add = api.post(
                "/api/v1/coordination/shadows", json={"policy": "stage2-budget"}, headers=auth
            )
            assert add.status_code == 202, add.text
            assert (
                api.delete("/api/v1/coordination/shadows/stage2", headers=auth).status_code == 202
            )
            refused = api.delete("/api/v1/coordination/shadows/stage1", headers=auth)
            assert refused.status_code == 202  # queued; the coordinator refuses it
            assert (
                api.post("/api/v1/coordination/stage", json={"stage": 4}, headers=auth).status_code
                == 422
            )
            sneaky = api.post(
                "/api/v1/coordination/shadows", json={"policy": "../../etc/passwd"}, headers=auth
            )
            assert sneaky.status_code == 422
            assert api.post("/api/v1/coordination/shadows", json={"policy": "nope"},
                            headers=auth).status_code == 404  # fmt: skip
        asyncio.run(steps(coordinator, [START_MS + 2 * QUARTER, START_MS + 3 * QUARTER]))
        assert coordinator.stage_at(START_MS + 3 * QUARTER, START_MS) == 3
        with _client(settings, store, journal_path) as api:
            status = api.get("/api/v1/coordination/status").json()
            commands = {c["kind"] + str(c["body"].get("name", "")): c
                        for c in api.get("/api/v1/coordination/commands").json()}  # fmt: skip
            shadows_now = [s["policy"] for s in api.get("/api/v1/coordination/shadows").json()]
    assert status["stage"] == 3
    assert status["directives"]["cmd-cement"]["sigma"] == pytest.approx(1.25)
    assert status["overrides"][0]["stage"] == 3
    assert status["shadows"] == ["stage2-budget"]
    assert shadows_now == ["stage1", "stage2-budget"]  # the active one, and the new shadow
    assert commands["stage"]["outcome"].startswith("applied: stage 3")
    assert commands["remove_shadowstage1"]["outcome"].startswith("refused:")
    assert commands["remove_shadowstage2"]["outcome"].startswith("applied")
    # A restarted coordinator keeps the switch and the shadow it was told about.
    with Journal(journal_path) as journal:
        again = Coordinator(
            settings, store, parse_broker_url(mosquitto.url), policy, journal, shadows=shadows,
            clock_ms=lambda: clock[0], period_s=900.0, read_lag_s=0.0,
        )  # fmt: skip
        asyncio.run(steps(again, [START_MS + 4 * QUARTER]))
        assert again.stage_at(START_MS + 4 * QUARTER, START_MS) == 3
        assert again.journal.shadows()[-1]["policy"] in {"stage1", "stage2-budget"}
        assert {s["policy"] for s in again.journal.shadows()} == {"stage1", "stage2-budget"}
