"""Windows and KPIs against numbers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from carbonlink.config import MeterConfig, PlantConfig
from carbonlink.storage import ACTIVITY_COLUMNS, EMISSION_COLUMNS
from carbonlink.storage._base import typed_frame
from carbonlink.storage.windows import aggregate, plant_kpis, window_start

T0 = pd.Timestamp("2026-11-23T08:00:00Z")

# (minute after T0, meter, activity, source, scope, converted amount, unit, co2e kg)
# Relative 95% half-widths the test points carry: coal's CO2 factor -5%/+6% of CO2;
# every meter 1% of CO2e; electricity's and clinker's factors have no published range.
FACTOR_REL = {"other_bituminous_coal": (0.05, 0.06)}
METER_REL = 0.01

ROWS = [
    (1, "coal", "other_bituminous_coal", "fuel", 1, 0.02, "TJ", 10.0),
    (15, "coal", "other_bituminous_coal", "fuel", 1, 0.03, "TJ", 20.0),  # ends on 08:15
    (16, "grid", "electricity", "electricity", 2, 1000.0, "kWh", 5.0),
    (30, "coal", "other_bituminous_coal", "fuel", 1, 0.01, "TJ", 1.0),
    (0, "coal", "other_bituminous_coal", "fuel", 1, 0.04, "TJ", 100.0),  # ends on 08:00
]


def emissions(
    rows: list[tuple[int, str, str, str, int, float, str, float]], plant: str = "p"
) -> pd.DataFrame:
    return typed_frame(
        EMISSION_COLUMNS,
        pd.DataFrame(
            [
                {
                    "time": T0 + pd.Timedelta(minutes=m),
                    "plant": plant,
                    "meter": meter,
                    "activity": activity,
                    "source": source,
                    "scope": scope,
                    "category": "x",
                    "factor_set": "s",
                    "factor_version": "1",
                    "gwp": "AR5",
                    "converted_amount": amount,
                    "converted_unit": unit,
                    "co2_kg": co2e * 0.9,
                    "ch4_kg": 0.0,
                    "n2o_kg": 0.0,
                    "co2e_kg": co2e,
                    "biogenic_co2_kg": 0.0,
                    "u95_factor_lower_kg": co2e * 0.9 * FACTOR_REL.get(activity, (0, 0))[0],
                    "u95_factor_upper_kg": co2e * 0.9 * FACTOR_REL.get(activity, (0, 0))[1],
                    "u95_meter_kg": co2e * METER_REL,
                }
                for m, meter, activity, source, scope, amount, unit, co2e in rows
            ]
        ),
    )


def test_window_of_a_reading_is_where_its_interval_lies() -> None:
    times = pd.Series(
        pd.to_datetime(["2026-11-23T08:15:00Z", "2026-11-23T08:15:00.001Z"], format="ISO8601")
    )
    assert window_start(times, "15m").tolist() == [
        pd.Timestamp("2026-11-23T08:00Z"),
        pd.Timestamp("2026-11-23T08:15Z"),
    ]
    with pytest.raises(ValueError, match="unknown window"):
        window_start(times, "7m")


def test_fifteen_minute_totals() -> None:
    frame = aggregate(emissions(ROWS), "total", "15m")
    assert frame["window_start"].dt.strftime("%H:%M").tolist() == ["07:45", "08:00", "08:15"]
    assert frame["co2e_kg"].tolist() == [100.0, 30.0, 6.0]
    assert frame["co2_kg"].tolist() == pytest.approx([90.0, 27.0, 5.4])
    assert frame["readings"].tolist() == [1, 2, 2]
    # 08:15 mixes TJ of coal with kWh of electricity: no activity sum there.
    assert frame["activity"].tolist()[:2] == pytest.approx([0.04, 0.05])
    assert pd.isna(frame["activity"].iloc[2])
    assert frame["activity_unit"].tolist()[:2] == ["TJ", "TJ"]


def test_hourly_and_daily_windows_by_source_and_scope() -> None:
    by_source = aggregate(emissions(ROWS), "source", "1h")
    assert by_source[["source", "co2e_kg", "activity", "activity_unit"]].to_dict("records") == [
        {"source": "fuel", "co2e_kg": 100.0, "activity": 0.04, "activity_unit": "TJ"},  # 07:00
        {"source": "electricity", "co2e_kg": 5.0, "activity": 1000.0, "activity_unit": "kWh"},
        {"source": "fuel", "co2e_kg": 31.0, "activity": pytest.approx(0.06), "activity_unit": "TJ"},
    ]
    by_scope = aggregate(emissions(ROWS), "scope", "1d")
    assert by_scope[["scope", "co2e_kg"]].to_dict("records") == [
        {"scope": 1, "co2e_kg": 131.0},
        {"scope": 2, "co2e_kg": 5.0},
    ]
    assert (by_scope["window_start"] == pd.Timestamp("2026-11-23T00:00Z")).all()


def test_by_meter_without_window_and_empty_input() -> None:
    by_meter = aggregate(emissions(ROWS), "meter")
    assert by_meter[["meter", "co2e_kg", "readings"]].to_dict("records") == [
        {"meter": "coal", "co2e_kg": 131.0, "readings": 4},
        {"meter": "grid", "co2e_kg": 5.0, "readings": 1},
    ]
    empty = aggregate(emissions([]), "total", "15m")
    assert empty.empty
    assert "co2e_kg" in empty.columns


PLANT = PlantConfig(
    id="p",
    name="test plant",
    archetype="cement",
    grid_region="CN-East",
    factor_set="s",
    meters=(
        MeterConfig(id="coal", activity="other_bituminous_coal", unit="t",
                    rated_per_hour=10, nominal_per_hour=5),
        MeterConfig(id="grid", activity="electricity", unit="kWh",
                    rated_per_hour=1e4, nominal_per_hour=5e3),
        MeterConfig(id="clinker", activity="cement_clinker", output=True, unit="t",
                    rated_per_hour=10, nominal_per_hour=5),
    ),
)  # fmt: skip


def activity(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [
        {"time": T0 + pd.Timedelta(minutes=i + 1), "plant": "p", "meter": meter, "value": v,
         "unit": "t", "duration_s": 60.0, "quality": "measured"}
        for meter, series in values.items()
        for i, v in enumerate(series)
    ]  # fmt: skip
    return typed_frame(ACTIVITY_COLUMNS, pd.DataFrame(rows))


def test_kpis_by_hand() -> None:
    points = emissions(
        [
            (1, "coal", "other_bituminous_coal", "fuel", 1, 0.05, "TJ", 4000.0),
            (1, "grid", "electricity", "electricity", 2, 1000.0, "kWh", 500.0),
            (1, "clinker", "cement_clinker", "process", 1, 10.0, "t", 500.0),
        ]
    )
    kpis = plant_kpis(PLANT, points, activity({"clinker": [4.0, 6.0], "coal": [2.0]}))
    assert kpis.total_tco2e == pytest.approx(5.0)
    assert dict(kpis.tco2e_by_scope) == pytest.approx({1: 4.5, 2: 0.5})
    assert (kpis.output, kpis.output_unit) == (10.0, "t")
    assert kpis.carbon_productivity == pytest.approx(2.0)  # 10 t / 5 tCO2e
    assert kpis.carbon_intensity == pytest.approx(0.5)
    # 0.05 TJ coal = 50 GJ; 1000 kWh x 0.0036 = 3.6 GJ; the process row is not energy.
    assert kpis.energy_gj == pytest.approx(53.6)
    assert kpis.energy_intensity == pytest.approx(5.36)
    assert kpis.electricity_kwh == pytest.approx(1000.0)
    assert kpis.electricity_intensity == pytest.approx(100.0)
    assert dict(kpis.energy_structure) == pytest.approx(
        {"electricity": 3.6 / 53.6, "other_bituminous_coal": 50 / 53.6}
    )
    record = kpis.as_record()
    assert record["scope1_tco2e"] == pytest.approx(4.5)
    assert record["energy_share_electricity"] == pytest.approx(3.6 / 53.6)


def test_kpis_without_output_or_emissions_are_undefined_not_infinite() -> None:
    kpis = plant_kpis(PLANT, emissions([]), activity({}))
    assert kpis.total_tco2e == 0.0
    assert dict(kpis.tco2e_by_scope) == {1: 0.0, 2: 0.0}
    assert kpis.output == 0.0
    assert kpis.carbon_productivity is None
    assert kpis.carbon_intensity is None
    assert kpis.energy_structure == {}


def test_window_intervals_combine_factors_and_meters_by_hand() -> None:
    frame = aggregate(emissions(ROWS), "total", "15m")
    # 07:45: one coal reading, CO2e 100 (CO2 90): factor 4.5 / 5.4, meter 1.0.
    # 08:00: two readings of the same meter and factor, CO2e 10 and 20 (CO2 9 and 18):
    #   fully correlated, so linear sums first: factor 1.35 / 1.62, meter 0.3.
    # 08:15: coal CO2e 1 (CO2 0.9: factor 0.045 / 0.054, meter 0.01) and grid CO2e 5
    #   (no factor range, meter 0.05): different factors and meters in quadrature.
    lower = [math.hypot(4.5, 1.0), math.hypot(1.35, 0.3), math.sqrt(0.045**2 + 0.01**2 + 0.05**2)]
    upper = [math.hypot(5.4, 1.0), math.hypot(1.62, 0.3), math.sqrt(0.054**2 + 0.01**2 + 0.05**2)]
    totals = [100.0, 30.0, 6.0]
    assert frame["co2e_kg_lower95"].tolist() == pytest.approx(
        [t - h for t, h in zip(totals, lower, strict=True)]
    )
    assert frame["co2e_kg_upper95"].tolist() == pytest.approx(
        [t + h for t, h in zip(totals, upper, strict=True)]
    )
    by_meter = aggregate(emissions(ROWS), "meter")
    coal = by_meter.set_index("meter").loc["coal"]
    coal_co2 = 131.0 * 0.9
    assert coal["co2e_kg_upper95"] == pytest.approx(
        131.0 + math.hypot(coal_co2 * 0.06, 131.0 * 0.01)
    )


def test_one_default_factor_is_one_error_across_meters_and_plants() -> None:
    # Two plants burn coal under the same IPCC default: the factor's error is shared, so
    # its half-widths add (0.05 x 90 twice = 9.0), while the two meters' are independent
    # (1.0 and 1.0 in quadrature).
    row = [(1, "coal", "other_bituminous_coal", "fuel", 1, 0.1, "TJ", 100.0)]
    both = pd.concat([emissions(row, "p1"), emissions(row, "p2")], ignore_index=True)
    total = aggregate(both, "total")
    assert total["co2e_kg_lower95"].iloc[0] == pytest.approx(
        200.0 - math.hypot(9.0, math.hypot(1.0, 1.0))
    )
    by_plant = aggregate(both, "plant")
    assert by_plant["co2e_kg_lower95"].tolist() == pytest.approx([100 - math.hypot(4.5, 1.0)] * 2)


def test_a_point_without_uncertainty_makes_its_windows_interval_unknown() -> None:
    points = emissions(ROWS)
    late = points["time"] == T0 + pd.Timedelta(minutes=15)  # in the 08:00 window
    points.loc[late, "u95_meter_kg"] = float("nan")  # written before the fields existed
    frame = aggregate(points, "total", "15m")
    assert frame["co2e_kg_lower95"].isna().tolist() == [False, True, False]


def test_kpi_intervals_by_hand() -> None:
    points = emissions(
        [
            (1, "coal", "other_bituminous_coal", "fuel", 1, 0.05, "TJ", 4000.0),
            (1, "grid", "electricity", "electricity", 2, 1000.0, "kWh", 500.0),
            (1, "clinker", "cement_clinker", "process", 1, 10.0, "t", 500.0),
        ]
    )
    accurate = PLANT.model_copy(
        update={"meters": tuple(m.model_copy(update={"accuracy_pct": 1.0}) for m in PLANT.meters)}
    )
    kpis = plant_kpis(
        accurate,
        points,
        activity({"clinker": [4.0, 6.0]}),
        ncv_ranges={"coal": (0.2, 0.1)},
    )
    record = kpis.as_record()
    # Total 5 t: coal factor 3.6 x 5% = 0.18 t (low) / 0.216 t (high); meters 1% of
    # 4.0, 0.5 and 0.5 t, independent.
    meters_t = math.sqrt(0.04**2 + 0.005**2 + 0.005**2)
    assert record["total_tco2e_lower95"] == pytest.approx(5.0 - math.hypot(0.18, meters_t))
    assert record["total_tco2e_upper95"] == pytest.approx(5.0 + math.hypot(0.216, meters_t))
    # Carbon intensity E/Q = 0.5 t/t. The clinker meter drives both process CO2 (0.5 t)
    # and output (10 t): its 1% shifts E by 0.005 and Q by 0.1, so R by
    # (0.005 - 0.5 x 0.1) / 10 = -0.0045; coal factor +-0.018/0.0216, coal meter 0.004,
    # grid meter 0.0005.
    low = math.sqrt(0.018**2 + 0.004**2 + 0.0005**2 + 0.0045**2)
    high = math.sqrt(0.0216**2 + 0.004**2 + 0.0005**2 + 0.0045**2)
    assert record["carbon_intensity_lower95"] == pytest.approx(0.5 - low)
    assert record["carbon_intensity_upper95"] == pytest.approx(0.5 + high)
    # Productivity Q/E = 2: first order, its relative interval mirrors the intensity's.
    assert record["carbon_productivity_upper95"] == pytest.approx(2.0 * (1 + low / 0.5))
    # Energy 53.6 GJ: coal 50 GJ with the NCV's -20%/+10% (10 / 5 GJ) and its meter
    # (0.5 GJ); electricity 3.6 GJ with its meter (0.036 GJ).
    assert record["energy_gj_lower95"] == pytest.approx(
        53.6 - math.sqrt(10.0**2 + 0.5**2 + 0.036**2)
    )
    assert record["energy_gj_upper95"] == pytest.approx(
        53.6 + math.sqrt(5.0**2 + 0.5**2 + 0.036**2)
    )
    assert record["electricity_kwh_upper95"] == pytest.approx(1010.0)
    assert record["output_lower95"] == pytest.approx(9.9)
