"""Config loads into frozen objects; every broken file names the file, key and problem."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from carbonlink.config import load_config
from carbonlink.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A private copy of the repository's config, free to be broken."""
    target = tmp_path / "config"
    shutil.copytree(REPO_CONFIG, target)
    return target


def test_repository_config_loads_frozen() -> None:
    settings = load_config(REPO_CONFIG / "carbonlink.yaml")
    assert {"cement-01", "steel-01", "textiles-01"} <= set(settings.plants)
    cement = settings.plant("cement-01")
    assert cement.meter("kiln-coal") is not None
    with pytest.raises(pydantic.ValidationError):
        cement.id = "other"  # type: ignore[misc]


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("file", "old", "new", "key", "problem"),
    [
        ("plants/cement-01.yaml", "    unit: t\n", "", "meters[0].unit", "Field required"),
        (
            "plants/cement-01.yaml",
            "rated_per_hour: 30",
            "rated_per_hour: -30",
            "meters[0].rated_per_hour",
            "greater than 0",
        ),
        (
            "plants/cement-01.yaml",
            "reading: interval",
            "reading: gauge",
            "meters[0].reading",
            "'interval' or 'counter'",
        ),
        (
            "plants/cement-01.yaml",
            "timezone: Asia/Shanghai",
            "timezone: Mars/Olympus",
            "timezone",
            "unknown time zone",
        ),
        ("plants/cement-01.yaml", "id: kiln-petcoke", "id: kiln-coal", "meters", "appears twice"),
        ("plants/cement-01.yaml", "id: cement-01", "id: Cement 01", "id", "should match pattern"),
        (
            "plants/cement-01.yaml",
            "archetype: cement",
            "archetype: cement\ncolour: grey",
            "colour",
            "Extra inputs",
        ),
        ("plants/cement-01.yaml", "name: Cement", "name: [Cement", "line ", "invalid YAML"),
        (
            "plants/cement-01.yaml",
            "activity: other_bituminous_coal",
            "activity: unobtainium",
            "meters[0]",
            "unobtainium",
        ),
        ("plants/cement-01.yaml", "unit: t\n", "unit: L\n", "meters[0]", "'L'"),
        (
            "plants/cement-01.yaml",
            "factor_set: ipcc2006-cn2023",
            "factor_set: nope",
            "factor_set",
            "no factor set file",
        ),
        (
            "carbonlink.yaml",
            "url: mqtt://127.0.0.1:1883",
            "url: http://x",
            "broker.url",
            "mqtt://HOST:PORT",
        ),
        (
            "carbonlink.yaml",
            "batch_max_readings: 500",
            "batch_max_readings: lots",
            "agent.batch_max_readings",
            "valid integer",
        ),
        (
            "carbonlink.yaml",
            "uplink: mqtt",
            "uplink: jetstream",
            "jetstream",
            "no NATS server given, but agent.uplink: jetstream",
        ),
        (
            "carbonlink.yaml",
            "servers: []",
            "servers: [mqtt://127.0.0.1:4222]",
            "jetstream.servers",
            "nats://HOST:PORT",
        ),
        (
            "carbonlink.yaml",
            "stream: CARBONLINK_TELEMETRY",
            "stream: carbon.telemetry",
            "jetstream.stream",
            "should match pattern",
        ),
    ],
)
def test_broken_file_names_file_key_and_problem(
    config_dir: Path, file: str, old: str, new: str, key: str, problem: str
) -> None:
    replace_in(config_dir / file, old, new)
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir / "carbonlink.yaml")
    error = caught.value
    assert error.path == str(config_dir / file)
    assert error.key.startswith(key)
    assert problem in error.problem
    assert str(error).startswith(f"{config_dir / file}: ")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_duplicate_plant_ids_across_files(config_dir: Path) -> None:
    shutil.copy(config_dir / "plants/cement-01.yaml", config_dir / "plants/zz-copy.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir / "carbonlink.yaml")
    assert caught.value.path == str(config_dir / "plants/zz-copy.yaml")
    assert caught.value.key == "id"


def test_plant_selection_must_exist(config_dir: Path) -> None:
    replace_in(
        config_dir / "carbonlink.yaml",
        "factors_dir: factors",
        "factors_dir: factors\nplants: [cement-01, ghost]",
    )
    with pytest.raises(ConfigError, match="no plant file for ghost"):
        load_config(config_dir / "carbonlink.yaml")


@pytest.mark.parametrize("command", [["platform"], ["agent", "--plant", "cement-01"], ["simulate"]])
def test_services_refuse_a_broken_config_at_startup(config_dir: Path, command: list[str]) -> None:
    replace_in(config_dir / "plants/cement-01.yaml", "unit: t\n", "unit: 5\n")
    config = str(config_dir / "carbonlink.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "carbonlink", *command, "--config", config],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"carbonlink: error: {config_dir / 'plants/cement-01.yaml'}: meters[0].unit: "
        "Input should be a valid string (got 5)"
    )
    assert "Traceback" not in done.stderr


def test_secrets_come_from_a_dotenv_file_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`carbonlink --env-file` (default ./.env) fills what the environment does not set."""
    import os

    from click.testing import CliRunner

    from carbonlink.cli import main

    env_file = tmp_path / "secrets.env"
    env_file.write_text("CARBONLINK_LEDGER_KEY=from-the-file\nCARBONLINK_API_TOKEN=file-token\n")
    monkeypatch.setenv("CARBONLINK_API_TOKEN", "from-the-environment")
    # Set, then unset: monkeypatch then restores the environment as it was, not the
    # value the .env file put there (a key that is no key would reach later tests).
    monkeypatch.setenv("CARBONLINK_LEDGER_KEY", "")
    monkeypatch.delenv("CARBONLINK_LEDGER_KEY")
    result = CliRunner().invoke(main, ["--env-file", str(env_file), "factors", "list"])
    assert result.exit_code == 0, result.output
    assert os.environ["CARBONLINK_LEDGER_KEY"] == "from-the-file"
    assert os.environ["CARBONLINK_API_TOKEN"] == "from-the-environment"
    monkeypatch.delenv("CARBONLINK_LEDGER_KEY")
