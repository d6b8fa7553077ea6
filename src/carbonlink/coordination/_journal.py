"""The coordinator's journal: one SQLite file holding the hash-chained ledger of reports
to the government, and beside it what the coordinator needs to explain and resume
itself: every period's decision and estimates per plant, the shadow policies'
comparison, and its state. One connection, so a period's reports, records and state
commit together: a crash leaves either all of a period or none of it.

The API and the backtest open the same file read-only (:meth:`Journal.open_readonly`).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd

from carbonlink.coordination._commands import Command, body_of, command_from
from carbonlink.coordination._ledger import Ledger, canonical_json, digest_of, parse_json
from carbonlink.coordination._signing import Ed25519PrivateKey
from carbonlink.wire import format_timestamp

__all__ = ["PERIOD_COLUMNS", "Journal", "PeriodRow", "expand_runs", "timestamp_runs"]

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
# Period columns added since the first layout: what the ledger's verifier needs to
# re-derive a period (docs/coordination.md, "The report ledger"). A writer adds them.
_ADDED_PERIOD_COLUMNS: Final = (
    ("stage_name", "TEXT"), ("x_start", "REAL"), ("model_periods", "REAL"),
    ("factor_set", "TEXT"), ("factor_version", "TEXT"), ("counted", "TEXT"), ("money", "TEXT"),
)  # fmt: skip
# Another process (the API) may hold the write lock for a moment: wait, do not fail.
BUSY_TIMEOUT_MS: Final = 5000

#: Columns of :meth:`Journal.periods`.
PERIOD_COLUMNS: Final = (
    "plant", "start_ms", "end_ms", "policy", "stage", "effort_firm", "effort_platform",
    "sigma", "theta_m", "theta_p", "carbon_price", "x_projected", "x_observed", "tco2e",
    "readings", "functional_availability", "parameters",
    *(name for name, _ in _ADDED_PERIOD_COLUMNS),
)  # fmt: skip
# The journal's column for a quantity the code names otherwise: its storage format (and
# the digests reports commit to) keeps the first names. The one place they are mapped.
STORED_AS: Final = {"subsidy_rate_firm": "theta_m", "subsidy_rate_platform": "theta_p"}
READ_AS: Final = {column: name for name, column in STORED_AS.items()}
# Held as JSON text in their columns.
_JSON_COLUMNS: Final = ("parameters", "counted")


@dataclass(frozen=True)
class PeriodRow:
    """One plant's period as the coordinator ran it: the decision in force, the mean
    abatement X the model projects for it (model units) and what was observed.

    The fields after ``parameters`` let the ledger's verifier re-derive the period: the
    stage's name, X when the period began, its length in model periods, the factor set
    version its emissions were read under, and ``counted``: exactly which readings were
    counted, per meter as runs of timestamps (``timestamp_runs``), so readings stored
    later are told apart as late. None in a journal from before them.
    """

    plant: str
    start_ms: int
    end_ms: int
    policy: str
    stage: int
    effort_firm: float
    effort_platform: float
    sigma: float
    subsidy_rate_firm: float
    subsidy_rate_platform: float
    carbon_price: float
    x_projected: float
    x_observed: float | None
    tco2e: float
    readings: int
    functional_availability: float | None
    parameters: Mapping[str, float | str]
    stage_name: str | None = None
    x_start: float | None = None
    model_periods: float | None = None
    factor_set: str | None = None
    factor_version: str | None = None
    counted: Mapping[str, Sequence[Sequence[int]]] | None = None
    money: str | None = None  # the money unit of its amounts (MoneyUnit.label)

    def canonical(self) -> dict[str, Any]:
        """The row as JSON-ready values of its declared types, the same before it is
        stored and after it is read back (an int 0 stored in a REAL column reads 0.0)."""
        values = {STORED_AS.get(name, name): value for name, value in asdict(self).items()}
        for name in (STORED_AS.get(f, f) for f in _FLOAT_FIELDS):
            if values[name] is not None:
                values[name] = float(values[name])
        for name in ("start_ms", "end_ms", "stage", "readings"):
            values[name] = int(values[name])
        values["parameters"] = {
            k: v if isinstance(v, str) else float(v) for k, v in self.parameters.items()
        }
        if self.counted is not None:
            values["counted"] = {
                k: [[int(x) for x in run] for run in runs] for k, runs in self.counted.items()
            }
        return values

    def digest(self) -> str:
        """SHA-256 of :meth:`canonical`: what a report commits to for each of its periods."""
        return digest_of(self.canonical())


_FLOAT_FIELDS: Final = (
    "effort_firm", "effort_platform", "sigma", "subsidy_rate_firm", "subsidy_rate_platform",
    "carbon_price",
    "x_projected", "x_observed", "tco2e", "functional_availability", "x_start",
    "model_periods",
)  # fmt: skip


class Journal:
    """The coordinator's file: ``ledger`` (reports) plus periods, shadows and state."""

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> None:
        """``signing_key``: the coordinator's, to sign every report (``_signing``)."""
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
            have = self._period_columns()
            for name, kind in _ADDED_PERIOD_COLUMNS:
                if name not in have:  # a journal from before this column
                    self._db.execute(f"ALTER TABLE periods ADD COLUMN {name} {kind}")
        self.readonly = readonly
        self.ledger = (
            Ledger(path, connection=self._db, signing_key=signing_key)
            if not readonly
            else _ReadonlyLedger(path, self._db)
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

    def _period_columns(self) -> set[str]:
        return {str(row[1]) for row in self._db.execute("PRAGMA table_info(periods)")}

    def _period_select(self) -> str:
        """PERIOD_COLUMNS, with NULL for those a journal opened read-only lacks."""
        have = self._period_columns()
        return ", ".join(c if c in have else f"NULL AS {c}" for c in PERIOD_COLUMNS)

    def record_periods(self, rows: Iterable[PeriodRow]) -> None:
        self._db.executemany(
            f"INSERT OR REPLACE INTO periods ({', '.join(PERIOD_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(PERIOD_COLUMNS))})",
            [
                tuple(
                    canonical_json(v) if k in _JSON_COLUMNS and v is not None else v
                    for k, v in row.canonical().items()
                )
                for row in rows
            ],
        )

    def period_rows(self, plant: str | None = None) -> list[PeriodRow]:
        """Every period row (of ``plant``), oldest first, as the coordinator wrote it.

        Raises ValueError naming the row and column when a stored value is not what the
        coordinator writes (a journal edited by hand)."""
        where, args = self._range(plant, None, None)
        rows = self._db.execute(
            f"SELECT {self._period_select()} FROM periods {where} ORDER BY plant, start_ms", args
        ).fetchall()
        return [_period_row(dict(zip(PERIOD_COLUMNS, row, strict=True))) for row in rows]

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
        chosen = f"SELECT {self._period_select()} FROM periods {where}"
        if limit is None:
            query = f"{chosen} ORDER BY start_ms, plant"
        else:
            newest = f"{chosen} ORDER BY start_ms DESC, plant LIMIT ?"
            query = f"SELECT * FROM ({newest}) ORDER BY start_ms, plant"
            args.append(limit)
        frame = pd.read_sql_query(query, self._db, params=args).rename(columns=READ_AS)
        for name in _JSON_COLUMNS:
            frame[name] = [_json_or_none(p) for p in frame[name]]
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

    def add_command(self, command: Command, issued_ms: int) -> int:
        """Queue a command for the coordinator's next step; returns its id."""
        cursor = self._db.execute(
            "INSERT INTO commands (issued_ms, kind, body) VALUES (?, ?, ?)",
            (issued_ms, command.kind, canonical_json(body_of(command))),
        )
        return int(cursor.lastrowid or 0)

    def pending_commands(self) -> list[tuple[int, Command | str]]:
        """(id, command) of each command not yet applied, oldest first; a row that holds
        no command comes back as the reason (the coordinator records it as refused)."""
        rows = self._db.execute(
            "SELECT id, kind, body FROM commands WHERE applied_ms IS NULL ORDER BY id"
        )
        pending: list[tuple[int, Command | str]] = []
        for i, kind, body in rows:
            try:
                pending.append((int(i), command_from(str(kind), dict(json.loads(body)))))
            except (ValueError, KeyError, TypeError) as exc:
                pending.append((int(i), f"{kind}: {exc}"))
        return pending

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


def _json_or_none(text: object) -> Any:
    """A JSON cell for display; None where it is not JSON (the ledger's verifier says
    what is wrong with such a row)."""
    try:
        return parse_json(text) if isinstance(text, str) else None
    except ValueError:
        return None


#: A run that long is no meter's period: refused rather than expanded.
MAX_RUN_COUNT: Final = 10_000_000


def timestamp_runs(times: Iterable[int]) -> list[list[int]]:
    """Distinct times, sorted, as runs of equal steps, ``[first_ms, step_ms, count]``
    each: a meter that reports every minute makes one run per period, and any set of
    times is kept exactly."""
    ordered = sorted(set(times))
    runs: list[list[int]] = []
    i = 0
    while i < len(ordered):
        if i + 1 == len(ordered):
            runs.append([ordered[i], 0, 1])
            break
        step = ordered[i + 1] - ordered[i]
        n = 2
        while i + n < len(ordered) and ordered[i + n] - ordered[i + n - 1] == step:
            n += 1
        runs.append([ordered[i], step, n])
        i += n
    return runs


def expand_runs(runs: Iterable[Sequence[int]]) -> list[int]:
    return [first + k * step for first, step, count in runs for k in range(count)]


def _runs_problem(counted: object) -> str | None:
    if not isinstance(counted, dict):
        return "not a JSON object"
    total = 0
    for meter, runs in counted.items():
        if not isinstance(runs, list):
            return f"{meter}: not a list of runs"
        for run in runs:
            if (
                not isinstance(run, list)
                or len(run) != 3
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in run)
                or run[1] < 0
                or run[2] < 1
            ):
                return f"{meter}: {run!r:.60} is not a run [first_ms, step_ms, count]"
            total += run[2]
    if total > MAX_RUN_COUNT:
        return f"{total} readings: more than any period holds"
    return None


