"""``carbonlink coordinate --keygen``: the commands it prints work when pasted, and a
coordinator started with them signs what a verifier then checks with the public key
alone. Real processes, a real Mosquitto, wall-clock periods of two seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest
import yaml

from carbonlink.coordination import Journal
from tests.configs import REPO_CONFIG, write_config
from tests.servers import MosquittoServer
from tests.waiting import exited, wait_for

pytestmark = pytest.mark.slow

REPORTS_WANTED: Final = 2
WAIT_S: Final = 60.0
# Generous: on a loaded two-core machine a process may take a while to wind down.
STOP_WAIT_S: Final = 90.0


def _config(directory: Path, broker: MosquittoServer) -> Path:
    path = write_config(
        directory / "config",
        plants={"keys-cement": "cement-01"},
        broker_url=broker.url,
        store=f"sqlite:///{directory / 'store.sqlite'}",
    )
    services = yaml.safe_load(path.read_text())
    services["coordination"] |= {
        "journal": str(directory / "journal.sqlite"),
        "policy": str(REPO_CONFIG / "policies" / "stage3.yaml"),
        "period_s": "2s",
        "read_lag_s": "0s",
    }
    path.write_text(yaml.safe_dump(services))
    return path


def _reports(journal: Path) -> int:
    if not journal.is_file():
        return 0
    try:
        with Journal.open_readonly(journal) as book:
            return len(book.ledger)
    except Exception:  # the coordinator is creating it: look again
        return 0


def test_keygen_prints_commands_that_work_when_pasted(
    tmp_path: Path, mosquitto_private: MosquittoServer
) -> None:
    config = _config(tmp_path, mosquitto_private)
    env = {k: v for k, v in os.environ.items() if k != "CARBONLINK_LEDGER_KEY"}
    made = subprocess.run(
        [sys.executable, "-m", "carbonlink", "coordinate", "--config", str(config),
         "--keygen", "keys/ledger-key"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    print(made.stdout)
    commands = [line.strip() for line in made.stdout.splitlines() if line.startswith("  ")]
    export, run, show, verify = commands
    assert export.startswith('export CARBONLINK_LEDGER_KEY="$(cat keys/ledger-key)"')
    public = (tmp_path / "keys" / "ledger-key.pub").read_text()
    assert "PRIVATE" not in public
    assert (tmp_path / "keys" / "ledger-key").stat().st_mode & 0o777 == 0o600

    shown = subprocess.run(
        ["bash", "-c", f"{export}\n{show}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == public

    coordinator = subprocess.Popen(
        ["bash", "-c", f"{export}\nexec {run}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: _reports(tmp_path / "journal.sqlite") >= REPORTS_WANTED,
            f"{REPORTS_WANTED} signed reports", WAIT_S,
            abort_if=exited(coordinator, log=lambda: coordinator.communicate()),
        )  # fmt: skip
    finally:
        coordinator.send_signal(signal.SIGINT)  # Ctrl-C: it stops, committed
        printed, _ = coordinator.communicate(timeout=STOP_WAIT_S)
    # One line per period as it is recorded, saying what the stage means and why the
    # government has (or has not yet) received a report; the journal holds as many.
    periods = [line for line in printed.splitlines() if line.startswith("period ")]
    with Journal.open_readonly(tmp_path / "journal.sqlite") as journal:
        status = journal.load_state("status")
        recorded = len(journal.ledger)
    assert status is not None
    assert len(periods) >= REPORTS_WANTED, printed
    assert all(
        "stage 3 (advanced_symbiosis: firm and platform decide jointly" in line for line in periods
    ), printed
    numbers = [int(line.split()[1]) for line in periods]
    assert numbers == sorted(set(numbers)), printed  # each period once, in order
    assert numbers[-1] <= int(status["periods"])
    assert any(f"; {n} reports in the ledger" in printed for n in range(1, recorded + 1)), printed

    # The verifier has the public key only: no private key in its environment.
    checked = subprocess.run(
        ["bash", "-c", verify], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    print(checked.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "chain intact, every report signed (key " in checked.stdout
    assert "OK: every report re-derives from sqlite:///" in checked.stdout
