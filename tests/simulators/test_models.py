"""The load, adoption and abatement models, and the fleet, without a broker."""

from __future__ import annotations

import math

import numpy as np
import pytest

from carbonlink.abatement import x_at
from carbonlink.config import DigitalConfig, MeterConfig, PlantConfig, load_config
from carbonlink.errors import ConfigError
from carbonlink.simulators import (
    Fleet,
    abatement_inflow,
    digital_multiplier,
    emission_factors,
)
from carbonlink.simulators._models import MS_PER_HOUR

START_MS = 1_780_000_000_000  # 2026-05-28, a Thursday


def repo_plants() -> dict[str, PlantConfig]:
    return load_config("config/carbonlink.yaml").plants


def with_sim(plant: PlantConfig, **simulation: object) -> PlantConfig:
    data = plant.model_dump()
    for key, value in simulation.items():
        data["simulation"][key] = {**data["simulation"][key], **value}  # type: ignore[dict-item]
    return PlantConfig.model_validate(data)


def run(fleet: Fleet, hours: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ticks = fleet.advance(START_MS + round(hours * MS_PER_HOUR))
    ts = np.concatenate([np.full(len(t.meters), t.ts_ms) for t in ticks])
    meters = np.concatenate([t.meters for t in ticks])
    values = np.concatenate([t.values for t in ticks])
    return ts, meters, values


@pytest.mark.parametrize("turning_point", [1.86, 2.47, 3.62])
def test_adoption_overhead_peaks_at_configured_turning_point(turning_point: float) -> None:
    config = DigitalConfig(turning_point=turning_point, peak_overhead=0.05)
    grid = np.linspace(0, 8, 8001)
    multiplier = np.asarray(digital_multiplier(grid, config))
    assert grid[np.argmax(multiplier)] == pytest.approx(turning_point, abs=1e-3)
    assert multiplier.max() == pytest.approx(1.05)
    assert digital_multiplier(0.0, config) == 1.0
    assert digital_multiplier(2 * turning_point, config) == pytest.approx(1.0)
    assert digital_multiplier(3 * turning_point, config) < 1.0  # savings beyond 2 A*


def test_industrial_park_congestion_suppresses_savings() -> None:
    free = DigitalConfig(turning_point=2.47)
    park = DigitalConfig(turning_point=2.47, industrial_park=True, park_congestion=0.06)
    a = 4 * 2.47
    saved_free = 1 - float(digital_multiplier(a, free))
    saved_park = 1 - float(digital_multiplier(a, park))
    assert 0 < saved_park < saved_free
    grid = np.linspace(0, 8, 8001)
    peak = grid[np.argmax(np.asarray(digital_multiplier(grid, park)))]
    assert peak == pytest.approx(2.47 / 0.94, abs=1e-3)


def test_simulated_emissions_peak_at_turning_point() -> None:
    """Adoption runs through the fleet: meter draws follow the inverted U."""
    cement = repo_plants()["cement-01"]
    factor = emission_factors()
    totals = []
    levels = [0.0, 1.0, 2.0, 2.47, 3.0, 4.0, 6.0]
    for adoption in levels:
        plant = with_sim(cement, digital={"adoption": adoption, "turning_point": 2.47})
        fleet = Fleet([plant], 7, START_MS, factor)
        _, meters, values = run(fleet, 2)
        refs = fleet.meter_refs
        energy = [
            values[meters == i].sum() * factor(p, m).co2e_kg_per_unit
            for i, (p, m) in enumerate(refs)
            if not m.output and m.reading.value == "interval"
        ]
        totals.append(sum(energy))
    assert levels[int(np.argmax(totals))] == 2.47
    assert totals[-1] < totals[0]  # far past the turning point adoption saves


def test_counters_roll_over_and_intervals_survive_it() -> None:
    electronics = repo_plants()["electronics-01"]
    data = electronics.model_dump()
    data["meters"][0]["counter_rollover"] = 5_000.0  # grid-main: rolls every few hours
    plant = PlantConfig.model_validate(data)
    fleet = Fleet([plant], 3, START_MS, emission_factors())
    before = fleet.register[0]
    _, meters, values = run(fleet, 24)
    registers = values[meters == 0]
    assert registers.min() >= 0
    assert registers.max() < 5_000
    drops = np.flatnonzero(np.diff(registers) < 0)
    assert len(drops) >= 2  # it did roll over
    # Intervals reconstructed modulo the rollover are plausible and never negative.
    intervals = np.diff(np.concatenate([[before], registers])) % 5_000
    assert intervals.max() <= plant.meters[0].rated_per_hour * 15 / 3600 * 1.1
    assert intervals.min() >= 0


def test_shift_pattern_ramps_and_weekends() -> None:
    textiles = repo_plants()["textiles-01"]
    fleet = Fleet([textiles], 1, START_MS, emission_factors())
    ts, meters, values = run(fleet, 24 * 7)
    output = values[meters == 2]
    hours = ((ts[meters == 2] + 8 * MS_PER_HOUR) % (24 * MS_PER_HOUR)) / MS_PER_HOUR
    day_shift = output[(hours > 9) & (hours < 20)].mean()
    night = output[(hours > 23) | (hours < 5)].mean()
    assert night < 0.3 * day_shift
    # Ramps: no step larger than 1/ramp_hours per hour (plus noise) at start-up.
    per_min = output / textiles.meters[2].nominal_per_hour * 60
    assert np.abs(np.diff(per_min)).max() < 1 / 60 + 0.1


def test_same_seed_same_values_other_seed_differs() -> None:
    plants = list(repo_plants().values())
    a = run(Fleet(plants, 5, START_MS, emission_factors()), 3)
    b = run(Fleet(plants, 5, START_MS, emission_factors()), 3)
    c = run(Fleet(plants, 6, START_MS, emission_factors()), 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])
    # A plant's stream does not depend on which other plants run with it.
    alone = run(Fleet([repo_plants()["steel-01"]], 5, START_MS, emission_factors()), 3)
    steel = [
        i
        for i, (p, _) in enumerate(Fleet(plants, 5, START_MS, emission_factors()).meter_refs)
        if p.id == "steel-01"
    ]
    mask = np.isin(a[1], steel)
    assert np.array_equal(a[2][mask], alone[2])


