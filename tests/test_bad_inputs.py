"""The bad-input corpus (tests/data/bad/): every case gets exactly the rejection it names,
with its reason and detail, and loses nothing valid beside it.

- ``mqtt/``: meter messages through the agent's decoder and checks, telemetry batches
  through the platform's ingest, directives through the simulators' decoder;
- ``config/``: plant, services, policy, parameter and fault files: a ConfigError naming
  the file and the key;
- ``api/``: HTTP requests: the status and the reason in the answer.

A case file says what it is in its first line; add one by dropping a file in.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from string import Template
from typing import Any, Final

import pytest
import yaml
from fastapi.testclient import TestClient

from carbonlink import wire
from carbonlink.agent._validation import MeterValidator
from carbonlink.config import Settings, load_config
from carbonlink.coordination import load_params, load_policy
from carbonlink.errors import ConfigError, RejectedReading
from carbonlink.platform import Ingestor, open_store
from carbonlink.simulators import load_faults
from carbonlink.web.api import create_app
from tests.configs import REPO_CONFIG, write_config

CORPUS: Final = Path(__file__).parent / "data" / "bad"
CASES: Final = sorted(CORPUS.rglob("*.yaml"))
NOW_MS: Final = 1_795_420_800_000  # the agent's clock: 2026-11-23T08:00:00Z
MINUTE: Final = 60_000
PLANT: Final = "bad-cement"
TOKEN: Final = "corpus-token"
REASONS: Final = {v for k, v in vars(wire.Reason).items() if not k.startswith("_")}


def substitute(text: str) -> str:
    return Template(text).substitute(
        plant=PLANT,
        now=wire.format_timestamp(NOW_MS),
        now_ms=NOW_MS,
        now_minus_1m=wire.format_timestamp(NOW_MS - MINUTE),
        now_minus_30s=wire.format_timestamp(NOW_MS - MINUTE // 2),
        earlier=wire.format_timestamp(NOW_MS - 2 * MINUTE),
        future=wire.format_timestamp(NOW_MS + 3_600_000),
        ancient=wire.format_timestamp(NOW_MS - 8 * 24 * 3_600_000),
        reference=REPO_CONFIG / "policies" / "reference.yaml",
    )


def payload_of(case: dict[str, Any]) -> bytes:
    if "payload_hex" in case:
        return bytes.fromhex(case["payload_hex"])
    if "payload_size" in case:
        body = substitute('{"v":1,"unit":"t","ts":"$now","value":0.38}')
        return (body[:-1] + " " * (case["payload_size"] - len(body)) + "}").encode()
    return substitute(case["payload"]).encode()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_config(write_config(tmp_path_factory.mktemp("corpus"), plants={PLANT: "cement-01"}))


def test_the_corpus_covers_every_kind_of_bad_input() -> None:
    groups = {p.parent.name: 0 for p in CASES}
    for path in CASES:
        groups[path.parent.name] += 1
    assert len(CASES) >= 40
    assert set(groups) == {"mqtt", "config", "api"}
    assert min(groups.values()) >= 8
    seen = {yaml.safe_load(p.read_text())["expect"].get("reason") for p in CASES} - {None}
    assert seen <= REASONS
    # Every rejection reason the wire format defines has at least one case, but for
    # out_of_order of interval meters past the duplicate window (tested in the agent's
    # own tests: it needs 4,096 readings first).
    assert REASONS - seen <= {"out_of_order"} or "out_of_order" in seen


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_bad_input_is_refused_with_its_reason(
    path: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = yaml.safe_load(path.read_text())
    assert path.read_text().startswith("# "), f"{path.name}: say what the case is, first line"
    expect = case["expect"]
    target = case["target"]
    if target in ("meter", "telemetry", "directive"):
        reasons, details, kept = _mqtt(case, settings)
        assert reasons == [expect["reason"]], details
        assert expect["detail"] in details[0]
        assert kept == expect.get("kept", expect.get("stored", 0))
    elif target == "config":
        error = _config(case, tmp_path)
        assert error.path is not None, error
        assert error.path.endswith(case["file"]), error
        assert error.key == expect["key"] or (
            expect["key"] == "line" and error.key.startswith("line ")
        ), error
        assert expect["contains"] in str(error)
    else:
        answer = _api(case, settings, tmp_path, monkeypatch)
        assert answer.status_code == expect["status"], answer.text
        assert expect["contains"] in answer.text


def _mqtt(case: dict[str, Any], settings: Settings) -> tuple[list[str], list[str], int]:
    """(reasons, details, valid readings kept) of one message on the path its topic takes."""
    topic, payload = substitute(case["topic"]), payload_of(case)
    target = case["target"]
    try:
        if target == "meter":
            validator = MeterValidator(
                settings.plant(PLANT), settings.services.agent, now_ms=lambda: NOW_MS
            )
            for before in case.get("before", []):
                earlier = validator.check(
                    wire.decode_meter_message(topic, substitute(before).encode())
                )
                assert not earlier.rejected, earlier.rejected
            verdict = validator.check(wire.decode_meter_message(topic, payload))
            rejected, kept = list(verdict.rejected), len(verdict.accepted)
        elif target == "telemetry":
            result = Ingestor.from_settings(settings).ingest(topic, payload)
            rejected, kept = list(result.rejected), len(result.stored)
        else:
            wire.decode_directive(topic, payload)
            rejected, kept = [], 0
    except RejectedReading as exc:
        rejected, kept = [exc], 0
    return [r.reason for r in rejected], [r.detail for r in rejected], kept


def _config(case: dict[str, Any], tmp_path: Path) -> ConfigError:
    directory = write_config(tmp_path / "config", plants={"cement-01": "cement-01"}).parent
    target = directory / case["file"]
    target.parent.mkdir(parents=True, exist_ok=True)
    if case["kind"] == "policy":  # its parameter file beside it, as in the repository
        shutil.copy(REPO_CONFIG / "policies" / "reference.yaml", target.parent)
    target.write_text(substitute(case["content"]))
    loaders = {
        "plant": lambda: load_config(directory / "carbonlink.yaml"),
        "services": lambda: load_config(directory / "carbonlink.yaml"),
        "policy": lambda: load_policy(target),
        "params": lambda: load_params(target),
        "faults": lambda: load_faults(target),
    }
    with pytest.raises(ConfigError) as caught:
        loaders[case["kind"]]()
    return caught.value


def _api(
    case: dict[str, Any], settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    if case.get("token"):
        monkeypatch.setenv("CARBONLINK_API_TOKEN", TOKEN)
    else:
        monkeypatch.delenv("CARBONLINK_API_TOKEN", raising=False)
    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    journal = tmp_path / "journal.sqlite"
    from carbonlink.coordination import Journal

    Journal(journal).close()  # a journal as a running coordinator leaves it
    headers = {"Authorization": f"Bearer {TOKEN}"} if case.get("token") else {}
    try:
        with TestClient(create_app(store, settings, journal_path=journal)) as api:
            return api.request(
                case["method"], substitute(case["url"]), json=case.get("body"), headers=headers
            )
    finally:
        store.close()
