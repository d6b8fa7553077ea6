"""Factor-set files: the shipped ones load, broken ones name file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbonlink._exceptions import ConfigError
from carbonlink.emissions import FactorLibrary, FactorSet

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "factors"

VALID = """\
name: test-set
version: "2"
description: test set
gwp: AR6
sector: energy
grid: {region: CN-East, year: 2022}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "set.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_factor_sets_load(path: Path, lib: FactorLibrary) -> None:
    factor_set = FactorSet.load(path)
    assert factor_set.name == path.stem
    assert factor_set.grid_region is not None
    assert factor_set.resolve(lib, "electricity", "kWh").co2_kg_per_unit > 0


def test_cn2023_set_resolves_grid_from_its_settings(lib: FactorLibrary) -> None:
    factor_set = FactorSet.load(CONFIG_DIR / "ipcc2006-cn2023.yaml")
    res = factor_set.resolve(lib, "electricity", "kWh").apply(1000.0)
    assert res.co2_kg == pytest.approx(1000.0 * 0.5306)
    assert res.factor_year == 2023
    us = FactorSet.load(CONFIG_DIR / "ipcc2006-us2022.yaml")
    assert us.resolve(lib, "electricity", "MWh").apply(1.0).ch4_kg == pytest.approx(
        0.066 * 0.45359237
    )


def test_set_gwp_sector_and_explicit_region(tmp_path: Path, lib: FactorLibrary) -> None:
    factor_set = FactorSet.load(_write(tmp_path, VALID))
    coal = factor_set.resolve(lib, "other_bituminous_coal", "t").apply(1.0)
    tj = 25.8e-3
    assert coal.category == "1.A.1"
    assert coal.co2e_kg == pytest.approx(tj * (94600 + 1 * 29.8 + 1.5 * 273))
    grid = factor_set.resolve(lib, "electricity", "kWh").apply(1000.0)
    assert grid.co2_kg == pytest.approx(1000.0 * 0.5617)
    other = factor_set.resolve(lib, "electricity", "kWh", region="CN", year=2021).apply(1.0)
    assert other.co2_kg == pytest.approx(0.5568)


def test_override_replaces_given_gases_only(tmp_path: Path, lib: FactorLibrary) -> None:
    text = VALID + (
        "overrides:\n"
        "  natural_gas:\n"
        "    co2: {value: 55.5, unit: t/TJ}\n"
        "    source: plant lab analysis 2024-03\n"
    )
    factor_set = FactorSet.load(_write(tmp_path, text))
    res = factor_set.resolve(lib, "natural_gas", "TJ").apply(2.0)
    assert res.co2_kg == pytest.approx(2.0 * 55500)
    assert res.ch4_kg == pytest.approx(2.0 * 1)
    assert res.co2e_kg == pytest.approx(2.0 * (55500 + 1 * 29.8 + 0.1 * 273))
    assert res.data_quality == "measured"
    assert res.co2e_range_kg is None
    assert "plant lab analysis" in res.factor_source
    assert res.factor_version == "test-set 2"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (VALID + "colour: blue\n", "colour", "Extra inputs"),
        (VALID.replace("name: test-set\n", ""), "name", "Field required"),
        (VALID.replace("gwp: AR6", "gwp: AR9"), "gwp", "unknown GWP set"),
        (VALID.replace("sector: energy", "sector: farming"), "sector", "manufacturing"),
        (VALID.replace("CN-East", "Mars"), "grid.region", "unknown region"),
        (VALID.replace("year: 2022", "year: soon"), "grid.year", "integer"),
        (
            VALID + "overrides:\n  natural_gas:\n    co2: {value: 1, unit: kg/TJ}\n",
            "overrides.natural_gas.source",
            "Field required",
        ),
        (
            VALID
            + "overrides:\n  natural_gas:\n    co2: {value: 1, unit: kg/kWh/s}\n    source: x\n",
            "overrides.natural_gas.co2.unit",
            "cannot be converted",
        ),
        (
            VALID + "overrides:\n  moonrock:\n    co2: {value: 1, unit: kg/t}\n    source: x\n",
            "overrides.moonrock",
            "unknown activity",
        ),
        ("name: [unclosed\n", "line 2, column 1", "invalid YAML"),
        ("- just\n- a list\n", "<document>", "mapping"),
    ],
)
def test_broken_factor_set_names_file_key_and_problem(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        FactorSet.load(path)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert fragment in info.value.problem


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        FactorSet.load(tmp_path / "absent.yaml")