def test_abatement_reduces_emissions_as_the_dynamics_predict() -> None:
    # The efficiency route alone; test_fuel_switch_* covers the switching route.
    cement = with_sim(
        repo_plants()["cement-01"], shift={"noise_sd": 0.0}, abatement={"fuel_switch": None}
    )
    factor = emission_factors()
    baseline = Fleet([cement], 11, START_MS, factor)
    steered = Fleet([cement], 11, START_MS, factor)
    effective = START_MS + 2 * MS_PER_HOUR
    abate = cement.simulation.abatement
    inflow = abatement_inflow(abate, effort_firm=4.58, effort_platform=2.93, sigma=1.25)
    steered.set_inflow(0, effective, inflow)
    ts_b, meters_b, values_b = run(baseline, 12)
    ts_s, meters_s, values_s = run(steered, 12)
    assert np.array_equal(ts_b, ts_s)
    assert np.array_equal(meters_b, meters_s)
    refs = baseline.meter_refs
    emitting = [
        i
        for i, (_, m) in enumerate(refs)
        if m.activity and not m.output and m.reading.value == "interval"
    ]
    # The interval meters (coal, petcoke) carry their emission share of X; per sample
    # their avoided tCO2e equals X(t) x share x sample length.
    share = sum(
        m.nominal_per_hour * factor(cement, m).co2e_kg_per_unit
        for i, (_, m) in enumerate(refs)
        if i in emitting
    ) / sum(
        m.nominal_per_hour * factor(cement, m).co2e_kg_per_unit
        for _, m in refs
        if m.activity and not m.output
    )
    times = np.unique(ts_b)
    avoided = np.array(
        [
            sum(
                (
                    values_b[(ts_b == t) & (meters_b == i)]
                    - values_s[(ts_s == t) & (meters_s == i)]
                ).sum()
                * factor(cement, refs[i][1]).co2e_kg_per_unit
                for i in emitting
            )
            / 1000
            for t in times
        ]
    )
    periods = np.maximum(times - effective, 0) / (abate.period_s * 1000)
    expected = np.asarray(x_at(0.0, inflow, abate.delta, periods)) * share / 60
    assert np.all(avoided[times <= effective] == pytest.approx(0.0, abs=1e-6))
    assert avoided == pytest.approx(expected, rel=1e-3, abs=1e-5)
    # Stage 3 of the reference case: X tends to I/delta = 37.45 tCO2e/h.
    assert inflow / abate.delta == pytest.approx(37.45, rel=1e-3)
    assert avoided[-1] * 60 / share == pytest.approx(37.45 * (1 - math.exp(-0.2 * 10)), rel=1e-3)


