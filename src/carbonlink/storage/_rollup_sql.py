"""SQLite rollups: hourly and daily sums per plant, meter and factor set version, kept in
the same transaction as the raw points they sum (see ``storage.rollups`` for the reader).

Buckets as ``_buckets`` defines them. A write re-rolls each hour it touched from the raw
rows (and each such day from its hours), so a repeat, a late reading or a recompute to
a new factor version leaves the rollups equal to what a raw scan sums: no deltas to get wrong.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from carbonlink.storage._buckets import DAY_MS, HOUR_MS, days_of, runs

_SUMMED: Final = (
    "converted_amount", "co2_kg", "ch4_kg", "n2o_kg", "co2e_kg", "biogenic_co2_kg",
    "u95_factor_lower_kg", "u95_factor_upper_kg", "u95_meter_kg",
)  # fmt: skip
_EMISSION_KEYS: Final = (
    "plant", "meter", "factor_set", "factor_version", "gwp", "activity", "source", "scope",
    "category", "converted_unit",
)  # fmt: skip
_ACTIVITY_KEYS: Final = ("plant", "meter", "unit")

SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS emissions_rollup (
    step_ms INTEGER NOT NULL, bucket_ms INTEGER NOT NULL,
    plant TEXT NOT NULL, meter TEXT NOT NULL, factor_set TEXT NOT NULL,
    factor_version TEXT NOT NULL, gwp TEXT NOT NULL, activity TEXT NOT NULL,
    source TEXT NOT NULL, scope INTEGER NOT NULL, category TEXT NOT NULL,
    converted_unit TEXT NOT NULL,
    readings INTEGER NOT NULL, unknown INTEGER NOT NULL,
    {", ".join(f"{c} REAL NOT NULL" for c in _SUMMED)},
    PRIMARY KEY (plant, step_ms, bucket_ms, {", ".join(_EMISSION_KEYS[1:])})
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS activity_rollup (
    step_ms INTEGER NOT NULL, bucket_ms INTEGER NOT NULL,
    plant TEXT NOT NULL, meter TEXT NOT NULL, unit TEXT NOT NULL,
    readings INTEGER NOT NULL, value REAL NOT NULL, duration_s REAL NOT NULL,
    PRIMARY KEY (plant, step_ms, bucket_ms, meter, unit)
) WITHOUT ROWID;
-- A plant's points over a time range: the primary keys start (plant, meter, ...), so
-- without these a range read (a re-roll, a query's ragged edge) walks the plant's whole
-- history.
CREATE INDEX IF NOT EXISTS emissions_by_plant_time ON emissions (plant, ts_ms);
CREATE INDEX IF NOT EXISTS activity_by_plant_time ON activity (plant, ts_ms);
"""
ROLLUP_TABLES: Final = ("emissions_rollup", "activity_rollup")

# A point stored without its uncertainty (written before those fields existed) makes the
# interval of its bucket unknown: counted, so readers give NaN as a raw scan does.
_UNKNOWN: Final = (
    "sum(u95_factor_lower_kg IS NULL OR u95_factor_upper_kg IS NULL OR u95_meter_kg IS NULL)"
)


def reroll(db: sqlite3.Connection, touched: dict[str, set[int]]) -> None:
    """Recompute the hours in ``touched`` from raw rows, then their days from the hours.
    Runs inside the caller's transaction."""
    for plant, hours in touched.items():
        for first, end in runs(hours, HOUR_MS):
            _reroll_hours(db, plant, first, end)
        for first, end in runs(days_of(hours), DAY_MS):
            _reroll_days(db, plant, first, end)


