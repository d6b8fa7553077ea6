"""SQLite backend: the embedded default, one file, no server."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from carbonlink.core.clock import wall_clock_ms
from carbonlink.errors import StoreError
from carbonlink.storage import _rollup_sql as rollup
from carbonlink.storage._base import (
    ACTIVITY_COLUMNS,
    ACTIVITY_FIELDS,
    EMISSION_COLUMNS,
    UNCERTAINTY_FIELDS,
    ClosedOnExit,
    FactorVersions,
    StoredBatch,
    StoredReading,
    check_field,
    empty_series,
    totals_frame,
    typed_frame,
)
from carbonlink.storage._buckets import hours_touched

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
    u95_factor_lower_kg REAL, u95_factor_upper_kg REAL, u95_meter_kg REAL,
    PRIMARY KEY (plant, meter, ts_ms, factor_set, factor_version, gwp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS emissions_by_time ON emissions (ts_ms);
CREATE TABLE IF NOT EXISTS factor_assignment (
    plant TEXT NOT NULL PRIMARY KEY, factor_set TEXT NOT NULL, factor_version TEXT NOT NULL,
    assigned_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry_sequences (
    agent TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (agent, seq)
) WITHOUT ROWID;
"""
# Runs of consecutive sequence numbers per agent, kept as numbers are recorded: counting
# the gaps reads one row per run (a handful per agent) instead of every number ever
# recorded, which took 16 s at a million numbers.
_RUNS_SCHEMA = """
CREATE TABLE sequence_runs (
    agent TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (agent, first)
) WITHOUT ROWID;
CREATE UNIQUE INDEX sequence_runs_last ON sequence_runs (agent, last);
INSERT INTO sequence_runs
    SELECT agent, MIN(seq), MAX(seq) FROM (
        SELECT agent, seq, seq - ROW_NUMBER() OVER (PARTITION BY agent ORDER BY seq) AS run
        FROM telemetry_sequences
    ) GROUP BY agent, run;
"""
_EMISSION_INSERT = (
    "INSERT OR REPLACE INTO emissions (plant, meter, ts_ms, factor_set, factor_version, gwp, "
    "activity, source, scope, category, converted_amount, converted_unit, co2_kg, ch4_kg, "
    f"n2o_kg, co2e_kg, biogenic_co2_kg, {', '.join(UNCERTAINTY_FIELDS)}) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


class SqliteStore(ClosedOnExit):
    """``read_only``: open an existing store without changing anything, the file or its
    folder included; a missing file or one without carbonlink's tables is a StoreError."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        # One connection shared under a lock: the platform writes from one thread while
        # the API and demo read from others.
        self._lock = threading.Lock()
        if read_only:
            self._db = _open_read_only(self.path)
        else:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            _add_missing_columns(self._db)
            _add_rollups(self._db)
            _add_sequence_runs(self._db)
        # A read-only store written by an older carbonlink may lack columns: read NULLs.
        present = {row[1] for row in self._db.execute("PRAGMA table_info(emissions)")}
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        self._has_rollups = set(rollup.ROLLUP_TABLES) <= tables
        self._emission_select = ", ".join(
            "ts_ms AS time" if c == "time" else (c if c in present else f"NULL AS {c}")
            for c in EMISSION_COLUMNS
        )

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
                e.source, e.scope, e.category, numbers[0], e.converted_unit, *numbers[1:],
            )
            for plant, meter, ts_ms, e, numbers in zip(
                b.plant, b.meter, b.ts_ms, b.tags, b.numbers.tolist(), strict=True
            )
            if e is not None
        ]  # fmt: skip
        touched = hours_touched(b.plant, b.ts_ms)
        with self._writing() as db:
            db.executemany("INSERT OR REPLACE INTO activity VALUES (?,?,?,?,?,?,?)", activity_rows)
            db.executemany(_EMISSION_INSERT, emission_rows)
            rollup.reroll(db, touched)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock, rolled back on any error."""
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    yield self._db
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
        sql, params = f"SELECT {self._emission_select} FROM emissions WHERE 1 = 1", list[object]()
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

    def rollups(
        self,
        kind: str,
        step_ms: int,
        plant: str | None,
        first_ms: int,
        end_ms: int | None,
        *,
        factor_set: str | None = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame | None:
        """Rollup rows of buckets of ``step_ms`` starting in [first_ms, end_ms), or None
        for a read-only store written before rollups existed (read raw points instead)."""
        if not self._has_rollups:
            return None
        sql, params = rollup.select(
            kind, step_ms, plant, first_ms, end_ms, factor_set, factor_version
        )
        return self._frame(sql, params)

    def _frame(self, sql: str, params: list[object]) -> pd.DataFrame:
        with self._lock:
            cursor = self._db.execute(sql, params)
            rows = cursor.fetchall()
        return pd.DataFrame(rows, columns=[d[0] for d in cursor.description])

    def totals(
        self,
        versions: FactorVersions,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        readings_sql, params = _filtered(
            "SELECT plant, count(*) FROM activity WHERE 1 = 1", [], None, start_ms, end_ms
        )
        co2e: dict[str, float] = {}
        with self._lock:
            readings = dict(self._db.execute(readings_sql + " GROUP BY plant", params).fetchall())
            for plant, (factor_set, factor_version) in versions.items():
                sql, plant_params = _filtered(
                    "SELECT sum(co2e_kg) FROM emissions WHERE plant = ?",
                    [plant],
                    None,
                    start_ms,
                    end_ms,
                )
                sql, plant_params = _factor_filtered(sql, plant_params, factor_set, factor_version)
                (total,) = self._db.execute(sql, plant_params).fetchone()
                co2e[plant] = float(total or 0.0)
        return totals_frame(versions, readings, co2e)

    def assign_factors(self, versions: FactorVersions) -> None:
        now = wall_clock_ms()
        rows = [(p, fs, fv, now) for p, (fs, fv) in versions.items()]
        with self._writing() as db:
            db.executemany("INSERT OR REPLACE INTO factor_assignment VALUES (?,?,?,?)", rows)

    def assigned_factors(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT plant, factor_set, factor_version FROM factor_assignment"
                ).fetchall()
            except sqlite3.OperationalError:  # a read-only store from before the table
                return {}
        return {str(p): (str(fs), str(fv)) for p, fs, fv in rows}

    def record_sequences(self, rows: Sequence[tuple[str, int]]) -> None:
        with self._writing() as db:
            for agent, seq in rows:
                added = db.execute(
                    "INSERT OR IGNORE INTO telemetry_sequences VALUES (?,?)", (agent, seq)
                ).rowcount
                if added:
                    _join_run(db, agent, seq)

    def sequence_gaps(self, max_gap: int) -> dict[str, int]:
        # Gaps counted in SQL: the step from each recorded number to the one before it.
        query = """
            SELECT agent, SUM(CASE WHEN step > 1 AND step <= ? + 1 THEN step - 1 ELSE 0 END)
            FROM (SELECT agent, first - LAG(last) OVER (PARTITION BY agent ORDER BY first)
                  AS step FROM sequence_runs)
            GROUP BY agent"""
        with self._lock:
            try:
                rows = self._db.execute(query, (max_gap,)).fetchall()
            except sqlite3.OperationalError:  # a read-only store from before the table
                return {}
        return {str(agent): int(gaps or 0) for agent, gaps in rows}

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


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing store: nothing is created, not even the
    file's folder. Missing or foreign files are a StoreError naming the path."""
    if not path.is_file():
        raise StoreError(f"no store at {path} (sqlite file not found)", retryable=False)
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        tables = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a carbonlink store: {exc}", retryable=False) from exc
    if not {"activity", "emissions"} <= tables:
        db.close()
        raise StoreError(
            f"{path} is not a carbonlink store (no activity and emissions tables)",
            retryable=False,
        )
    return db


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Stores written before the uncertainty fields existed get them, empty (NULL: not
    known for those points; a recompute fills them)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(emissions)")}
    for column in UNCERTAINTY_FIELDS:
        if column not in present:
            db.execute(f"ALTER TABLE emissions ADD COLUMN {column} REAL")


def _add_rollups(db: sqlite3.Connection) -> None:
    """Rollup tables, built from the raw rows when a store from before them has data."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.executescript(rollup.SCHEMA)
    if set(rollup.ROLLUP_TABLES) <= tables:
        return
    db.execute("BEGIN")
    try:
        rollup.rebuild(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


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


def _add_sequence_runs(db: sqlite3.Connection) -> None:
    """The runs table, built once from the numbers a store from before it recorded."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    if "sequence_runs" not in tables:
        db.executescript(f"BEGIN;{_RUNS_SCHEMA}COMMIT;")


def _join_run(db: sqlite3.Connection, agent: str, seq: int) -> None:
    """Record ``seq`` (new for ``agent``) in its run: extend the run ending just below
    it and/or the one starting just above it, merging them when it fills the gap."""
    below = db.execute(
        "SELECT first FROM sequence_runs WHERE agent = ? AND last = ?", (agent, seq - 1)
    ).fetchone()
    above = db.execute(
        "SELECT last FROM sequence_runs WHERE agent = ? AND first = ?", (agent, seq + 1)
    ).fetchone()
    if above is not None:
        db.execute("DELETE FROM sequence_runs WHERE agent = ? AND first = ?", (agent, seq + 1))
    last = seq if above is None else int(above[0])
    if below is not None:
        db.execute(
            "UPDATE sequence_runs SET last = ? WHERE agent = ? AND first = ?",
            (last, agent, int(below[0])),
        )
    else:
        db.execute("INSERT INTO sequence_runs VALUES (?,?,?)", (agent, seq, last))
