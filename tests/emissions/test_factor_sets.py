"""Factor-set files: the shipped ones load, broken ones name file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbonlink.emissions import FactorLibrary, FactorSet
from carbonlink.errors import ConfigError

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
    resolved = factor_set.resolve(lib, "electricity", "kWh", region="CN-East")
    assert resolved.co2_kg_per_unit > 0


def test_cn2023_set_takes_the_plants_region_and_its_year(lib: FactorLibrary) -> None:
    factor_set = FactorSet.load(CONFIG_DIR / "ipcc2006-cn2023.yaml")
    assert factor_set.grid_region is None  # it pins none: each plant's grid_region
    res = factor_set.resolve(lib, "electricity", "kWh", region="CN").apply(1000.0)
    assert res.co2_kg == pytest.approx(1000.0 * 0.5306)
    assert res.factor_year == 2023
    east = factor_set.resolve(lib, "electricity", "kWh", region="CN-East").apply(1000.0)
    assert east.co2_kg == pytest.approx(1000.0 * 0.5500)


def test_cn_ets_set_pins_the_carbon_market_factor_over_the_plants_region(
    lib: FactorLibrary,
) -> None:
    # The set names the MEE carbon-market default: it wins over every plant's region.
    factor_set = FactorSet.load(CONFIG_DIR / "ipcc2006-cn-ets.yaml")
    for plant_region in ("CN-East", "CN-Southwest", None):
        res = factor_set.resolve(lib, "electricity", "MWh", region=plant_region).apply(1.0)
        assert res.co2_kg == pytest.approx(570.3)
        assert res.region == "CN-ETS"
    assert factor_set.grid_for("CN-East") == ("CN-ETS", None)


def test_cn_sets_take_chinas_default_gas_ncv_by_volume(lib: FactorLibrary) -> None:
    # 389.31 GJ per 10^4 Nm3 (MEE guidelines) instead of 0.75 kg/Nm3 x 48.0 GJ/t = 360.
    for name in ("ipcc2006-cn2023", "ipcc2006-cn-ets"):
        gas = FactorSet.load(CONFIG_DIR / f"{name}.yaml").resolve(lib, "natural_gas", "Nm3")
        res = gas.apply(10_000.0)
        assert res.converted_amount == pytest.approx(389.31e-3)
        assert res.co2_kg == pytest.approx(389.31e-3 * 56100)
        assert "389.31 GJ/(10^4 Nm3)" in res.factor_source
        assert res.co2e_range_kg == pytest.approx(
            (res.co2e_kg - res.co2_kg * 1800 / 56100, res.co2e_kg + res.co2_kg * 2200 / 56100)
        )  # the stated NCV has no published range: only the CO2 factor's is left
    us = FactorSet.load(CONFIG_DIR / "ipcc2006-us2022.yaml")
    assert us.resolve(lib, "natural_gas", "Nm3").apply(10_000.0).converted_amount == (
        pytest.approx(0.360)
    )


def test_us_set_takes_mmbtu_and_therms_as_gross(lib: FactorLibrary) -> None:
    # 1 MMBtu (HHV) of gas = 1.055056 GJ GCV x 0.90 = 0.9495504 GJ NCV; x 56.1 kg/GJ.
    us = FactorSet.load(CONFIG_DIR / "ipcc2006-us2022.yaml")
    res = us.resolve(lib, "natural_gas", "MMBtu").apply(1.0)
    assert res.converted_amount == pytest.approx(1.055056e-3 * 0.90)
    assert res.co2_kg == pytest.approx(1.055056 * 0.90 * 56.1)
    assert res.calorific_basis == "gross"
    therm = us.resolve(lib, "natural_gas", "therm").apply(10.0)
    assert therm.co2_kg == pytest.approx(res.co2_kg)
    coal = us.resolve(lib, "other_bituminous_coal", "MMBtu").apply(1.0)
    assert coal.co2_kg == pytest.approx(1.055056 * 0.95 * 94.6)
    assert us.resolve(lib, "natural_gas", "GJ").apply(1.0).co2_kg == pytest.approx(56.1)
    us = FactorSet.load(CONFIG_DIR / "ipcc2006-us2022.yaml")
    assert us.resolve(lib, "electricity", "MWh").apply(1.0).ch4_kg == pytest.approx(
        0.066 * 0.45359237
    )


def test_set_gwp_sector_and_explicit_region(tmp_path: Path, lib: FactorLibrary) -> None:
    factor_set = FactorSet.load(_write(tmp_path, VALID))
    coal = factor_set.resolve(lib, "other_bituminous_coal", "t").apply(1.0)
    tj = 25.8e-3
    assert coal.category == "1.A.1"
    assert coal.co2e_kg == pytest.approx(tj * (94600 + 1 * 27.0 + 1.5 * 273))
    grid = factor_set.resolve(lib, "electricity", "kWh").apply(1000.0)
    assert grid.co2_kg == pytest.approx(1000.0 * 0.5617)
    # The set names its region: a plant's own region and year do not change it.
    pinned = factor_set.resolve(lib, "electricity", "kWh", region="CN", year=2021).apply(1.0)
    assert pinned.co2_kg == pytest.approx(0.5617)


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
    assert res.co2e_kg == pytest.approx(2.0 * (55500 + 1 * 27.0 + 0.1 * 273))
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
