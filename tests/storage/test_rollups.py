"""Rollups answer what a raw scan answers, on SQLite and on the fixture InfluxDB 1.x:
windows, KPIs and totals over aligned, ragged and open ranges, after late readings,
repeats that overwrite, and a recompute to a new factor version."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carbonlink.config import MeterConfig, PlantConfig
from carbonlink.storage import Emission, Store, StoredReading, open_store
from carbonlink.storage.rollups import (
    DAY_MS,
    HOUR_MS,
    RollupStore,
    activity_points,
    emission_points,
    plan,
)
from carbonlink.storage.windows import aggregate, plant_kpis
from tests.servers import InfluxDBServer

T0 = 1_795_392_000_000  # 2026-11-23T00:00:00Z, a day boundary
STEP_MS = 10 * 60_000
PLANTS = ("p", "q")
METERS = (  # (meter, activity, source, scope, converted unit, kg CO2e per unit)
    ("coal", "other_bituminous_coal", "fuel", 1, "TJ", 94_600.0),
    ("grid", "electricity", "electricity", 2, "kWh", 0.58),
)
PLANT = PlantConfig(
    id="p", name="test plant", archetype="cement", grid_region="CN-East", factor_set="s",
    meters=(
        MeterConfig(id="coal", activity="other_bituminous_coal", unit="t",
                    rated_per_hour=10, nominal_per_hour=5),
        MeterConfig(id="grid", activity="electricity", unit="kWh",
                    rated_per_hour=1e4, nominal_per_hour=5e3),
        MeterConfig(id="clinker", activity="cement_clinker", output=True, unit="t",
                    rated_per_hour=10, nominal_per_hour=5),
    ),
)  # fmt: skip


@pytest.fixture(params=["sqlite", "influxdb_v1"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        backend = open_store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    else:
        server: InfluxDBServer = request.getfixturevalue("influxdb")
        backend = open_store(server.store_url(request.getfixturevalue("influx_database")))
    yield backend
    backend.close()


def readings(step: int, version: str = "1", scale: float = 1.0) -> list[StoredReading]:
    """Step ``step`` (of STEP_MS from T0) of every plant's meters, deterministic values."""
    out = []
    rng = np.random.default_rng(step)
    for plant in PLANTS:
        ts = T0 + step * STEP_MS
        for meter, activity, source, scope, unit, per_unit in METERS:
            amount = float(rng.uniform(0.001, 0.01) if unit == "TJ" else rng.uniform(100, 900))
            co2e = amount * per_unit * scale
            emission = Emission(
                activity, source, scope, "1.A.2", "s", version, "AR5", amount, unit,
                co2e * 0.99, 0.001, 0.0001, co2e, 0.0,
                co2e * 0.05, co2e * 0.06, co2e * 0.01,
            )  # fmt: skip
            out.append(StoredReading(plant, meter, ts, amount, unit, STEP_MS, "measured", emission))
        out.append(
            StoredReading(plant, "clinker", ts, float(rng.uniform(1, 3)), "t", STEP_MS,
                          "measured", None)
        )  # fmt: skip
    return out


def fill(store: Store) -> None:
    """Three days, written out of order: day 2 and 3, then day 1 late; a repeat that
    overwrites; then a recompute of plant p to factor version 2."""
    per_day = DAY_MS // STEP_MS
    for first in range(per_day, 3 * per_day, 48):
        store.write([r for s in range(first, first + 48) for r in readings(s)])
    for first in range(0, per_day, 72):  # late: a whole day after the next ones
        store.write([r for s in range(first, first + 72) for r in readings(s)])
    store.write([dataclasses.replace(r, value=r.value * 2) for r in readings(100, scale=2)])
    store.write(readings(100, scale=2))  # a repeat of the repeat: counted once
    recomputed = [
        r for s in range(3 * per_day) for r in readings(s, version="2", scale=1.1)
        if r.plant == "p" and r.emission is not None
    ]  # fmt: skip
    store.write(recomputed)