def test_meter_config_defaults_keep_old_files_valid() -> None:
    meter = MeterConfig(
        id="m", activity="electricity", unit="kWh", rated_per_hour=2, nominal_per_hour=1
    )
    assert meter.base_load == 0.15
    assert meter.abatement_weight is None


def test_fuel_switch_moves_energy_and_cuts_co2e_by_its_share_of_x() -> None:
    """With only the switching route, the CO2e avoided equals X; the heat moved from coal
    reappears as biomass (same TJ), and a stronger effort moves more."""
    switch_only = {
        "fuel_switch": {"from_meter": "kiln-coal", "to_meter": "kiln-biomass", "share": 1.0}
    }
    cement = with_sim(repo_plants()["cement-01"], shift={"noise_sd": 0.0}, abatement=switch_only)
    factor = emission_factors()
    baseline = Fleet([cement], 4, START_MS, factor)
    steered = Fleet([cement], 4, START_MS, factor)
    abate = cement.simulation.abatement
    inflow = abatement_inflow(abate, effort_firm=1.667, effort_platform=0.427, sigma=1.0)
    steered.set_inflow(0, START_MS, inflow)
    ts_b, meters_b, values_b = run(baseline, 8)
    ts_s, meters_s, values_s = run(steered, 8)
    refs = baseline.meter_refs
    index = {m.id: i for i, (_, m) in enumerate(refs)}
    coal_f, wood_f = (
        factor(cement, refs[index["kiln-coal"]][1]),
        factor(cement, refs[index["kiln-biomass"]][1]),
    )
    end = int(ts_b.max())

    def at(values: np.ndarray, ts: np.ndarray, meters: np.ndarray, meter: str) -> float:
        return float(values[(ts == end) & (meters == index[meter])][0])

    coal_cut = at(values_b, ts_b, meters_b, "kiln-coal") - at(values_s, ts_s, meters_s, "kiln-coal")
    wood_rise = at(values_s, ts_s, meters_s, "kiln-biomass") - at(
        values_b, ts_b, meters_b, "kiln-biomass"
    )
    assert coal_cut > 0
    assert wood_rise > 0
    assert coal_cut * coal_f.conversion == pytest.approx(wood_rise * wood_f.conversion, rel=1e-3)
    avoided_kg = coal_cut * coal_f.co2e_kg_per_unit - wood_rise * wood_f.co2e_kg_per_unit
    x = float(x_at(0.0, inflow, abate.delta, (end - START_MS) / (abate.period_s * 1000)))
    assert avoided_kg == pytest.approx(x * 1000 / 60, rel=1e-3)  # one-minute sample
    for meter in ("kiln-petcoke", "grid-main"):  # efficiency share is zero here
        mask = meters_b == index[meter]
        assert np.array_equal(values_b[mask], values_s[meters_s == index[meter]])


def test_fuel_switch_to_a_dirtier_fuel_is_refused() -> None:
    dirtier = {"fuel_switch": {"from_meter": "kiln-biomass", "to_meter": "kiln-coal"}}
    cement = with_sim(repo_plants()["cement-01"], abatement=dirtier)
    with pytest.raises(ConfigError, match="emits no less per TJ"):
        Fleet([cement], 1, START_MS, emission_factors())
