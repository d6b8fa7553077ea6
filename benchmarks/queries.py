"""Query cost against history: a year of five plants, KPIs and totals from rollups
against the raw scan, on SQLite and on InfluxDB 1.x, in one run.

The year is written straight into each store through ``Store.write_batch`` (the
platform's own write path, rollups included) a day per batch (2,400 readings), readings every
``STEP_MIN`` minutes from five meters per plant (four emission sources and an output
meter), seeded so every run stores the same numbers. The queries are what the API's
``/plants/{plant}/kpis`` and ``/totals?by=plant`` compute (``storage.rollups`` ->
``windows.plant_kpis`` / ``windows.aggregate``), over the whole year with ragged edges
(7 minutes in, 13 minutes short), so whole days, hours and raw points all take part.
The raw scan is the same computation reading every point (``raw=True``); the two must
agree before a time counts. Target: under ``TARGET_S`` for each.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from carbonlink.config import MeterConfig, PlantConfig
from carbonlink.storage import (
    EMISSION_NUMBERS,
    EmissionTags,
    InfluxDBV1Store,
    Store,
    StoredBatch,
    open_store,
)
from carbonlink.storage.rollups import activity_points, emission_points
from carbonlink.storage.windows import aggregate, plant_kpis

TARGET_S: Final = 1.0
YEAR_START_MS: Final = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS: Final = 86_400_000
STEP_MIN: Final = 15  # interval meters' usual period
PLANTS: Final = tuple(f"bench-plant-{i}" for i in range(1, 6))
FACTOR_SET: Final = ("bench-set", "1")
REPEATS: Final = 3
RAW_SCAN_TIMEOUT_S: Final = 600.0
SEED: Final = 20261207
# (meter, activity, source, scope, converted unit, kg CO2e per converted unit, mean amount)
SOURCES: Final = (
    ("coal", "other_bituminous_coal", "fuel", 1, "TJ", 94_600.0, 0.05),
    ("gas", "natural_gas", "fuel", 1, "TJ", 56_100.0, 0.02),
    ("grid", "electricity", "electricity", 2, "kWh", 0.58, 4_000.0),
    ("kiln", "cement_clinker", "process", 1, "t", 520.0, 20.0),
)
OUTPUT: Final = ("clinker", "t", 20.0)


@dataclass(frozen=True, slots=True)
class QueryResult:
    store: str
    readings: int
    write_s: float
    kpis_s: float
    kpis_raw_s: float
    totals_s: float
    totals_raw_s: float
    kpis_cpu_s: float  # this process's CPU for one rollup KPI query: what load cannot inflate
    totals_cpu_s: float

    @property
    def met(self) -> bool:
        return self.kpis_s < TARGET_S and self.totals_s < TARGET_S


def plant_config(plant: str) -> PlantConfig:
    meters = [
        MeterConfig(id=m, activity=a, unit=u, rated_per_hour=10 * n, nominal_per_hour=n)
        for m, a, _, _, u, _, n in SOURCES
    ]
    meters.append(
        MeterConfig(id=OUTPUT[0], activity="cement_clinker", output=True, unit=OUTPUT[1],
                    rated_per_hour=10 * OUTPUT[2], nominal_per_hour=OUTPUT[2])
    )  # fmt: skip
    return PlantConfig(
        id=plant, name=plant, archetype="cement", grid_region="CN-East",
        factor_set=FACTOR_SET[0], meters=tuple(meters),
    )  # fmt: skip


def batches(days: int, days_per_batch: int = 1) -> Iterator[StoredBatch]:
    """The year (or ``days``) as batches, seeded: every run writes the same numbers."""
    rng = np.random.default_rng(SEED)
    step_ms = STEP_MIN * 60_000
    per_day = DAY_MS // step_ms
    tags = {
        m: EmissionTags(a, s, scope, "bench", *FACTOR_SET, "AR5", u)
        for m, a, s, scope, u, _, _ in SOURCES
    }
    for first_day in range(0, days, days_per_batch):
        steps = np.arange(first_day * per_day, min(days, first_day + days_per_batch) * per_day)
        ts = (YEAR_START_MS + (steps + 1) * step_ms).tolist()
        parts = []
        for plant in PLANTS:
            for meter, _, _, _, unit, per_unit, mean in SOURCES:
                amount = rng.uniform(0.5, 1.5, len(ts)) * mean
                numbers = np.zeros((len(ts), len(EMISSION_NUMBERS)))
                co2e = amount * per_unit
                numbers[:, 0] = amount
                numbers[:, 1] = co2e * 0.99  # co2
                numbers[:, 4] = co2e
                numbers[:, 6:9] = co2e[:, None] * (0.05, 0.06, 0.01)
                parts.append(_batch(plant, meter, unit, ts, amount, tags[meter], numbers))
            amount = rng.uniform(0.5, 1.5, len(ts)) * OUTPUT[2]
            zeros = np.zeros((len(ts), len(EMISSION_NUMBERS)))
            parts.append(_batch(plant, OUTPUT[0], OUTPUT[1], ts, amount, None, zeros))
        yield StoredBatch.concat(parts)


def _batch(
    plant: str, meter: str, unit: str, ts: list[int], amount: np.ndarray,
    tags: EmissionTags | None, numbers: np.ndarray,
) -> StoredBatch:  # fmt: skip
    n = len(ts)
    step_ms = STEP_MIN * 60_000
    return StoredBatch(
        [plant] * n, [meter] * n, ts, amount.tolist(), [unit] * n, [step_ms] * n,
        ["measured"] * n, [tags] * n, numbers,
    )  # fmt: skip


def measure(name: str, url: str, days: int = 365) -> QueryResult:
    store = _open(url)
    try:
        began = time.perf_counter()
        readings = 0
        for batch in batches(days):
            store.write_batch(batch)
            readings += len(batch)
        write_s = time.perf_counter() - began
        start = YEAR_START_MS + 7 * 60_000
        end = YEAR_START_MS + days * DAY_MS - 13 * 60_000
        kpis_raw_s, _, raw_kpis = _timed(lambda: _kpis(store, start, end, raw=True), 1)
        kpis_s, kpis_cpu_s, kpis = _timed(lambda: _kpis(store, start, end, raw=False), REPEATS)
        totals_raw_s, _, raw_totals = _timed(lambda: _totals(store, start, end, raw=True), 1)
        totals_s, totals_cpu_s, totals = _timed(
            lambda: _totals(store, start, end, raw=False), REPEATS
        )
        _agree(kpis, raw_kpis, "KPIs")
        _agree(totals, raw_totals, "totals")
    finally:
        store.close()
    return QueryResult(
        name, readings, write_s, kpis_s, kpis_raw_s, totals_s, totals_raw_s, kpis_cpu_s,
        totals_cpu_s,
    )  # fmt: skip


def _open(url: str) -> Store:
    """The store, with room for the raw scan: a year of one plant's points crosses HTTP
    in one answer, which outlasts the default 10 s timeout on a loaded machine."""
    if not url.startswith("influxdb://"):
        return open_store(url)
    host_port, database = url.removeprefix("influxdb://").split("/", 1)
    return InfluxDBV1Store(f"http://{host_port}", database, timeout_s=RAW_SCAN_TIMEOUT_S)


def _kpis(store: Store, start: int, end: int, *, raw: bool) -> pd.DataFrame:
    plant = PLANTS[0]
    emissions = emission_points(
        store, plant, start_ms=start, end_ms=end, factor_set=FACTOR_SET[0],
        factor_version=FACTOR_SET[1], raw=raw,
    )  # fmt: skip
    activity = activity_points(store, plant, start_ms=start, end_ms=end, raw=raw)
    return pd.DataFrame([plant_kpis(plant_config(plant), emissions, activity).as_record()])


def _totals(store: Store, start: int, end: int, *, raw: bool) -> pd.DataFrame:
    emissions = pd.concat(
        [
            emission_points(
                store,
                plant,
                start_ms=start,
                end_ms=end,
                factor_set=FACTOR_SET[0],
                factor_version=FACTOR_SET[1],
                raw=raw,
            )
            for plant in PLANTS
        ],
        ignore_index=True,
    )
    return aggregate(emissions, "plant")


def _timed(action: Callable[[], pd.DataFrame], repeats: int) -> tuple[float, float, pd.DataFrame]:
    """Median wall and CPU seconds of ``repeats`` runs, and the last answer."""
    times, cpu, result = [], [], pd.DataFrame()
    for _ in range(repeats):
        began, began_cpu = time.perf_counter(), time.process_time()
        result = action()
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return statistics.median(times), statistics.median(cpu), result


def _agree(rolled: pd.DataFrame, scanned: pd.DataFrame, what: str) -> None:
    try:
        pd.testing.assert_frame_equal(rolled, scanned, check_exact=False, rtol=1e-9)
    except AssertionError as exc:
        raise AssertionError(f"{what} from rollups differ from the raw scan: {exc}") from exc


def measure_both(
    scratch: Path, influx_url: str, days: int = 365, say: Callable[[str], None] = print
) -> list[QueryResult]:
    results = []
    for name, url in (("sqlite", f"sqlite:///{scratch / 'queries.sqlite'}"),
                      ("influxdb", influx_url)):  # fmt: skip
        results.append(measure(name, url, days))
        for line in table(results[-1:]):
            say(line)
    return results


def main() -> None:
    """``python -m benchmarks.queries [DAYS]``: this benchmark alone, on private servers."""
    import sys
    import tempfile

    from tests.servers import InfluxDBServer

    days = int(sys.argv[1]) if len(sys.argv) > 1 else 365
    with (
        tempfile.TemporaryDirectory(prefix="carbonlink-queries-") as scratch,
        InfluxDBServer(Path(scratch) / "influxdb") as influxdb,
    ):
        influxdb.create_database("queries")
        measure_both(Path(scratch), influxdb.store_url("queries"), days)


def table(results: list[QueryResult]) -> list[str]:
    lines = []
    for r in results:
        lines += [
            f"{r.store}: {r.readings:,} readings written in {r.write_s:.1f} s "
            f"({r.readings / r.write_s:,.0f}/s, rollups included)",
            f"  KPIs, one plant, the year    {r.kpis_s:8.3f} s via rollups "
            f"({r.kpis_cpu_s:.3f} s CPU) {r.kpis_raw_s:8.2f} s raw scan "
            f"({r.kpis_raw_s / r.kpis_s:,.0f}x)",
            f"  totals, five plants, the year {r.totals_s:7.3f} s via rollups "
            f"({r.totals_cpu_s:.3f} s CPU) {r.totals_raw_s:8.2f} s raw scan "
            f"({r.totals_raw_s / r.totals_s:,.0f}x)",
            f"  target < {TARGET_S:.0f} s each: {'MET' if r.met else 'MISSED'}",
        ]
    return lines


if __name__ == "__main__":
    main()
