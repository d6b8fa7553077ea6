"""One contract for every storage backend: SQLite and InfluxDB 1.x (a real server).

The InfluxDB 2.x variant runs against a server you name in ``$INFLUXDB_V2_URL`` (with
``$INFLUXDB_V2_TOKEN`` and ``$INFLUXDB_V2_ORG``); each test gets a bucket of its own.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from carbonlink.errors import ConfigError, StoreError
from carbonlink.storage import (
    ACTIVITY_COLUMNS,
    EMISSION_COLUMNS,
    INFLUXDB_TOKEN_ENV,
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


V2_URL_ENV = "INFLUXDB_V2_URL"
V2_TOKEN_ENV = "INFLUXDB_V2_TOKEN"
V2_ORG_ENV = "INFLUXDB_V2_ORG"


@pytest.fixture
def influxdb_v2_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A store on a fresh bucket of the InfluxDB 2.x server named by $INFLUXDB_V2_URL."""
    url = os.environ.get(V2_URL_ENV)
    if not url:
        pytest.skip(f"set ${V2_URL_ENV} (+ ${V2_TOKEN_ENV}, ${V2_ORG_ENV}) to test InfluxDB 2.x")
    from influxdb_client.client.influxdb_client import InfluxDBClient

    token, org = os.environ.get(V2_TOKEN_ENV, ""), os.environ.get(V2_ORG_ENV, "")
    bucket_name = f"carbonlink-test-{uuid.uuid4().hex[:10]}"
    with InfluxDBClient(url=url, token=token, org=org) as client:
        buckets = client.buckets_api()
        bucket = buckets.create_bucket(bucket_name=bucket_name, org=org)
        monkeypatch.setenv(INFLUXDB_TOKEN_ENV, token)
        host_port = url.split("://", 1)[1].rstrip("/")
        scheme = "influxdb2+https" if url.startswith("https") else "influxdb2"
        backend = open_store(f"{scheme}://{host_port}/{bucket_name}?org={org}")
        yield backend
        backend.close()
        buckets.delete_bucket(bucket)


