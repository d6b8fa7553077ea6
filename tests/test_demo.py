"""`carbonlink demo` as a newcomer runs it: a real process, embedded broker, SQLite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from carbonlink.cli._demo import DEMO_SWITCH_PERIOD
from carbonlink.coordination import Journal, key_id

REPO = Path(__file__).resolve().parents[1]
# How far the measured drop may fall short of the model's: a directive takes effect at a
# plant when it arrives, up to a second or two of wall time (a minute or two simulated,
# of the half hour after the switch) after the period it is for began; a busy machine
# delays it more. Seen quiet: 2.47 measured, 2.38 predicted (seed 3).
DROP_AGREEMENT = 0.25


@pytest.mark.slow
def test_demo_shows_per_plant_emissions_and_exits_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "carbonlink", "demo", "--duration", "12", "--refresh", "4",
         "--speed", "300", "--seed", "7"],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "carbonlink demo: broker mqtt://127.0.0.1:" in out
    assert out.count("\nlive at simulated") >= 2
    # The closed loop runs too: an hour of simulated time is still stage 1 of the switch.
    assert "coordination: policy switch-1-to-3" in out
    assert "shadows stage1, stage2, stage3" in out
    assert "reports signed with key " in out  # a key of its own: none is configured here
    assert ": stage 1 (primary_neutrality: each party for itself" in out
    final = out.split("final totals", 1)[1]
    rows = {
        m[1]: (int(m[2]), float(m[3]), float(m[4]), int(m[5]))
        for m in re.finditer(
            r"^\s+(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\S+ \S+)$", final, re.M
        )
    }
    # Each plant's figures say which factor set version they are counted under.
    assert re.search(r"cement-01 .* ipcc2006-cn2023 2\.0\.0$", final, re.M)
    assert set(rows) == {p.stem for p in (REPO / "config" / "plants").glob("*.yaml")}
    for plant, (readings, rate, total, rejected) in rows.items():
        assert readings > 50, plant  # 12 s at 300x is an hour: ~60 samples per meter
        assert rate > 0, plant
        assert total > 0, plant
        assert rejected == 0, plant
    # The cement line burns ~27 t/h of coal and petcoke and calcines ~208 t/h of clinker:
    # ~70 t CO2e/h from fuels and ~108 t from clinker. It must dominate the textile mill.
    assert rows["cement-01"][1] > 10 * rows["textiles-01"][1]


def _pasted(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A command the demo printed, run as the user pastes it: by a shell, from where the
    demo ran."""
    return subprocess.run(
        ["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


def _figures(line: str) -> list[str]:
    """The cells of a backtest table row after the policy's name."""
    return line.split(None, 1)[1].split()


@pytest.mark.slow
def test_the_first_minute_shows_the_whole_loop(tmp_path: Path) -> None:
    """`demo --duration 60`, the README's first command (kept, and signed with the
    configured key): within the minute the stage switches, directives reach the
    plants, the emission drop is measured beside the model's, and at the end the
    shipped policies are compared on the recording, with the files written. The
    commands it prints work when pasted: the backtest prints the same table, and the
    ledger check passes with the public key alone."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    env = {k: v for k, v in os.environ.items() if k != "CARBONLINK_LEDGER_KEY"}
    kept = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "carbonlink", "demo", "--duration", "60", "--seed", "3",
         "--keep", str(kept)],
        cwd=REPO, env=env | {"CARBONLINK_LEDGER_KEY": raw.hex()}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"reports signed with key {key_id(key)}" in out
    # Where to look on the dashboard, and the switch moved into the run.
    assert re.search(r"coordination http://127\.0\.0\.1:\d+/dashboard/coordination: ", out)
    assert "the demo moves its switch to stage 3 to simulated +20 min, a third of the run" in out

    # Before the switch: stage 1, said what it means, and why there is no report yet.
    periods = [line for line in out.splitlines() if line.startswith("  coordination: period ")]
    switch_at = out.index("==> stage switch: stage 1 -> stage 3 (advanced_symbiosis: ")
    before = [line for line in periods if out.index(line) < switch_at]
    assert len(before) >= DEMO_SWITCH_PERIOD - 1, out
    assert "stage 3 (advanced_symbiosis: " in before[-1]  # the period the switch starts
    for line in before[:-1]:
        assert "stage 1 (primary_neutrality: each party for itself" in line
        assert "no report yet: this stage reports every 1 d, 1 h after the window ends" in line
    # After it: stage 3 reports every period, and the plants have its directives.
    after = [line for line in periods if out.index(line) > switch_at]
    assert after, out
    assert "stage 3 (advanced_symbiosis: firm and platform decide jointly" in after[-1]
    reports = int(re.search(r"; (\d+) reports in the ledger", after[-1])[1])  # type: ignore[index]
    received = re.findall(r"directives received by the plants so far: (.*)", out)[-1]
    counts = dict(re.findall(r"(\S+) (\d+)", received))
    plants = {p.stem for p in (REPO / "config" / "plants").glob("*.yaml")}
    assert set(counts) == plants
    assert all(int(n) > DEMO_SWITCH_PERIOD for n in counts.values()), received

    # The drop, measured and predicted, in tCO2e/h; the model's X grew after the switch.
    drop = re.search(
        r"^emission drop since the switch: measured (-?[\d,.]+) tCO2e/h,"
        r" the model predicted (-?[\d,.]+) tCO2e/h"
        r" \(its abatement X went from ([\d,.]+) to ([\d,.]+) tCO2e/h\);"
        r" measured on the ([\d,]+) emission readings stored",
        out, re.M,
    )  # fmt: skip
    assert drop is not None, out
    measured, predicted, x_before, x_after, readings = (
        float(g.replace(",", "")) for g in drop.groups()
    )
    assert x_after > x_before
    assert predicted > 0
    assert readings > 0
    # Measured against the exact counterfactual (the same seeded plants without the
    # switch), so it agrees with the model but for what the model does not see: the
    # directive reaches a plant a moment after the period starts. (A measure on output
    # intensity once showed 30.7 +/- 5.8 against 16.4 predicted; on rates, -159.)
    assert measured == pytest.approx(predicted, rel=DROP_AGREEMENT)

    # The end-of-run comparison: the four shipped policies and the recording, in kCNY.
    table = out.split("comparing 4 policies on what was just recorded", 1)[1]
    rows = {line.split()[0]: line for line in table.splitlines()[:12] if line[:1].strip()}
    names = ["stage1", "stage2-budget", "stage3", "carbon-price-path", "(recorded)"]
    assert set(names) <= set(rows), table
    assert "value with continuation, kCNY" in table
    written = [REPO / m for m in re.findall(r"^wrote (\S+)$", table, re.M)]
    assert sorted(p.name for p in written) == sorted(
        ["steps.csv", "summary.csv", "emissions.png", "payoffs.png"]
    )
    assert all(p.is_file() and p.stat().st_size > 0 for p in written), written
    summary = pd.read_csv(next(p for p in written if p.name == "summary.csv"))
    for record in summary.to_dict("records"):
        assert f"{record['emissions_t']:,.1f}" == _figures(rows[record["policy"]])[0]
    assert "replaying 4 policies x 5 plants:" in done.stderr  # plain progress: not a tty

    # Pasted: the backtest prints the same figures, and the ledger checks out.
    backtest = out.split("backtest it with:\n", 1)[1].splitlines()[0].strip()
    # The program as a path, never a bare name: after the README's setup
    # (.venv/bin/carbonlink) nothing is on PATH.
    program = Path(backtest.split()[0])
    script = Path(sys.executable).parent / "carbonlink"
    assert (REPO / program).absolute() == script.absolute()
    assert str(program) == (
        str(script.absolute().relative_to(REPO))
        if script.absolute().is_relative_to(REPO)
        else str(script.absolute())
    )
    assert backtest.count("--policy ") == 4
    replayed = _pasted(backtest, env)
    assert replayed.returncode == 0, replayed.stderr
    for name in names:
        again = next(line for line in replayed.stdout.splitlines() if line.startswith(name + " "))
        assert _figures(again) == _figures(rows[name]), name
    check = out.split("check its ledger with:\n", 1)[1].splitlines()[0].strip()
    assert "--public-key" in check
    verified = _pasted(check, env)
    print(verified.stdout)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"chain intact, every report signed (key {key_id(key)})" in verified.stdout
    assert "OK: every report re-derives from sqlite:///" in verified.stdout
    with Journal.open_readonly(kept / "coordination-journal.sqlite") as journal:
        assert len(journal.ledger) >= reports > 0


def test_a_key_that_is_no_key_stops_the_demo_before_it_starts() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CARBONLINK_LEDGER_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "carbonlink", "demo", "--duration", "5", "--http", "off"],
        cwd=REPO, env=env | {"CARBONLINK_LEDGER_KEY": "an old HMAC secret"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "carbonlink: error: config/carbonlink.yaml: $CARBONLINK_LEDGER_KEY: not an Ed25519 "
        "private key: expected a PEM private key (carbonlink coordinate --keygen) or 64 hex "
        "digits (from the environment)"
    ]
    assert "carbonlink demo: broker" not in done.stdout  # nothing had started
