"""``carbonlink policy sweep`` as a researcher runs it: the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.configs import REPO_CONFIG
from tests.coordination.conftest import REFERENCE_YAML

REPO = REPO_CONFIG.parent


def _sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carbonlink", "policy", "sweep", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_sweep_over_f_and_r_shows_where_the_claims_hold(tmp_path: Path) -> None:
    """Functional availability F raises total value in every stage; relational
    availability R changes nothing before stage 3 and raises it there. The sweep also
    shows the limits: the government's own value falls with F in stage 2 (it subsidises
    a more productive platform more)."""
    done = _sweep("--vary", "F=0.2,0.6,1.0", "--vary", "R=0,0.5,1", "--plant", "cement-01",
                  "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(tmp_path / "sweep.csv")
    assert len(frame) == 9 * 3
    assert set(frame["money"]) == {"kCNY"}
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The reference point reproduces policy solve (the cement line is the reference plant).
    at_reference = frame[(frame["F"] == 0.6) & (frame["R"] == 0.5)].set_index("stage")
    assert at_reference.loc[1, "value_total"] == pytest.approx(108.1, abs=0.05)
    assert at_reference.loc[3, "value_total"] == pytest.approx(274.6, abs=0.05)
    assert at_reference.loc[3, "split"] == "core"
    lines = done.stdout.splitlines()
    f_block = lines[lines.index("  F:") + 1 : lines.index("  R:")]
    r_block = lines[lines.index("  R:") + 1 :]
    trend = {line.split()[0]: line for line in f_block}
    assert "stage 1: rises; stage 2: rises; stage 3: rises" in trend["value_total"]
    assert "stage 2: falls" in trend["value_G"]
    r_trend = {line.split()[0]: line for line in r_block if line.strip()}
    assert "stage 1: flat; stage 2: flat; stage 3: rises" in r_trend["value_total"]
    # Emissions and carbon emission performance at the plant's nominal output.
    stage3 = frame[frame["stage"] == 3]
    assert (
        stage3["emissions_t_per_h"] <= frame[frame["stage"] == 1]["emissions_t_per_h"].max()
    ).all()
    assert stage3["cep"].max() > frame[frame["stage"] == 1]["cep"].max()
    assert "sweep of F, R" in done.stdout
    assert "values in kCNY" in done.stdout
    assert "solving 9 points" in done.stderr  # the progress bar


def test_sweep_json_and_bad_arguments(tmp_path: Path) -> None:
    done = _sweep("--params", str(REFERENCE_YAML), "--vary", "eta=0:1:3", "--json",
                  "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["eta"] for r in rows if r["stage"] == 3] == [0.0, 0.5, 1.0]
    for args, message in (
        (["--vary", "gee=1,2"], "'gee' is not a parameter"),
        (["--vary", "F=0:2:3"], "F=2: Input should be less than or equal to 1"),
        (["--vary", "F"], "expected NAME=v1,v2"),
        (["--vary", "F=1", "--vary", "R=1", "--vary", "eta=1"], "one or two"),
    ):
        bad = _sweep(*args, "--out", str(tmp_path))
        assert bad.returncode == 2, bad.stdout
        assert message in bad.stderr
        assert "Traceback" not in bad.stderr
