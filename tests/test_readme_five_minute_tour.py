"""The README's five-minute tour as a newcomer runs it: the real demo in a subprocess
keeps its recording, then the backtest command the README prints runs on it.

The tour's backtest once crashed (a ZeroDivisionError when the window ended before the
coordinator's last step, which happens on some recordings and not others), so the tour
runs on fresh recordings from several seeds and speeds.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def readme_command(marker: str) -> list[str]:
    """The shell command in the first ``sh`` block after ``marker`` in the README."""
    text = README.read_text()
    block = text[text.index(marker) :]
    body = re.search(r"```sh\n(.*?)```", block, re.S)
    assert body is not None, marker
    command = body.group(1).replace("\\\n", " ").strip()
    words = shlex.split(command)
    assert words[0] == ".venv/bin/carbonlink", words
    return words[1:]


def carbonlink(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carbonlink", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "speed", "duration"), [(0, 600, 18), (7, 900, 14), (16, 1500, 12)]
)
def test_tour_backtest_on_a_fresh_recording(
    seed: int, speed: int, duration: int, tmp_path: Path
) -> None:
    kept = tmp_path / "demo"
    demo = carbonlink(
        "demo", "--speed", str(speed), "--duration", str(duration), "--seed", str(seed),
        "--keep", str(kept), "--http", "off", "--refresh", "5",
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    line = demo.stdout.split("backtest it with:\n", 1)[1].splitlines()[0].split()
    printed = line[line.index("policy") - 1 :]  # the program as run, then its arguments
    assert printed[1:3] == ["policy", "backtest"]
    # The README's step 3, on this recording (its var/demo is our folder).
    words = [w.replace("var/demo", str(kept)) for w in readme_command("**3. Backtest policies")]
    out = tmp_path / "backtest"
    done = carbonlink(*words, "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = {r["policy"]: r for r in json.loads(done.stdout)}
    policies = ["stage1", "stage2-budget", "stage3", "carbon-price-path"]
    assert list(summary) == [*policies, "(recorded)"]
    for name in policies:
        row = summary[name]
        assert row["money"] == "kCNY"
        assert row["value_total"] is not None
        assert abs(row["transfers_balance"]) < 1e-6
    # Value with continuation ranks stage 3 above stage 1, as policy solve does; stage 3's
    # settlement transfers are public money though it pays no subsidy.
    assert summary["stage3"]["value_total"] > summary["stage1"]["value_total"]
    assert summary["stage3"]["subsidy"] == 0
    assert summary["stage3"]["public_cost"] > 0
    assert summary["carbon-price-path"]["carbon_payment"] > 0
    for name in ("steps.csv", "summary.csv", "emissions.png", "payoffs.png"):
        assert (out / name).stat().st_size > 0
    assert len(pd.read_csv(out / "summary.csv")) == len(policies) + 1
    # The command the demo printed runs as well (the default policies).
    again = carbonlink(*printed[1:], "--out", str(tmp_path / "printed"))
    assert again.returncode == 0, again.stderr
    assert "value with continuation, kCNY" in again.stdout
    # And the literature's measures on the same recording, split by the stages in force.
    measured = carbonlink(
        "policy", "measures", "--store", f"sqlite:///{kept / 'demo.sqlite'}",
        "--journal", str(kept / "coordination-journal.sqlite"), "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert measured.returncode == 0, measured.stderr
    units = json.loads(measured.stdout)
    assert {u["stage"] for u in units} >= {1}
    # Zero where a plant produced nothing while it emitted (idle shifts), never negative.
    assert all(u["cep"] is None or u["cep"] >= 0 for u in units)
    assert any(u["cep"] for u in units)


def test_readme_commands_parse() -> None:
    """The tour's commands are where the test above looks for them."""
    assert readme_command("**3. Backtest policies")[:2] == ["policy", "backtest"]
    assert readme_command("**5. Solve the model**")[:2] == ["policy", "solve"]
    assert readme_command("**6. Measure and explore.**")[:2] == ["policy", "measures"]