@pytest.fixture(params=["sqlite", "influxdb_v1", "influxdb_v2"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "influxdb_v2":
        yield request.getfixturevalue("influxdb_v2_store")
        return
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
        u95_factor_lower_kg=co2e * 0.03, u95_factor_upper_kg=co2e * 0.04,
        u95_meter_kg=co2e * 0.01,
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
    totals = store.totals({"p1": ("test-set", "1")})
    assert totals.to_dict("records") == [
        {
            "plant": "p1",
            "readings": 2,
            "factor_set": "test-set",
            "factor_version": "1",
            "co2e_kg": 9.5,
        }
    ]


VERSIONS = {"p1": ("test-set", "1"), "p2": ("test-set", "1")}


def test_totals_per_plant_and_range(store: Store) -> None:
    store.write([reading(p, "gas", k, 1.0, 10.0 * (k + 1)) for p in ("p1", "p2") for k in range(3)])
    totals = store.totals(VERSIONS, start_ms=T0 + MINUTE)
    assert totals["plant"].tolist() == ["p1", "p2"]
    assert totals["readings"].tolist() == [2, 2]
    assert totals["co2e_kg"].tolist() == [50.0, 50.0]
    assert store.count_readings() == 6


def test_totals_count_each_reading_once_under_the_version_asked(store: Store) -> None:
    # A recompute stores a second version beside the first: totals take one of them.
    originals = [reading("p1", "gas", k, 1.0, 10.0) for k in range(3)]
    store.write(originals)
    store.write([versioned(r, "2", 1.5) for r in originals])
    assert store.totals({"p1": ("test-set", "1")})["co2e_kg"].tolist() == [30.0]
    assert store.totals({"p1": ("test-set", "2")})["co2e_kg"].tolist() == [45.0]
    assert store.totals({"p1": ("other-set", "1")})["co2e_kg"].tolist() == [0.0]
    assert store.totals({"p1": ("test-set", "2")})["readings"].tolist() == [3]


def test_the_factor_assignment_is_one_per_plant_and_replaceable(store: Store) -> None:
    assert store.assigned_factors() == {}
    store.assign_factors({"p1": ("set-a", "1.0.0"), "p2": ("set-b", "2.0.0")})
    store.assign_factors({"p1": ("set-c", "3.0.0")})
    assert store.assigned_factors() == {"p1": ("set-c", "3.0.0"), "p2": ("set-b", "2.0.0")}


def test_uncertainty_fields_read_back(store: Store) -> None:
    store.write([reading("p1", "gas", 0, 1.0, 100.0)])
    row = store.emissions("p1").iloc[0]
    assert (row["u95_factor_lower_kg"], row["u95_factor_upper_kg"], row["u95_meter_kg"]) == (
        pytest.approx(3.0),
        pytest.approx(4.0),
        pytest.approx(1.0),
    )


def test_time_range_spans_the_stored_readings(store: Store) -> None:
    assert store.time_range() is None
    store.write([reading("p1", "gas", m, 1.0, 2.0) for m in (5, 1, 9)])
    store.write([reading("p2", "gas", 12, 1.0, 2.0)])
    assert store.time_range() == (T0 + MINUTE, T0 + 12 * MINUTE)
    assert store.time_range("p1") == (T0 + MINUTE, T0 + 9 * MINUTE)
    assert store.time_range("nobody") is None


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
        "influxdb2://h:8086/bucket",
        "influxdb2://h:8086/?org=o",
        "influxdb2://tok@h:8086/bucket?org=o",
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


# --- queries behind windows, KPIs and recompute -------------------------------------


def versioned(r: StoredReading, version: str, factor: float) -> StoredReading:
    """The same reading with its emissions under another factor set version."""
    assert r.emission is not None
    e = r.emission
    scaled = dataclasses.replace(
        e, factor_version=version, co2_kg=e.co2_kg * factor, co2e_kg=e.co2e_kg * factor
    )
    return dataclasses.replace(r, emission=scaled)


def test_emissions_come_back_with_their_tags(store: Store) -> None:
    store.write([reading("p1", "gas", 1, 5.0, 9.5), reading("p1", "gas", 0, 4.0, 7.5)])
    store.write([reading("p2", "gas", 0, 1.0, 1.0), reading("p1", "out", 0, 3.0, None)])
    frame = store.emissions("p1")
    assert list(frame.columns) == list(EMISSION_COLUMNS)
    assert frame.dtypes.astype(str).tolist() == [
        str(pd.Series(dtype=d).dtype) for d in EMISSION_COLUMNS.values()
    ]
    assert frame["co2e_kg"].tolist() == [7.5, 9.5]
    row = frame.iloc[0]
    assert (row["plant"], row["meter"], row["activity"], row["source"]) == (
        "p1", "gas", "natural_gas", "fuel",
    )  # fmt: skip
    assert (row["scope"], row["factor_set"], row["factor_version"], row["gwp"]) == (
        1, "test-set", "1", "AR5",
    )  # fmt: skip
    assert row["converted_amount"] == pytest.approx(7.5 / 56_100)
    assert row["converted_unit"] == "TJ"
    assert row["time"] == pd.Timestamp(T0, unit="ms", tz="UTC")
    assert len(store.emissions()) == 3  # every plant


def test_emissions_filter_by_range_and_factor_version(store: Store) -> None:
    originals = [reading("p1", "gas", k, 1.0, 10.0) for k in range(3)]
    store.write(originals)
    store.write([versioned(r, "2", 1.5) for r in originals])
    assert store.count_readings("p1") == 3  # a new version adds emissions, not readings
    assert store.emissions("p1")["co2e_kg"].sum() == pytest.approx(75.0)
    v2 = store.emissions("p1", factor_set="test-set", factor_version="2", start_ms=T0 + MINUTE)
    assert v2["co2e_kg"].tolist() == [15.0, 15.0]
    assert store.emissions("p1", factor_version="1", end_ms=T0 + MINUTE)["co2e_kg"].tolist() == [
        10.0
    ]
    assert store.emissions("p1", factor_set="other").empty
    assert store.series("p1", factor_version="2")["value"].tolist() == [15.0, 15.0, 15.0]
    # Activity fields have no factor version: the filter does not apply to them.
    assert store.series("p1", field="value", factor_version="2")["value"].tolist() == [1.0] * 3


def test_activity_comes_back_with_unit_duration_and_quality(store: Store) -> None:
    store.write([reading("p1", "out", 1, 208.0, None), reading("p1", "gas", 0, 5.0, 9.5)])
    frame = store.activity("p1")
    assert list(frame.columns) == list(ACTIVITY_COLUMNS)
    assert frame[["meter", "value", "unit", "duration_s", "quality"]].to_dict("records") == [
        {"meter": "gas", "value": 5.0, "unit": "Nm3", "duration_s": 60.0, "quality": "measured"},
        {"meter": "out", "value": 208.0, "unit": "Nm3", "duration_s": 60.0, "quality": "measured"},
    ]
    assert store.activity("p1", meter="out", start_ms=T0 + MINUTE)["value"].tolist() == [208.0]
    assert store.activity("p1", end_ms=T0 + MINUTE)["meter"].tolist() == ["gas"]


def test_empty_queries_give_typed_frames(store: Store) -> None:
    assert list(store.emissions("nobody").columns) == list(EMISSION_COLUMNS)
    assert list(store.activity("nobody").columns) == list(ACTIVITY_COLUMNS)
    assert str(store.emissions("nobody")["time"].dtype) == "datetime64[ms, UTC]"


# --- read-only opening: commands that only read never create a store ---------------


def test_read_only_sqlite_needs_the_file_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "x.sqlite"
    with pytest.raises(StoreError, match="no store at") as caught:
        open_store(f"sqlite:///{missing}", read_only=True)
    assert not caught.value.retryable
    assert not missing.parent.exists()
    foreign = tmp_path / "foreign.sqlite"
    foreign.write_bytes(b"not a database at all, just text" * 10)
    with pytest.raises(StoreError, match="not a carbonlink store"):
        open_store(f"sqlite:///{foreign}", read_only=True)


def test_read_only_sqlite_reads_what_a_writer_wrote(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    writer = SqliteStore(path)
    writer.write([reading("p1", "gas", 0, 1.0, 3.0)])
    reader = open_store(f"sqlite:///{path}", read_only=True)
    assert reader.emissions("p1")["co2e_kg"].tolist() == [3.0]
    with pytest.raises(StoreError):
        reader.write([reading("p1", "gas", 1, 1.0, 3.0)])
    reader.close()
    writer.close()


def test_read_only_sqlite_reads_a_store_from_before_the_uncertainty_fields(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.execute(
        "INSERT INTO emissions VALUES ('p1','gas',?,'s','1','AR5','natural_gas','fuel',1,"
        "'1.A.2',0.001,'TJ',56.1,0.001,0.0001,56.2,0.0)",
        (T0,),
    )
    old.commit()
    old.close()
    reader = open_store(f"sqlite:///{path}", read_only=True)
    frame = reader.emissions("p1")
    assert frame["co2e_kg"].tolist() == [56.2]
    assert frame["u95_meter_kg"].isna().all()  # not known for points written then
    reader.close()
    upgraded = SqliteStore(path)  # a writer adds the columns, empty
    assert upgraded.emissions("p1")["u95_factor_lower_kg"].isna().all()
    upgraded.close()


# The emissions table as carbonlink wrote it before the uncertainty fields.
OLD_SCHEMA = """
CREATE TABLE activity (
    plant TEXT NOT NULL, meter TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    value REAL NOT NULL, unit TEXT NOT NULL, duration_s REAL NOT NULL, quality TEXT NOT NULL,
    PRIMARY KEY (plant, meter, ts_ms)
) WITHOUT ROWID;
CREATE TABLE emissions (
    plant TEXT NOT NULL, meter TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    factor_set TEXT NOT NULL, factor_version TEXT NOT NULL, gwp TEXT NOT NULL,
    activity TEXT NOT NULL, source TEXT NOT NULL, scope INTEGER NOT NULL, category TEXT NOT NULL,
    converted_amount REAL NOT NULL, converted_unit TEXT NOT NULL,
    co2_kg REAL NOT NULL, ch4_kg REAL NOT NULL, n2o_kg REAL NOT NULL, co2e_kg REAL NOT NULL,
    biogenic_co2_kg REAL NOT NULL,
    PRIMARY KEY (plant, meter, ts_ms, factor_set, factor_version, gwp)
) WITHOUT ROWID;
"""


def test_read_only_influxdb_does_not_create_the_database(influxdb: InfluxDBServer) -> None:
    name = f"absent_{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreError, match=f"no database '{name}'"):
        open_store(influxdb.store_url(name), read_only=True)
    shown = influxdb.query("_internal", "SHOW DATABASES")
    names = {row[0] for s in shown["results"][0].get("series", []) for row in s.get("values", [])}
    assert name not in names


def test_sequence_gaps_count_missing_batch_numbers_per_agent(store: Store) -> None:
    store.record_sequences([("agent-a", 1), ("agent-a", 2), ("agent-a", 5), ("agent-b", 10)])
    # A repeat (a redelivery, or another worker) is recorded once; a jump beyond the
    # limit is a new outbox, not lost batches.
    store.record_sequences([("agent-a", 5), ("agent-a", 6), ("agent-b", 10 + 1_000)])
    assert store.sequence_gaps(max_gap=100) == {"agent-a": 2, "agent-b": 0}
