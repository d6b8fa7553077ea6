"""Stationary combustion against hand-computed IPCC 2006 Tier 1 arithmetic.

Expected values are written as the spec's arithmetic: amount x NCV (GJ/t) x 1e-3
(TJ/GJ) x EF (kg/TJ); GWP AR5 CH4 28, N2O 265. Combustion CH4 takes the plain GWP
(AR5 28, AR6 27.0), never the fossil one (AR5 30, AR6 29.8): IPCC 2006 CO2 factors
already count the carbon that CH4 oxidises to.
"""

from __future__ import annotations

import math

import pytest

from carbonlink.emissions import FactorLibrary

AR5_CH4 = 28
AR5_N2O = 265


def test_ten_tonnes_of_coal_at_ar5_is_the_specs_worked_check(lib: FactorLibrary) -> None:
    # docs/emission-factors spec: 10 t other bituminous coal at AR5 = 0.258 TJ ->
    # 24,406.8 kg CO2 + 2.58 kg CH4 x 28 + 0.387 kg N2O x 265 = 24,581.595 kg CO2e
    # (24,586.755 with the fossil CH4 GWP 30, which counted the CH4's carbon twice).
    res = lib.compute("other_bituminous_coal", 10.0, "t", gwp="AR5")
    assert res.co2_kg == pytest.approx(24_406.8, abs=1e-9)
    assert res.ch4_kg == pytest.approx(2.58, abs=1e-12)
    assert res.n2o_kg == pytest.approx(0.387, abs=1e-12)
    assert round(res.co2e_kg, 3) == 24_581.595


def test_bituminous_coal_by_mass_manufacturing(lib: FactorLibrary) -> None:
    res = lib.compute("other_bituminous_coal", 1.0, "t")
    tj = 1.0 * 25.8e-3
    assert res.converted_amount == pytest.approx(tj)
    assert res.converted_unit == "TJ"
    assert res.co2_kg == pytest.approx(tj * 94600)
    assert res.ch4_kg == pytest.approx(tj * 10)
    assert res.n2o_kg == pytest.approx(tj * 1.5)
    assert res.co2e_kg == pytest.approx(tj * (94600 + 10 * AR5_CH4 + 1.5 * AR5_N2O))
    assert res.biogenic_co2_kg == 0.0
    assert res.scope == 1
    assert res.category == "1.A.2"
    assert res.data_quality == "default"
    assert res.factor_year == 2006
    assert "Table 1.4" in res.factor_source


def test_coal_in_energy_industries_uses_table_2_2_ch4(lib: FactorLibrary) -> None:
    res = lib.compute("anthracite", 2000.0, "kg", sector="energy")
    tj = 2.0 * 26.7e-3
    assert res.ch4_kg == pytest.approx(tj * 1)
    assert res.n2o_kg == pytest.approx(tj * 1.5)
    assert res.co2_kg == pytest.approx(tj * 98300)
    assert res.category == "1.A.1"
    assert "Table 2.2" in res.factor_source


def test_natural_gas_by_mass(lib: FactorLibrary) -> None:
    res = lib.compute("natural_gas", 10.0, "t")
    tj = 10.0 * 48.0e-3
    assert res.co2_kg == pytest.approx(tj * 56100)
    assert res.co2e_kg == pytest.approx(tj * (56100 + 1 * AR5_CH4 + 0.1 * AR5_N2O))


def test_natural_gas_by_normal_cubic_metre_uses_stated_density(lib: FactorLibrary) -> None:
    # 0.75 kg/Nm3 at 0 degC, 101.325 kPa is the assumption stated in the data file.
    res = lib.compute("natural_gas", 1000.0, "Nm3")
    tj = 1000.0 * 0.75e-3 * 48.0e-3
    assert res.converted_amount == pytest.approx(tj)
    assert res.co2_kg == pytest.approx(tj * 56100)
    assert "density 0.75 kg/Nm3" in res.factor_source
    assert lib.compute("natural_gas", 1000.0, "Nm³").co2_kg == pytest.approx(res.co2_kg)


def test_natural_gas_by_energy_skips_ncv(lib: FactorLibrary) -> None:
    res = lib.compute("natural_gas", 1.0, "TJ")
    assert res.co2_kg == pytest.approx(56100)
    gj = lib.compute("natural_gas", 1000.0, "GJ")
    assert gj.co2_kg == pytest.approx(56100)


def test_diesel_by_litre(lib: FactorLibrary) -> None:
    res = lib.compute("gas_diesel_oil", 1000.0, "L")
    tj = 1000.0 * 0.84e-3 * 43.0e-3
    assert res.co2_kg == pytest.approx(tj * 74100)
    assert res.ch4_kg == pytest.approx(tj * 3)
    assert res.n2o_kg == pytest.approx(tj * 0.6)
    assert res.co2e_kg == pytest.approx(tj * (74100 + 3 * AR5_CH4 + 0.6 * AR5_N2O))
    m3 = lib.compute("gas_diesel_oil", 1.0, "m3")
    assert m3.co2_kg == pytest.approx(res.co2_kg)


