"""SQLite backend: the embedded default, one file, no server."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from carbonlink._exceptions import StoreError
from carbonlink.platform.storage._base import (
    ACTIVITY_COLUMNS,
    ACTIVITY_FIELDS,
    EMISSION_COLUMNS,
    StoredBatch,
    StoredReading,
    check_field,
    empty_series,
    typed_frame,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS activity (
    plant TEXT NOT NULL, meter TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    value REAL NOT NULL, unit TEXT NOT NULL, duration_s REAL NOT NULL, quality TEXT NOT NULL,
    PRIMARY KEY (plant, meter, ts_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS emissions (
    plant TEXT NOT NULL, meter TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    factor_set TEXT NOT NULL, factor_version TEXT NOT NULL, gwp TEXT NOT NULL,
    activity TEXT NOT NULL, source TEXT NOT NULL, scope INTEGER NOT NULL, category TEXT NOT NULL,
    converted_amount REAL NOT NULL, converted_unit TEXT NOT NULL,
    co2_kg REAL NOT NULL, ch4_kg REAL NOT NULL, n2o_kg REAL NOT NULL, co2e_kg REAL NOT NULL,
    biogenic_co2_kg REAL NOT NULL,
    PRIMARY KEY (plant, meter, ts_ms, factor_set, factor_version, gwp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS emissions_by_time ON emissions (ts_ms);
"""


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared under a lock: the platform writes from one thread while
        # the API and demo read from others.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def write(self, readings: Sequence[StoredReading]) -> None:
        self.write_batch(StoredBatch.from_readings(readings))

    def write_batch(self, batch: StoredBatch) -> None:
        b = batch
        activity_rows = list(
            zip(
                b.plant, b.meter, b.ts_ms, b.value, b.unit,
                [d / 1000 for d in b.duration_ms], b.quality, strict=True,
            )
        )  # fmt: skip
        emission_rows = [
            (
                plant, meter, ts_ms, e.factor_set, e.factor_version, e.gwp, e.activity,
                e.source, e.scope, e.category, amount, e.converted_unit,
                co2, ch4, n2o, co2e, biogenic,
            )
            for plant, meter, ts_ms, e, (amount, co2, ch4, n2o, co2e, biogenic) in zip(
                b.plant, b.meter, b.ts_ms, b.tags, b.numbers.tolist(), strict=True
            )
            if e is not None
        ]  # fmt: skip
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO activity VALUES (?,?,?,?,?,?,?)", activity_rows
                    )
                    self._db.executemany(
                        "INSERT OR REPLACE INTO emissions VALUES "
                        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        emission_rows,
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # a failed COMMIT has rolled back already
                        self._db.execute("ROLLBACK")
                    raise
        except sqlite3.OperationalError as exc:
            # "database is locked" and disk-full are transient from our point of view.
            raise StoreError(f"sqlite write failed: {exc}", retryable=True) from exc

    def series(
        self,
        plant: str,
        *,
        field: str = "co2e_kg",
        meter: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        factor_set: str | None = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame:
        table = "activity" if check_field(field) in ACTIVITY_FIELDS else "emissions"
        sql = f"SELECT ts_ms, plant, meter, {field} FROM {table} WHERE plant = ?"
        params: list[object] = [plant]
        sql, params = _filtered(sql, params, meter, start_ms, end_ms)
        if table == "emissions":
            sql, params = _factor_filtered(sql, params, factor_set, factor_version)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY ts_ms, meter", params).fetchall()
        if not rows:
            return empty_series()
        frame = pd.DataFrame(rows, columns=["ts_ms", "plant", "meter", "value"])
        frame.insert(0, "time", pd.to_datetime(frame.pop("ts_ms"), unit="ms", utc=True))
        return frame

    def emissions(
        self,
        plant: str | None = None,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        factor_set: str | None = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame:
        columns = ", ".join("ts_ms AS time" if c == "time" else c for c in EMISSION_COLUMNS)
        sql, params = f"SELECT {columns} FROM emissions WHERE 1 = 1", list[object]()
        if plant is not None:
            sql, params = sql + " AND plant = ?", [plant]
        sql, params = _filtered(sql, params, None, start_ms, end_ms)
        sql, params = _factor_filtered(sql, params, factor_set, factor_version)
        return typed_frame(EMISSION_COLUMNS, self._frame(sql, params))

    def activity(
        self,
        plant: str,
        *,
        meter: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        columns = ", ".join("ts_ms AS time" if c == "time" else c for c in ACTIVITY_COLUMNS)
        sql, params = _filtered(
            f"SELECT {columns} FROM activity WHERE plant = ?", [plant], meter, start_ms, end_ms
        )
        return typed_frame(ACTIVITY_COLUMNS, self._frame(sql, params))

    def _frame(self, sql: str, params: list[object]) -> pd.DataFrame:
        with self._lock:
            cursor = self._db.execute(sql, params)
            rows = cursor.fetchall()
        return pd.DataFrame(rows, columns=[d[0] for d in cursor.description])

    def totals(self, *, start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
        readings_sql, params = _filtered(
            "SELECT plant, count(*) FROM activity WHERE 1 = 1", [], None, start_ms, end_ms
        )
        co2e_sql, _ = _filtered(
            "SELECT plant, sum(co2e_kg) FROM emissions WHERE 1 = 1", [], None, start_ms, end_ms
        )
        with self._lock:
            readings = dict(self._db.execute(readings_sql + " GROUP BY plant", params).fetchall())
            co2e = dict(self._db.execute(co2e_sql + " GROUP BY plant", params).fetchall())
        plants = sorted(readings)
        return pd.DataFrame(
            {
                "plant": plants,
                "readings": [int(readings[p]) for p in plants],
                "co2e_kg": [float(co2e.get(p, 0.0)) for p in plants],
            }
        )

    def count_readings(self, plant: str | None = None) -> int:
        sql, params = "SELECT count(*) FROM activity", []
        if plant is not None:
            sql, params = sql + " WHERE plant = ?", [plant]
        with self._lock:
            (count,) = self._db.execute(sql, params).fetchone()
        return int(count)

    def time_range(self, plant: str | None = None) -> tuple[int, int] | None:
        sql, params = "SELECT min(ts_ms), max(ts_ms) FROM activity", []
        if plant is not None:
            sql, params = sql + " WHERE plant = ?", [plant]
        with self._lock:
            first, last = self._db.execute(sql, params).fetchone()
        return None if first is None else (int(first), int(last))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _factor_filtered(
    sql: str, params: list[object], factor_set: str | None, factor_version: str | None
) -> tuple[str, list[object]]:
    if factor_set is not None:
        sql += " AND factor_set = ?"
        params.append(factor_set)
    if factor_version is not None:
        sql += " AND factor_version = ?"
        params.append(factor_version)
    return sql, params


def _filtered(
    sql: str,
    params: list[object],
    meter: str | None,
    start_ms: int | None,
    end_ms: int | None,
) -> tuple[str, list[object]]:
    if meter is not None:
        sql += " AND meter = ?"
        params.append(meter)
    if start_ms is not None:
        sql += " AND ts_ms >= ?"
        params.append(start_ms)
    if end_ms is not None:
        sql += " AND ts_ms < ?"
        params.append(end_ms)
    return sql, params
