"""One contract for every storage backend: SQLite and InfluxDB 1.x (a real server)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from carbonlink._exceptions import ConfigError, StoreError
from carbonlink.platform.storage import (
    Emission,
    InfluxDBV1Store,
    SqliteStore,
    Store,
    StoredReading,
    open_store,
)
from tests.servers import InfluxDBServer

T0 = 1_795_420_800_000
MINUTE = 60_000


@pytest.fixture(params=["sqlite", "influxdb_v1"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        backend: Store = open_store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    else:
        server: InfluxDBServer = request.getfixturevalue("influxdb")
        database: str = request.getfixturevalue("influx_database")
        backend = open_store(server.store_url(database))
    yield backend
    backend.close()


def emission(co2e: float, version: str = "1") -> Emission:
    return Emission(
        activity="natural_gas", source="fuel", scope=1, category="1.A.2",
        factor_set="test-set", factor_version=version, gwp="AR5",
        converted_amount=co2e / 56_100, converted_unit="TJ",
        co2_kg=co2e * 0.99, ch4_kg=0.001, n2o_kg=0.0001, co2e_kg=co2e, biogenic_co2_kg=0.0,
    )  # fmt: skip


def reading(plant: str, meter: str, minute: int, value: float, co2e: float | None) -> StoredReading:
    return StoredReading(
        plant, meter, T0 + minute * MINUTE, value, "Nm3", MINUTE, "measured",
        emission(co2e) if co2e is not None else None,
    )  # fmt: skip


def test_written_series_reads_back_in_time_order(store: Store) -> None:
    store.write([reading("p1", "gas", m, 10.0 + m, 20.0 + m) for m in (2, 0, 1)])
    frame = store.series("p1", field="co2e_kg")
    assert list(frame.columns) == ["time", "plant", "meter", "value"]
    assert frame["value"].tolist() == [20.0, 21.0, 22.0]
    assert frame["time"].tolist() == [
        pd.Timestamp(T0 + m * MINUTE, unit="ms", tz="UTC") for m in range(3)
    ]
    assert set(frame["plant"]) == {"p1"}
    assert store.series("p1", field="value")["value"].tolist() == [10.0, 11.0, 12.0]


def test_rewriting_a_reading_overwrites_it(store: Store) -> None:
    store.write([reading("p1", "gas", 0, 10.0, 20.0), reading("p1", "gas", 1, 11.0, 21.0)])
    store.write([reading("p1", "gas", 0, 10.0, 20.0)])
    assert store.count_readings("p1") == 2
    assert store.series("p1")["value"].tolist() == [20.0, 21.0]


def test_filters_by_meter_and_half_open_time_range(store: Store) -> None:
    store.write([reading("p1", m, k, 1.0, float(k)) for m in ("a", "b") for k in range(4)])
    frame = store.series("p1", meter="b", start_ms=T0 + MINUTE, end_ms=T0 + 3 * MINUTE)
    assert frame["meter"].tolist() == ["b", "b"]
    assert frame["value"].tolist() == [1.0, 2.0]


def test_output_only_readings_have_activity_but_no_emissions(store: Store) -> None:
    store.write([reading("p1", "output", 0, 208.0, None), reading("p1", "gas", 0, 5.0, 9.5)])
    assert store.series("p1", field="value", meter="output")["value"].tolist() == [208.0]
    assert store.series("p1", field="co2e_kg", meter="output").empty
    totals = store.totals()
    assert totals.to_dict("records") == [{"plant": "p1", "readings": 2, "co2e_kg": 9.5}]


def test_totals_per_plant_and_range(store: Store) -> None:
    store.write([reading(p, "gas", k, 1.0, 10.0 * (k + 1)) for p in ("p1", "p2") for k in range(3)])
    totals = store.totals(start_ms=T0 + MINUTE)
    assert totals["plant"].tolist() == ["p1", "p2"]
    assert totals["readings"].tolist() == [2, 2]
    assert totals["co2e_kg"].tolist() == [50.0, 50.0]
    assert store.count_readings() == 6


def test_unknown_plant_gives_empty_typed_frame(store: Store) -> None:
    frame = store.series("nobody")
    assert frame.empty
    assert list(frame.columns) == ["time", "plant", "meter", "value"]


def test_unknown_field_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown field"):
        store.series("p1", field="co2e_kg; DROP")


def test_tag_values_with_spaces_commas_and_quotes_survive(store: Store) -> None:
    odd = "line 1, 'east'=x"
    store.write([reading(odd, "gas", 0, 1.0, 2.5)])
    assert store.series(odd)["value"].tolist() == [2.5]


def test_float_precision_is_kept(store: Store) -> None:
    value = 0.1 + 0.2
    store.write([reading("p1", "gas", 0, value, math.pi)])
    assert store.series("p1", field="value")["value"].tolist() == [value]
    assert store.series("p1")["value"].tolist() == [math.pi]


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://relative",
        "influxdb://host/db",
        "influxdb://host:8086/",
        "influxdb://u:pw@h:1/db",
        "redis://x",
    ],
)
def test_bad_store_urls_fail_clearly(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    assert caught.value.key == "store"


def test_influxdb_down_is_a_retryable_store_error(influxdb_private: InfluxDBServer) -> None:
    store = InfluxDBV1Store(influxdb_private.url, "down_test")
    influxdb_private.stop()
    with pytest.raises(StoreError) as caught:
        store.write([reading("p1", "gas", 0, 1.0, 1.0)])
    assert caught.value.retryable
    influxdb_private.start()
    store.write([reading("p1", "gas", 0, 1.0, 1.0)])
    assert store.count_readings() == 1
    store.close()


def test_sqlite_store_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    first = SqliteStore(path)
    first.write([reading("p1", "gas", 0, 1.0, 3.0)])
    first.close()
    second = SqliteStore(path)
    assert second.series("p1")["value"].tolist() == [3.0]
    second.close()