def test_residual_fuel_oil_by_tonne(lib: FactorLibrary) -> None:
    res = lib.compute("residual_fuel_oil", 10.0, "t")
    assert res.co2_kg == pytest.approx(10.0 * 40.4e-3 * 77400)


def test_lpg_by_litre(lib: FactorLibrary) -> None:
    res = lib.compute("lpg", 100.0, "L")
    assert res.co2_kg == pytest.approx(100.0 * 0.54e-3 * 47.3e-3 * 63100)


def test_wood_keeps_biogenic_co2_apart(lib: FactorLibrary) -> None:
    res = lib.compute("wood_waste", 1.0, "t")
    tj = 1.0 * 15.6e-3
    assert res.biogenic_co2_kg == pytest.approx(tj * 112000)
    assert res.co2_kg == 0.0
    assert res.co2e_kg == pytest.approx(tj * (30 * AR5_CH4 + 4 * AR5_N2O))
    ar6 = lib.compute("wood_waste", 1.0, "t", gwp="AR6")
    assert ar6.co2e_kg == pytest.approx(tj * (30 * 27.0 + 4 * 273))
    assert res.co2e_range_kg is None


@pytest.mark.parametrize(
    ("gwp", "ch4_gwp", "n2o_gwp"),
    [("AR4", 25, 298), ("AR5", 28, 265), ("AR6", 27.0, 273)],
)
def test_gwp_sets_use_the_plain_ch4_value_for_fossil_fuel(
    lib: FactorLibrary, gwp: str, ch4_gwp: float, n2o_gwp: float
) -> None:
    res = lib.compute("natural_gas", 1.0, "TJ", gwp=gwp)
    assert res.gwp_set == gwp
    assert res.co2e_kg == pytest.approx(56100 + 1 * ch4_gwp + 0.1 * n2o_gwp)


def test_range_combines_ncv_and_ef_by_quadrature(lib: FactorLibrary) -> None:
    res = lib.compute("other_bituminous_coal", 1.0, "t")
    co2 = 25.8e-3 * 94600
    low_rel = math.hypot((25.8 - 19.9) / 25.8, (94600 - 89500) / 94600)
    high_rel = math.hypot((30.5 - 25.8) / 25.8, (99700 - 94600) / 94600)
    assert res.co2e_range_kg is not None
    low, high = res.co2e_range_kg
    assert low == pytest.approx(res.co2e_kg - co2 * low_rel)
    assert high == pytest.approx(res.co2e_kg + co2 * high_rel)
    assert low < res.co2e_kg < high


def test_range_in_energy_units_uses_only_the_ef_range(lib: FactorLibrary) -> None:
    res = lib.compute("natural_gas", 1.0, "TJ")
    ch4_n2o = 1 * AR5_CH4 + 0.1 * AR5_N2O
    assert res.co2e_range_kg == pytest.approx((54300 + ch4_n2o, 58300 + ch4_n2o))


@pytest.mark.parametrize(
    "fuel",
    [
        "natural_gas",
        "anthracite",
        "other_bituminous_coal",
        "sub_bituminous_coal",
        "coking_coal",
        "coke_oven_coke",
        "gas_diesel_oil",
        "residual_fuel_oil",
        "lpg",
        "petroleum_coke",
    ],
)
def test_every_fossil_fuel_range_brackets_the_central_value(lib: FactorLibrary, fuel: str) -> None:
    res = lib.compute(fuel, 3.0, "t")
    assert res.co2e_range_kg is not None
    low, high = res.co2e_range_kg
    assert 0 < low < res.co2e_kg < high


def test_apply_array_equals_apply(lib: FactorLibrary) -> None:
    np = pytest.importorskip("numpy")
    amounts = np.array([0.0, 1.5, 20.0, 1234.5])
    for activity, unit, kwargs in [
        ("wood_waste", "t", {}),
        ("gas_diesel_oil", "L", {"gwp": "AR6"}),
        ("electricity", "MWh", {"region": "US"}),
    ]:
        factor = lib.resolve(activity, unit, **kwargs)
        arrays = factor.apply_array(amounts)
        for i, amount in enumerate(amounts):
            single = factor.apply(float(amount))
            assert arrays["co2_kg"][i] == pytest.approx(single.co2_kg)
            assert arrays["ch4_kg"][i] == pytest.approx(single.ch4_kg)
            assert arrays["n2o_kg"][i] == pytest.approx(single.n2o_kg)
            assert arrays["co2e_kg"][i] == pytest.approx(single.co2e_kg)
            assert arrays["biogenic_co2_kg"][i] == pytest.approx(single.biogenic_co2_kg)


def test_per_unit_factors_and_resolve_cache(lib: FactorLibrary) -> None:
    factor = lib.resolve("natural_gas", "t")
    assert factor.co2_kg_per_unit == pytest.approx(48.0e-3 * 56100)
    assert factor.co2e_kg_per_unit == pytest.approx(48.0e-3 * (56100 + 28 + 0.1 * 265))
    assert lib.resolve("natural_gas", "t") is factor
    assert FactorLibrary.builtin() is lib
