"""The coordinator's journal: one SQLite file holding the hash-chained ledger of reports
to the government, and beside it what the coordinator needs to explain and resume
itself: every period's decision and estimates per plant, the shadow policies'
comparison, and its state. One connection, so a period's reports, records and state
commit together: a crash leaves either all of a period or none of it.

The API and the backtest open the same file read-only (:meth:`Journal.open_readonly`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd

from carbonlink.coordination._ledger import Ledger, canonical_json

__all__ = ["PERIOD_COLUMNS", "Journal", "PeriodRow"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS periods (
    plant TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    policy TEXT NOT NULL,
    stage INTEGER NOT NULL,
    effort_firm REAL NOT NULL,
    effort_platform REAL NOT NULL,
    sigma REAL NOT NULL,
    theta_m REAL NOT NULL,
    theta_p REAL NOT NULL,
    carbon_price REAL NOT NULL,
    x_projected REAL NOT NULL,
    x_observed REAL,
    tco2e REAL NOT NULL,
    readings INTEGER NOT NULL,
    functional_availability REAL,
    parameters TEXT NOT NULL,
    PRIMARY KEY (plant, start_ms)
);
CREATE TABLE IF NOT EXISTS shadows (
    end_ms INTEGER NOT NULL,
    policy TEXT NOT NULL,
    active INTEGER NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (policy, end_ms)
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    issued_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    applied_ms INTEGER,
    outcome TEXT
);
"""
# Another process (the API) may hold the write lock for a moment: wait, do not fail.
BUSY_TIMEOUT_MS: Final = 5000

#: Columns of :meth:`Journal.periods`.
PERIOD_COLUMNS: Final = (
    "plant", "start_ms", "end_ms", "policy", "stage", "effort_firm", "effort_platform",
    "sigma", "theta_m", "theta_p", "carbon_price", "x_projected", "x_observed", "tco2e",
    "readings", "functional_availability", "parameters",
)  # fmt: skip


@dataclass(frozen=True)
class PeriodRow:
    """One plant's period as the coordinator ran it: the decision in force, the mean
    abatement X the model projects for it (model units) and what was observed."""

    plant: str
    start_ms: int
    end_ms: int
    policy: str
    stage: int
    effort_firm: float
    effort_platform: float
    sigma: float
    theta_m: float
    theta_p: float
    carbon_price: float
    x_projected: float
    x_observed: float | None
    tco2e: float
    readings: int
    functional_availability: float | None
    parameters: Mapping[str, float]


class Journal:
    """The coordinator's file: ``ledger`` (reports) plus periods, shadows and state."""

    def __init__(
        self, path: Path, *, readonly: bool = False, signing_key: bytes | None = None
    ) -> None:
        self.path = path
        if readonly:
            if not path.is_file():
                raise FileNotFoundError(f"no coordination journal {path}")
            uri = f"file:{path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # WAL: the API reads while the coordinator writes, neither blocks the other.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        self.readonly = readonly
        self.ledger = (
            Ledger(path, connection=self._db) if not readonly else _ReadonlyLedger(path, self._db)
        )

    @classmethod
    def open_readonly(cls, path: Path) -> Journal:
        return cls(path, readonly=True)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # a failed COMMIT has rolled back already
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- periods ----------------------------------------------------------------------

    def record_periods(self, rows: Iterable[PeriodRow]) -> None:
        self._db.executemany(
            f"INSERT OR REPLACE INTO periods ({', '.join(PERIOD_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(PERIOD_COLUMNS))})",
            [
                tuple(
                    canonical_json(dict(v)) if k == "parameters" else v
                    for k, v in asdict(row).items()
                )
                for row in rows
            ],
        )

    def periods(
        self,
        plant: str | None = None,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Period rows overlapping [start_ms, end_ms), oldest first (the newest ``limit``)."""
        where, args = self._range(plant, start_ms, end_ms)
        chosen = f"SELECT {', '.join(PERIOD_COLUMNS)} FROM periods {where}"
        if limit is None:
            query = f"{chosen} ORDER BY start_ms, plant"
        else:
            newest = f"{chosen} ORDER BY start_ms DESC, plant LIMIT ?"
            query = f"SELECT * FROM ({newest}) ORDER BY start_ms, plant"
            args.append(limit)
        frame = pd.read_sql_query(query, self._db, params=args)
        frame["parameters"] = [json.loads(p) for p in frame["parameters"]]
        return frame

    # --- shadow policies --------------------------------------------------------------

    def record_shadows(self, end_ms: int, summaries: Sequence[Mapping[str, Any]]) -> None:
        """Each policy's cumulative comparison figures as of ``end_ms``."""
        self._db.executemany(
            "INSERT OR REPLACE INTO shadows (end_ms, policy, active, summary) VALUES (?,?,?,?)",
            [
                (end_ms, s["policy"], int(bool(s.get("active"))), canonical_json(dict(s)))
                for s in summaries
            ],
        )

    def shadows(self, *, history: bool = False) -> list[dict[str, Any]]:
        """The latest comparison (every policy as of the newest step), or all of them."""
        if history:
            rows = self._db.execute("SELECT summary FROM shadows ORDER BY end_ms, policy")
        else:
            rows = self._db.execute(
                "SELECT summary FROM shadows WHERE end_ms = (SELECT MAX(end_ms) FROM shadows) "
                "ORDER BY active DESC, policy"
            )
        return [json.loads(summary) for (summary,) in rows]

    # --- commands (from the API to the coordinator) --------------------------------------

    def add_command(self, kind: str, body: Mapping[str, Any], issued_ms: int) -> int:
        """Queue a command for the coordinator's next step; returns its id."""
        cursor = self._db.execute(
            "INSERT INTO commands (issued_ms, kind, body) VALUES (?, ?, ?)",
            (issued_ms, kind, canonical_json(dict(body))),
        )
        return int(cursor.lastrowid or 0)

    def pending_commands(self) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._db.execute(
            "SELECT id, kind, body FROM commands WHERE applied_ms IS NULL ORDER BY id"
        )
        return [(int(i), str(kind), dict(json.loads(body))) for i, kind, body in rows]

    def settle_command(self, command_id: int, applied_ms: int, outcome: str) -> None:
        self._db.execute(
            "UPDATE commands SET applied_ms = ?, outcome = ? WHERE id = ?",
            (applied_ms, outcome, command_id),
        )

    def commands(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, issued_ms, kind, body, applied_ms, outcome FROM commands "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            {
                "id": i,
                "issued_ms": issued,
                "kind": kind,
                "body": json.loads(body),
                "applied_ms": applied,
                "outcome": outcome,
            }
            for i, issued, kind, body, applied, outcome in rows
        ]

    # --- state ------------------------------------------------------------------------

    def save_state(self, key: str, value: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
            (key, json.dumps(value, sort_keys=True)),
        )

    def load_state(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    @staticmethod
    def _range(
        plant: str | None, start_ms: int | None, end_ms: int | None
    ) -> tuple[str, list[str | int]]:
        clauses: list[str] = []
        args: list[str | int] = []
        if plant is not None:
            clauses.append("plant = ?")
            args.append(plant)
        if start_ms is not None:
            clauses.append("end_ms > ?")
            args.append(start_ms)
        if end_ms is not None:
            clauses.append("start_ms < ?")
            args.append(end_ms)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


class _ReadonlyLedger(Ledger):
    """The ledger of a journal opened read-only: reading and verifying only."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        # Skips Ledger.__init__: creating the table would be a write.
        self.path = path
        self.signing_key = None
        self._owned = False
        self._db = connection

    def append(self, report: object) -> str:
        raise PermissionError("this journal was opened read-only")
