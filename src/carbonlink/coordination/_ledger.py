"""Hash-chained ledger of the reports the coordinator sends the government.

Every report stores ``prev_hash`` and its own ``hash`` = SHA-256 of the canonical JSON
(sorted keys, no spaces) of ``{"body": ..., "prev_hash": ...}``. Editing a stored body,
deleting a report or re-linking the chain is found by :meth:`Ledger.verify`. Deleting
the newest reports leaves a valid shorter chain: anchoring the head hash elsewhere (a
retained MQTT message, the government's copy) is what would catch that.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from carbonlink.coordination._params import PARTIES, Party

__all__ = ["GENESIS_HASH", "Ledger", "LedgerCheck", "Report", "report_hash"]

GENESIS_HASH: Final = "0" * 64
# Transfers are floats from a zero-sum construction; allow rounding, not a real imbalance.
BALANCE_TOLERANCE: Final = 1e-6

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS reports (
    idx INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Report:
    """One period's report for one plant: emissions, efforts, subsidies, transfers.

    ``transfers`` are what each party receives this period (negative: pays); they sum
    to zero.
    """

    period_start_ms: int
    period_end_ms: int
    plant: str
    policy: str
    stage: int
    stage_name: str
    reported_tco2e: float
    effort_firm: float
    effort_platform: float
    sigma: float
    subsidy_rate_firm: float
    subsidy_rate_platform: float
    carbon_price: float
    projected_abatement: float
    transfers: Mapping[Party, float] = field(default_factory=lambda: dict.fromkeys(PARTIES, 0.0))

    def body(self) -> dict[str, Any]:
        body = asdict(self)
        body["transfers"] = dict(self.transfers)
        return body


@dataclass(frozen=True)
class LedgerCheck:
    """``broken_at`` is the index of the first bad report (None: the chain is intact)."""

    reports: int
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def report_hash(body: Mapping[str, Any], prev_hash: str) -> str:
    text = canonical_json({"body": body, "prev_hash": prev_hash})
    return hashlib.sha256(text.encode()).hexdigest()


class Ledger:
    """Append-only SQLite file of reports. Not shared between processes at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> tuple[int, str]:
        """The next index and the hash the next report links to."""
        row = self._db.execute("SELECT idx, hash FROM reports ORDER BY idx DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]) + 1, str(row[1]))

    def append(self, report: Report) -> str:
        """Store a balanced report; returns its hash."""
        imbalance = math.fsum(report.transfers.values())
        if abs(imbalance) > BALANCE_TOLERANCE:
            raise ValueError(f"transfers must sum to zero, got {imbalance:g}")
        body = report.body()
        index, prev = self.head()
        digest = report_hash(body, prev)
        self._db.execute(
            "INSERT INTO reports (idx, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
            (index, canonical_json(body), prev, digest),
        )
        return digest

    def bodies(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT body FROM reports ORDER BY idx").fetchall()
        return [json.loads(row[0]) for row in rows]

    def verify(self) -> LedgerCheck:
        """Walk the chain from the start; stop at the first report that does not fit."""
        rows = self._db.execute("SELECT idx, body, prev_hash, hash FROM reports ORDER BY idx")
        prev = GENESIS_HASH
        count = 0
        for expected, (index, body_text, prev_hash, digest) in enumerate(rows):
            count += 1
            if index != expected:
                return LedgerCheck(count, expected, f"report {expected} is missing")
            if prev_hash != prev:
                return LedgerCheck(count, index, "prev_hash does not match the report before")
            try:
                body = json.loads(body_text)
            except json.JSONDecodeError:
                return LedgerCheck(count, index, "body is not valid JSON")
            if report_hash(body, prev_hash) != digest:
                return LedgerCheck(count, index, "body was edited: its hash does not match")
            transfers = body.get("transfers", {}) if isinstance(body, dict) else {}
            if abs(math.fsum(float(v) for v in transfers.values())) > BALANCE_TOLERANCE:
                return LedgerCheck(count, index, "transfers do not sum to zero")
            prev = digest
        return LedgerCheck(count)
