"""Scope 2 electricity and heat, and IPCC 2006 Vol. 3 process factors."""

from __future__ import annotations

import pytest

from carbonlink.emissions import FactorLibrary
from carbonlink.errors import FactorLookupError

LB_TO_KG = 0.45359237


def test_china_2023_national_grid(lib: FactorLibrary) -> None:
    res = lib.compute("electricity", 1000.0, "kWh", region="CN", year=2023)
    assert res.co2_kg == pytest.approx(1000.0 * 0.5306)
    assert res.co2e_kg == pytest.approx(530.6)
    assert res.scope == 2
    assert res.category == "scope2:electricity"
    assert res.factor_year == 2023
    assert res.co2e_range_kg is None
    assert res.gas_basis == "co2_only"


def test_year_none_is_latest_and_later_year_falls_back(lib: FactorLibrary) -> None:
    assert lib.compute("electricity", 1.0, "MWh", region="CN").factor_year == 2023
    res = lib.compute("electricity", 1.0, "MWh", region="CN", year=2030)
    assert res.factor_year == 2023
    assert res.co2_kg == pytest.approx(1000.0 * 0.5306)
    older = lib.compute("electricity", 1000.0, "kWh", region="CN", year=2021)
    assert older.co2_kg == pytest.approx(1000.0 * 0.5568)


def test_regional_grid_by_year(lib: FactorLibrary) -> None:
    res = lib.compute("electricity", 1000.0, "kWh", region="CN-East", year=2022)
    assert res.co2_kg == pytest.approx(1000.0 * 0.5617)
    assert res.factor_year == 2022
    res23 = lib.compute("electricity", 1000.0, "kWh", region="cn-southwest")
    assert res23.co2_kg == pytest.approx(1000.0 * 0.2472)
    assert res23.region == "CN-Southwest"


def test_year_before_any_published_factor_is_an_error(lib: FactorLibrary) -> None:
    with pytest.raises(FactorLookupError, match="2022, 2023"):
        lib.compute("electricity", 1.0, "kWh", region="CN-North", year=2021)


def test_region_is_required_and_must_exist(lib: FactorLibrary) -> None:
    with pytest.raises(FactorLookupError, match="region is required") as info:
        lib.compute("electricity", 1.0, "kWh")
    assert "CN-East" in info.value.problem
    with pytest.raises(FactorLookupError, match="Atlantis"):
        lib.compute("electricity", 1.0, "kWh", region="Atlantis")


def test_us_egrid_with_ch4_and_n2o(lib: FactorLibrary) -> None:
    res = lib.compute("electricity", 1000.0, "kWh", region="US", year=2022)
    mwh = 1.0
    co2 = mwh * 823.149 * LB_TO_KG
    ch4 = mwh * 0.066 * LB_TO_KG
    n2o = mwh * 0.009 * LB_TO_KG
    assert res.co2_kg == pytest.approx(co2)
    assert res.ch4_kg == pytest.approx(ch4)
    assert res.n2o_kg == pytest.approx(n2o)
    assert res.co2e_kg == pytest.approx(co2 + ch4 * 28 + n2o * 265)  # plain CH4 GWP
    assert res.factor_year == 2022
    assert "eGRID2022" in res.factor_version


def test_cn_ets_india_and_eu(lib: FactorLibrary) -> None:
    assert lib.compute("electricity", 1.0, "MWh", region="CN-ETS").co2_kg == pytest.approx(
        1.0 * 0.5703 * 1000
    )
    assert lib.compute("electricity", 1000.0, "kWh", region="IN").co2_kg == pytest.approx(
        1.0 * 0.727 * 1000
    )
    eu = lib.compute("electricity", 1000.0, "kWh", region="EU27", gwp="AR6")
    assert eu.co2e_kg == pytest.approx(1000.0 * 281e-3)
    assert eu.co2_kg == 0.0
    assert eu.gas_basis == "co2e_only"
    assert eu.factor_year == 2018


def test_purchased_heat(lib: FactorLibrary) -> None:
    res = lib.compute("purchased_heat", 10.0, "GJ")
    assert res.co2_kg == pytest.approx(10.0 * 0.11 * 1000)
    assert res.category == "scope2:heat"
    assert res.scope == 2
    steam = lib.compute("steam", 1.0, "MWh")
    assert steam.converted_amount == pytest.approx(3.6)
    assert steam.co2_kg == pytest.approx(3.6 * 0.11 * 1000)


@pytest.mark.parametrize(
    ("activity", "amount", "unit", "expected_kg", "category"),
    [
        ("cement_clinker", 100.0, "t", 100.0 * 0.52 * 1000, "2.A.1"),
        ("lime_high_calcium", 2.0, "t", 2.0 * 0.75 * 1000, "2.A.2"),
        ("lime_dolomitic_developed", 1.0, "t", 1.0 * 0.86 * 1000, "2.A.2"),
        ("lime_dolomitic_developing", 1.0, "t", 1.0 * 0.77 * 1000, "2.A.2"),
        ("lime_hydraulic", 1.0, "t", 1.0 * 0.59 * 1000, "2.A.2"),
        # Eq. 2.12: Mg x EF x (1 - CR), Tier 1 default cullet ratio 0.50.
        ("glass_default", 10.0, "t", 10.0 * 0.20 * (1 - 0.50) * 1000, "2.A.3"),
        ("glass_float", 10.0, "t", 10.0 * 0.21 * (1 - 0.50) * 1000, "2.A.3"),
        ("ammonia_natural_gas", 1.0, "t", 1.0 * 1.694 * 1000, "2.B.1"),
        ("steel_bof", 1.0, "t", 1.0 * 1.46 * 1000, "2.C.1"),
        ("steel_eaf", 500.0, "kg", 0.5 * 0.08 * 1000, "2.C.1"),
        ("pig_iron", 1.0, "t", 1.0 * 1.35 * 1000, "2.C.1"),
        ("dri", 1.0, "t", 1.0 * 0.70 * 1000, "2.C.1"),
        ("sinter", 1.0, "t", 1.0 * 0.20 * 1000, "2.C.1"),
        ("pellet", 1.0, "t", 1.0 * 0.03 * 1000, "2.C.1"),
    ],
)
def test_process_factors(
    lib: FactorLibrary,
    activity: str,
    amount: float,
    unit: str,
    expected_kg: float,
    category: str,
) -> None:
    res = lib.compute(activity, amount, unit)
    assert res.co2_kg == pytest.approx(expected_kg)
    assert res.co2e_kg == pytest.approx(expected_kg)
    assert res.category == category
    assert res.scope == 1
    assert res.co2e_range_kg is None
    assert "2006 IPCC Guidelines, Vol. 3" in res.factor_source
