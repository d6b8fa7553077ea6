"""Unit and activity errors, and a walk over the shipped data files."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
import yaml

from carbonlink.emissions import FactorLibrary
from carbonlink.errors import FactorLookupError, UnitError, UnknownActivityError


def test_unknown_activity_lists_known_ids(lib: FactorLibrary) -> None:
    with pytest.raises(UnknownActivityError) as info:
        lib.compute("unobtainium", 1.0, "t")
    assert info.value.activity == "unobtainium"
    assert "natural_gas" in info.value.known


@pytest.mark.parametrize(
    ("activity", "unit", "fragment"),
    [
        ("natural_gas", "m3", "Nm3"),
        ("other_bituminous_coal", "L", "got volume"),
        ("electricity", "t", "needs an amount of energy"),
        ("purchased_heat", "kg", "needs an amount of energy"),
        ("cement_clinker", "kWh", "needs an amount of mass"),
        ("natural_gas", "parsecs_per_fortnight", "not a known unit"),
        ("natural_gas", "", "empty unit"),
    ],
)
def test_wrong_units_raise_unit_error(
    lib: FactorLibrary, activity: str, unit: str, fragment: str
) -> None:
    with pytest.raises(UnitError) as info:
        lib.resolve(activity, unit, region="CN")
    assert fragment in info.value.problem
    assert info.value.unit == unit


def test_unknown_gwp_and_sector(lib: FactorLibrary) -> None:
    with pytest.raises(FactorLookupError, match="AR3"):
        lib.compute("natural_gas", 1.0, "t", gwp="AR3")
    with pytest.raises(FactorLookupError, match="sector"):
        lib.compute("natural_gas", 1.0, "t", sector="households")


def test_to_dict_is_json_ready(lib: FactorLibrary) -> None:
    res = lib.compute("natural_gas", 1.0, "t")
    payload = json.loads(json.dumps(res.to_dict()))
    for key in ("co2_kg", "ch4_kg", "n2o_kg", "co2e_kg", "biogenic_co2_kg", "factor_source"):
        assert key in payload
    assert payload["co2_kg"] == pytest.approx(48.0e-3 * 56100)
    assert len(payload["co2e_range_kg"]) == 2


def test_activities_cover_the_required_ids(lib: FactorLibrary) -> None:
    ids = {a.id: a for a in lib.activities()}
    for required in (
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
        "wood_waste",
        "electricity",
        "purchased_heat",
        "cement_clinker",
        "steel_bof",
        "ammonia_natural_gas",
    ):
        assert required in ids
        assert ids[required].source
    assert ids["natural_gas"].kind == "fuel"
    assert ids["natural_gas"].unit == "TJ"
    assert ids["electricity"].unit == "kWh"
    assert ids["purchased_heat"].unit == "GJ"
    assert ids["cement_clinker"].unit == "t"


def _data(name: str) -> Any:
    text = (resources.files("carbonlink.emissions") / "data" / name).read_text("utf-8")
    return yaml.safe_load(text)


def _assert_source(source: Any, where: str) -> None:
    assert isinstance(source, dict), f"{where}: no source"
    assert source.get("document"), f"{where}: source without document"
    assert source.get("table"), f"{where}: source without table"
    assert source.get("version") or source.get("year"), f"{where}: no version or year"


def test_every_stationary_factor_has_value_unit_and_source() -> None:
    fuels = _data("ipcc2006_stationary.yaml")["fuels"]
    assert len(fuels) == 11
    for fuel_id, fuel in fuels.items():
        entries = [("ncv", fuel["ncv"]), ("co2", fuel["co2"])]
        entries += [(f"ch4.{s}", v) for s, v in fuel["ch4"].items()]
        entries += [(f"n2o.{s}", v) for s, v in fuel["n2o"].items()]
        if "density" in fuel:
            entries.append(("density", fuel["density"]))
        for key, entry in entries:
            where = f"{fuel_id}.{key}"
            assert isinstance(entry["value"], int | float), where
            assert entry["unit"], where
            _assert_source(entry["source"], where)
        # IPCC gives 95% ranges for NCV and CO2 of every fuel in Tables 1.2 / 1.4.
        assert fuel["ncv"]["lower"] <= fuel["ncv"]["value"] <= fuel["ncv"]["upper"]
        assert fuel["co2"]["lower"] <= fuel["co2"]["value"] <= fuel["co2"]["upper"]


def test_derived_ranges_are_marked() -> None:
    fuels = _data("ipcc2006_stationary.yaml")["fuels"]
    derived = {fuel_id for fuel_id, fuel in fuels.items() if fuel["co2"].get("derived")}
    assert derived == {"coking_coal", "coke_oven_coke", "petroleum_coke", "wood_waste"}
    assert fuels["wood_waste"]["biogenic"] is True


def test_conversion_assumptions_are_declared() -> None:
    fuels = _data("ipcc2006_stationary.yaml")["fuels"]
    for fuel_id in ("natural_gas", "gas_diesel_oil", "residual_fuel_oil", "lpg"):
        density = fuels[fuel_id]["density"]
        assert density["assumption"] is True
        assert "assumption" in density["source"]["document"]
    assert "101.325 kPa" in fuels["natural_gas"]["density"]["source"]["document"]


def test_every_grid_heat_process_and_gwp_entry_has_a_source() -> None:
    for region_id, region in _data("grid.yaml")["regions"].items():
        for year, entry in region["years"].items():
            where = f"grid {region_id} {year}"
            _assert_source(entry["source"], where)
            assert entry["basis"] in {"per_gas", "co2_only", "co2e_only"}, where
    for heat_id, heat in _data("heat.yaml")["heat"].items():
        _assert_source(heat["source"], heat_id)
    for process_id, process in _data("process.yaml")["processes"].items():
        _assert_source(process["co2"]["source"], process_id)
        assert process["co2"]["unit"] == "t/t"
    for name, gwp_set in _data("gwp.yaml")["sets"].items():
        _assert_source(gwp_set["source"], name)


def test_library_loads_from_a_directory_copy(tmp_path: Any) -> None:
    folder = resources.files("carbonlink.emissions") / "data"
    for name in ("ipcc2006_stationary.yaml", "gwp.yaml", "grid.yaml", "heat.yaml", "process.yaml"):
        (tmp_path / name).write_text((folder / name).read_text("utf-8"), "utf-8")
    copy = FactorLibrary.load(tmp_path)
    assert copy.compute("natural_gas", 1.0, "TJ").co2_kg == pytest.approx(56100)