def rebuild(db: sqlite3.Connection) -> None:
    """Every rollup from the raw rows: a store written before rollups existed."""
    plants = [row[0] for row in db.execute("SELECT DISTINCT plant FROM activity")]
    for plant in plants:
        first, last = db.execute(
            "SELECT min(ts_ms), max(ts_ms) FROM activity WHERE plant = ?", (plant,)
        ).fetchone()
        lo = (first - 1) // HOUR_MS * HOUR_MS
        hi = (last - 1) // HOUR_MS * HOUR_MS + HOUR_MS
        _reroll_hours(db, plant, lo, hi)
        _reroll_days(db, plant, lo // DAY_MS * DAY_MS, (hi - 1) // DAY_MS * DAY_MS + DAY_MS)


def _reroll_hours(db: sqlite3.Connection, plant: str, first: int, end: int) -> None:
    bucket = f"(ts_ms - 1) / {HOUR_MS} * {HOUR_MS}"
    # INDEXED BY: without statistics the planner prefers the primary key's (plant=?),
    # which walks the plant's whole history; (plant, ts_ms) reads the hours only.
    for table, source, keys, sums in (
        ("emissions_rollup", "emissions INDEXED BY emissions_by_plant_time", _EMISSION_KEYS,
         f"count(*), {_UNKNOWN}, " + ", ".join(f"total({c})" for c in _SUMMED)),
        ("activity_rollup", "activity INDEXED BY activity_by_plant_time", _ACTIVITY_KEYS,
         "count(*), total(value), total(duration_s)"),
    ):  # fmt: skip
        db.execute(
            f"DELETE FROM {table} WHERE plant = ? AND step_ms = {HOUR_MS} "
            "AND bucket_ms >= ? AND bucket_ms < ?",
            (plant, first, end),
        )
        db.execute(
            f"INSERT INTO {table} SELECT {HOUR_MS}, {bucket}, {', '.join(keys)}, {sums} "
            f"FROM {source} WHERE ts_ms >= ? AND ts_ms < ? AND plant = ? "
            f"GROUP BY {bucket}, {', '.join(keys)}",
            (first + 1, end + 1, plant),
        )


def _reroll_days(db: sqlite3.Connection, plant: str, first: int, end: int) -> None:
    bucket = f"bucket_ms / {DAY_MS} * {DAY_MS}"
    for table, keys, sums in (
        ("emissions_rollup", _EMISSION_KEYS,
         "sum(readings), sum(unknown), " + ", ".join(f"sum({c})" for c in _SUMMED)),
        ("activity_rollup", _ACTIVITY_KEYS, "sum(readings), sum(value), sum(duration_s)"),
    ):  # fmt: skip
        db.execute(
            f"DELETE FROM {table} WHERE plant = ? AND step_ms = {DAY_MS} "
            "AND bucket_ms >= ? AND bucket_ms < ?",
            (plant, first, end),
        )
        db.execute(
            f"INSERT INTO {table} SELECT {DAY_MS}, {bucket}, {', '.join(keys)}, {sums} "
            f"FROM {table} WHERE plant = ? AND step_ms = {HOUR_MS} "
            f"AND bucket_ms >= ? AND bucket_ms < ? GROUP BY {bucket}, {', '.join(keys)}",
            (plant, first, end),
        )


def select(
    kind: str,
    step_ms: int,
    plant: str | None,
    first: int,
    end: int | None,
    factor_set: str | None,
    factor_version: str | None,
) -> tuple[str, list[object]]:
    """SQL for the rollup rows of buckets starting in [first, end), as pseudo-points: time
    is the bucket's end (the interval-end label a reading would carry), sums under the
    raw points' own column names, plus ``readings`` and ``unknown``."""
    table = "emissions_rollup" if kind == "emissions" else "activity_rollup"
    keys = _EMISSION_KEYS if kind == "emissions" else _ACTIVITY_KEYS
    sums = ("readings", "unknown", *_SUMMED) if kind == "emissions" else (
        "readings", "value", "duration_s",
    )  # fmt: skip
    sql = (
        f"SELECT bucket_ms + step_ms AS time, {', '.join(keys)}, {', '.join(sums)} "
        f"FROM {table} WHERE step_ms = ? AND bucket_ms >= ?"
    )
    params: list[object] = [step_ms, first]
    if end is not None:
        sql += " AND bucket_ms < ?"
        params.append(end)
    filters = [("plant", plant)]
    if kind == "emissions":  # activity has no factor set
        filters += [("factor_set", factor_set), ("factor_version", factor_version)]
    for column, value in filters:
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    return sql, params
