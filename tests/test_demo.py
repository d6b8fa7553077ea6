"""`carbonlink demo` as a newcomer runs it: a real process, embedded broker, SQLite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