def _period_row(values: dict[str, Any]) -> PeriodRow:
    start = values.get("start_ms")
    when = format_timestamp(start) if isinstance(start, int) else repr(start)
    where = f"the period row of {values.get('plant')!r} from {when}"
    for name in _JSON_COLUMNS:
        text = values[name]
        if text is None:
            continue
        try:
            values[name] = parse_json(text) if isinstance(text, str) else None
        except ValueError as exc:
            raise ValueError(f"{where}: {name}: not valid JSON ({exc})") from None
        if not isinstance(values[name], dict):
            raise ValueError(f"{where}: {name}: not a JSON object")
    if values["parameters"] is None:
        raise ValueError(f"{where}: parameters: missing")
    if values["counted"] is not None:
        problem = _runs_problem(values["counted"])
        if problem is not None:
            raise ValueError(f"{where}: counted: {problem}")
    for name in ("start_ms", "end_ms", "stage", "readings"):
        if not isinstance(values[name], int):
            raise ValueError(f"{where}: {name}: not an integer ({values[name]!r:.40})")
    values = {READ_AS.get(name, name): value for name, value in values.items()}
    for name in _FLOAT_FIELDS:
        value = values[name]
        if value is not None and (not isinstance(value, int | float) or not math.isfinite(value)):
            raise ValueError(f"{where}: {name}: not a finite number ({value!r:.40})")
    return PeriodRow(**values)


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
