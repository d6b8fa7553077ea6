"""How factors are applied: glass cullet, calorific basis, GWP choice, grid precedence.

Each expected value is written as the source's arithmetic (docs/emission-factors.md
cites them), never as a number read off the code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from carbonlink.emissions import FactorLibrary, FactorSet
from carbonlink.errors import ConfigError, UnitError

SET_HEAD = """\
name: test-set
version: "1"
description: test set
gwp: AR5
"""


def _set(tmp_path: Path, body: str) -> FactorSet:
    path = tmp_path / "set.yaml"
    path.write_text(SET_HEAD + body, encoding="utf-8")
    return FactorSet.load(path)


# --------------------------------------------------------------------------- glass


def test_glass_applies_the_cullet_term_of_equation_2_12(lib: FactorLibrary) -> None:
    # IPCC 2006 Vol. 3 Eq. 2.12: CO2 = Mg x EF x (1 - CR) = 100 t x 0.20 x (1 - 0.50).
    res = lib.compute("glass_default", 100.0, "t")
    assert res.co2_kg == pytest.approx(100.0 * 0.20 * (1 - 0.50) * 1000)
    assert res.co2_kg == pytest.approx(10_000.0)  # 10 t, not the 20 t before the fix
    assert "cullet ratio 0.5" in res.factor_source
    float_glass = lib.compute("glass_float", 100.0, "t")
    assert float_glass.co2_kg == pytest.approx(100.0 * 0.21 * (1 - 0.50) * 1000)


def test_a_factor_set_states_the_plants_cullet_ratio(tmp_path: Path, lib: FactorLibrary) -> None:
    factor_set = _set(
        tmp_path,
        "overrides:\n  glass_container:\n    cullet_ratio: 0.6\n"
        "    source: plant batch records 2025\n",
    )
    res = factor_set.resolve(lib, "glass_container", "t").apply(100.0)
    assert res.co2_kg == pytest.approx(100.0 * 0.21 * (1 - 0.6) * 1000)
    assert "plant batch records 2025" in res.factor_source
    assert res.factor_version == "test-set 1"
    assert res.data_quality == "measured"
    # Other glass types keep the default.
    other = factor_set.resolve(lib, "glass_float", "t").apply(100.0)
    assert other.co2_kg == pytest.approx(100.0 * 0.21 * 0.5 * 1000)


# --------------------------------------------------------------------------- GWP


@pytest.mark.parametrize(
    ("activity", "amount", "unit", "region"),
    [("natural_gas", 1.0, "TJ", None), ("electricity", 1.0, "MWh", "US")],
)
def test_combustion_and_grid_ch4_take_the_plain_gwp(
    lib: FactorLibrary, activity: str, amount: float, unit: str, region: str | None
) -> None:
    for gwp, ch4_gwp, n2o_gwp in (("AR5", 28, 265), ("AR6", 27.0, 273)):
        res = lib.compute(activity, amount, unit, gwp=gwp, region=region)
        expected = res.co2_kg + res.ch4_kg * ch4_gwp + res.n2o_kg * n2o_gwp
        assert res.co2e_kg == pytest.approx(expected)


# --------------------------------------------------------------------------- calorific basis


def test_energy_units_carry_their_calorific_basis(lib: FactorLibrary) -> None:
    # IPCC 2006 Vol. 2 Ch. 1 s. 1.4.1.2: NCV = 0.90 GCV for gas, 0.95 GCV for coal and oil.
    gas_gross = lib.compute("natural_gas", 1.0, "MMBtu")  # Btu units are quoted gross
    assert gas_gross.converted_amount == pytest.approx(1.055056e-3 * 0.90)
    assert gas_gross.calorific_basis == "gross"
    assert "NCV x 0.9" in gas_gross.factor_source
    # Taken as NCV it overstated gas by 1/0.9 - 1 = 11.1% (about 11.5% against EPA's own
    # 53.06 kg/MMBtu); oil and coal by 1/0.95 - 1 = 5.3%.
    assert lib.compute("natural_gas", 1.0, "MMBtu NCV").co2_kg / gas_gross.co2_kg == (
        pytest.approx(1 / 0.90)
    )
    therms = lib.compute("natural_gas", 10.0, "therm")
    assert therms.co2_kg == pytest.approx(gas_gross.co2_kg)
    kwh = lib.compute("natural_gas", 1000.0, "kWh")  # gas billed in kWh: gross
    assert kwh.converted_amount == pytest.approx(3.6e-3 * 0.90)
    oil = lib.compute("gas_diesel_oil", 1.0, "GJ GCV")
    assert oil.co2_kg == pytest.approx(0.95 * 74.1)
    assert lib.compute("gas_diesel_oil", 1.0, "GJ").calorific_basis == "net"
    assert lib.compute("gas_diesel_oil", 1.0, "GJ (LHV)").co2_kg == pytest.approx(74.1)
    assert lib.compute("gas_diesel_oil", 1.0, "t").calorific_basis is None


def test_an_energy_unit_of_unknown_basis_is_refused(lib: FactorLibrary) -> None:
    with pytest.raises(UnitError, match="calorific basis"):
        lib.resolve("natural_gas", "kcal")
    assert lib.compute("natural_gas", 1e6, "kcal NCV").converted_amount == pytest.approx(4.184e-3)


def test_gross_wood_needs_a_ratio_from_the_factor_set(tmp_path: Path, lib: FactorLibrary) -> None:
    with pytest.raises(UnitError, match="no default NCV/GCV ratio"):
        lib.resolve("wood_waste", "GJ GCV")
    factor_set = _set(
        tmp_path,
        "overrides:\n  wood_waste:\n    ncv_per_gcv: 0.8\n    source: supplier moisture test\n",
    )
    res = factor_set.resolve(lib, "wood_waste", "GJ GCV").apply(1.0)
    assert res.biogenic_co2_kg == pytest.approx(0.8 * 112.0)


def test_a_factor_set_may_say_which_units_are_gross(tmp_path: Path, lib: FactorLibrary) -> None:
    factor_set = _set(
        tmp_path,
        "calorific_basis:\n  net: [kWh]\n  gross: [GJ]\n  source: test convention\n",
    )
    assert factor_set.resolve(lib, "natural_gas", "kWh").apply(1000.0).co2_kg == pytest.approx(
        3.6 * 56.1
    )
    assert factor_set.resolve(lib, "natural_gas", "GJ").apply(1.0).co2_kg == pytest.approx(
        0.9 * 56.1
    )


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        (
            "overrides:\n  cement_clinker:\n    cullet_ratio: 0.3\n    source: x\n",
            "overrides.cement_clinker.cullet_ratio",
            "glass only",
        ),
        (
            "overrides:\n  glass_float:\n    cullet_ratio: 1.2\n    source: x\n",
            "overrides.glass_float.cullet_ratio",
            "less than 1",
        ),
        (
            "overrides:\n  cement_clinker:\n    ncv: {value: 1, unit: GJ/t}\n    source: x\n",
            "overrides.cement_clinker.ncv",
            "fuels only",
        ),
        (
            "overrides:\n  natural_gas:\n    ncv: {value: 1, unit: GJ/kWh}\n    source: x\n",
            "overrides.natural_gas.ncv.unit",
            "per Nm3",
        ),
        (
            "overrides:\n  natural_gas:\n    source: x\n",
            "overrides.natural_gas",
            "at least one of",
        ),
        (
            "calorific_basis:\n  gross: [t]\n  source: x\n",
            "calorific_basis.gross",
            "no energy unit",
        ),
    ],
)
def test_broken_conventions_name_file_key_and_problem(
    tmp_path: Path, body: str, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _set(tmp_path, body)
    assert info.value.key == key
    assert fragment in info.value.problem
