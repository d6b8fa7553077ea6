"""`carbonlink demo` as a newcomer runs it: a real process, embedded broker, SQLite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from carbonlink.coordination import key_id

REPO = Path(__file__).resolve().parents[1]


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
    assert "coordination: stage 1 (primary_neutrality)" in out
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


@pytest.mark.slow
def test_the_demo_signs_with_the_configured_key_and_prints_a_check_that_passes(
    tmp_path: Path,
) -> None:
    """With CARBONLINK_LEDGER_KEY set, every report of the demo is signed with it; the
    command the demo prints then checks the kept ledger with the public key alone:
    chain, signatures and every report re-derived from the kept store (stage 1, then
    stage 3 from two simulated hours)."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    env = {k: v for k, v in os.environ.items() if k != "CARBONLINK_LEDGER_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "carbonlink", "demo", "--duration", "50", "--refresh", "10",
         "--speed", "240", "--seed", "3", "--http", "off", "--keep", str(tmp_path / "run")],
        cwd=REPO, env=env | {"CARBONLINK_LEDGER_KEY": raw.hex()}, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"reports signed with key {key_id(key)}" in done.stdout
    assert "coordination: stage 3 (advanced_symbiosis)" in done.stdout
    check = done.stdout.split("check its ledger with:\n", 1)[1].splitlines()[0].strip()
    assert "--public-key" in check
    verified = subprocess.run(
        ["bash", "-c", check], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    print(verified.stdout)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"chain intact, every report signed (key {key_id(key)})" in verified.stdout
    assert "OK: every report re-derives from sqlite:///" in verified.stdout


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