RANGES = [
    (None, None),
    (T0 + 37 * 60_000, T0 + 2 * DAY_MS + 5 * HOUR_MS + 7 * 60_000),  # ragged both ends
    (T0 + 3 * HOUR_MS + 1, T0 + 9 * HOUR_MS + 1),  # whole hours inside one day
    (T0 + DAY_MS + 12 * 60_000, None),  # open end
]


def same(rolled: pd.DataFrame, scanned: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        rolled.reset_index(drop=True), scanned.reset_index(drop=True),
        check_exact=False, rtol=1e-9, atol=1e-9,
    )  # fmt: skip


def test_rollups_answer_what_a_raw_scan_answers(store: Store) -> None:
    fill(store)
    assert isinstance(store, RollupStore)
    daily = store.rollups("emissions", DAY_MS, "p", T0, T0 + 3 * DAY_MS, factor_version="2")
    assert daily is not None
    assert len(daily) == 3 * len(METERS)  # one row per day and meter under version 2
    for i, (start, end) in enumerate(RANGES):
        for version, plant in [(("1", "q"), ("2", "p"))[i % 2]]:
            args = {"start_ms": start, "end_ms": end, "factor_set": "s", "factor_version": version}
            for window in (None, "1d", "1h"):
                rolled = emission_points(store, plant, window=window, **args)
                scanned = emission_points(store, plant, window=window, raw=True, **args)
                assert rolled["readings"].sum() == len(scanned)
                by = "meter"  # the finest grouping; scopes and sources are checked by KPIs
                same(aggregate(rolled, by, window), aggregate(scanned, by, window))
            kpis = plant_kpis(
                PLANT.model_copy(update={"id": plant}),
                emission_points(store, plant, **args),
                activity_points(store, plant, start_ms=start, end_ms=end),
            ).as_record()
            raw_kpis = plant_kpis(
                PLANT.model_copy(update={"id": plant}),
                emission_points(store, plant, raw=True, **args),
                activity_points(store, plant, start_ms=start, end_ms=end, raw=True),
            ).as_record()
            same(pd.DataFrame([kpis]), pd.DataFrame([raw_kpis]))
        both = [
            emission_points(store, p, start_ms=start, end_ms=end, factor_set="s",
                            factor_version=v, raw=raw)
            for raw in (False, True) for p, v in (("p", "2"), ("q", "1"))
        ]  # fmt: skip
        same(
            aggregate(pd.concat(both[:2]), "plant", "1d"),
            aggregate(pd.concat(both[2:]), "plant", "1d"),
        )


def test_the_recompute_leaves_each_reading_counted_once_per_version(store: Store) -> None:
    fill(store)
    per_version = {
        v: emission_points(store, "p", factor_set="s", factor_version=v)["readings"].sum()
        for v in ("1", "2")
    }
    stored = store.count_readings("p")
    emitting = stored * len(METERS) // (len(METERS) + 1)  # clinker has no emissions
    assert per_version == {"1": emitting, "2": emitting}


@pytest.mark.parametrize("window", [None, "1d", "1h", "15m"])
def test_plan_covers_every_reading_exactly_once(window: str | None) -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        start, end = sorted(int(x) for x in rng.integers(T0 - DAY_MS, T0 + 4 * DAY_MS, 2))
        end += 1
        pieces = plan(start, end, window)
        for ts in [*rng.integers(start, end, 50), start, end - 1]:
            holders = [
                p for p in pieces
                if (p.source == "raw" and (p.start is None or p.start <= ts)
                    and (p.end is None or ts < p.end))
                or (p.source != "raw" and _bucket_of(int(ts), p.source) >= (p.start or 0)
                    and (p.end is None or _bucket_of(int(ts), p.source) < p.end))
            ]  # fmt: skip
            assert len(holders) == 1, (start, end, ts, pieces)


def _bucket_of(ts: int, source: str) -> int:
    step = HOUR_MS if source == "1h" else DAY_MS
    return (ts - 1) // step * step
