"""The public Python API (``import carbonlink as cl``) keeps its promises: ``__all__`` is
exactly what is exported and documented, the import is light, paths may be ``str`` or
``Path``, errors are the documented ones, and the example script in the docs runs on a
real demo recording and prints the figures ``carbonlink query`` prints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from click.testing import CliRunner

import carbonlink as cl
from carbonlink.cli import main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "python-api.md"
EXAMPLE = REPO / "docs" / "examples" / "python_api.py"
CONFIG = REPO / "config" / "carbonlink.yaml"
PARAMS = REPO / "config" / "policies" / "reference.yaml"


def test_all_lists_exactly_the_exported_names() -> None:
    lazy = cl._LAZY
    assert sorted(cl.__all__) == sorted([*lazy, "__version__"])
    assert len(set(cl.__all__)) == len(cl.__all__)
    # Subpackages appear as attributes once imported; they are not the curated surface.
    public = {
        n for n in dir(cl) if not n.startswith("_") and not isinstance(getattr(cl, n), ModuleType)
    }
    assert public <= set(cl.__all__), public - set(cl.__all__)
    for name, module in lazy.items():
        value = getattr(cl, name)
        # Each name is the object its defining module exports, not a copy.
        assert value is getattr(sys.modules[module], name), name
        exported = getattr(sys.modules[module], "__all__", [name])
        assert name in exported, f"{module} does not export {name}"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = cl.nope  # type: ignore[attr-defined]


def test_every_exported_name_is_documented() -> None:
    text = DOC.read_text()
    missing = [n for n in cl.__all__ if not re.search(rf"`(cl\.)?{re.escape(n)}\b", text)]
    assert not missing, f"docs/python-api.md does not mention {missing}"
    assert "docs/examples/python_api.py" in text


def test_import_is_light() -> None:
    """A notebook or a CLI that needs only the version does not pay for pandas."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys, carbonlink; print(sorted(m for m in "
         "('pandas', 'numpy', 'fastapi', 'aiomqtt') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_paths_may_be_str_or_path(tmp_path: Path) -> None:
    for config in (CONFIG, str(CONFIG)):
        assert cl.load_config(config).plants
    for params in (PARAMS, str(PARAMS)):
        assert cl.load_params(params) == cl.load_params(PARAMS)
    policy = REPO / "config" / "policies" / "stage3.yaml"
    assert cl.load_policy(str(policy)).name == cl.load_policy(policy).name
    db = tmp_path / "a.sqlite"
    for target in (db, str(db), f"sqlite:///{db}"):
        with cl.open_store(target) as store:
            assert store.count_readings() == 0
    assert db.is_file()


def test_figures_refuse_what_makes_no_sense_with_the_documented_errors(tmp_path: Path) -> None:
    settings = cl.load_config(CONFIG)
    plant = next(iter(settings.plants))
    with cl.open_store(tmp_path / "a.sqlite") as store:
        figures = cl.Figures(store, settings)
        with pytest.raises(cl.UnknownPlantError, match="no plant 'nope'") as unknown:
            figures.kpis("nope")
        assert plant in unknown.value.known
        assert isinstance(unknown.value, KeyError)  # a mapping-style miss, as dict users expect
        with pytest.raises(cl.QueryError, match="no timezone") as naive:
            figures.windows(plant, "1h", start=pd.Timestamp("2026-01-01"))
        assert naive.value.parameter == "start"
        with pytest.raises(cl.QueryError, match="after start"):
            figures.totals(start="2026-01-02T00:00:00Z", end="2026-01-01T00:00:00Z")
        with pytest.raises(cl.QueryError, match="field"):
            figures.series(plant, "nope")
        # Nothing stored: empty frames with their columns, not errors.
        assert figures.totals()["co2e_t"].sum() == 0
        assert figures.windows(plant, "1h").empty
    assert issubclass(cl.QueryError, cl.CarbonlinkError)
    assert issubclass(cl.UnknownPlantError, cl.CarbonlinkError)


def test_offline_fleet_replays_from_its_seed() -> None:
    settings = cl.load_config(CONFIG)
    start = 1_767_225_600_000
    first = cl.run_offline(settings, start_ms=start, duration_s=1800, seed=5)
    again = cl.run_offline(settings, start_ms=start, duration_s=1800, seed=5)
    other = cl.run_offline(settings, start_ms=start, duration_s=1800, seed=6)
    pd.testing.assert_frame_equal(first, again)
    assert not first["value"].equals(other["value"])
    assert set(first["plant"]) == set(settings.plants)
    assert first["time"].min() > pd.Timestamp(start, unit="ms", tz="UTC")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kept = tmp_path_factory.mktemp("demo") / "run"
    done = subprocess.run(
        [sys.executable, "-m", "carbonlink", "demo", "--duration", "14", "--speed", "900",
         "--seed", "4", "--refresh", "7", "--http", "off", "--keep", str(kept)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return kept


@pytest.mark.slow
def test_the_documented_example_runs_and_agrees_with_the_cli(demo_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), str(demo_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    printed = {
        m["plant"]: float(m["t"])
        for m in re.finditer(r"^  (?P<plant>[\w-]+)\s+(?P<t>[\d.]+) t  \[", out.stdout, re.M)
    }
    settings = cl.load_config(CONFIG)
    assert set(printed) == set(settings.plants)
    for plant, tonnes in printed.items():
        query = CliRunner().invoke(main, [
            "query", "--config", str(CONFIG), "--store", f"sqlite:///{demo_dir / 'demo.sqlite'}",
            "--plant", plant, "--format", "json"])  # fmt: skip
        assert query.exit_code == 0, query.output
        kg = sum(row["co2e_kg"] for row in json.loads(query.stdout))
        assert tonnes == pytest.approx(kg / 1000, abs=0.0005), plant
    assert "backtest over" in out.stdout
    assert "stage3" in out.stdout
    assert re.search(r"stage 3: steady-state capability X = [\d.]+, total value [\d.]+ kCNY",
                     out.stdout)  # fmt: skip
    assert re.search(r"offline fleet: \d+ samples from 5 plants", out.stdout)
