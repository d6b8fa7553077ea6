"""Hash-chained ledger of the reports the coordinator sends the government.

Every report stores ``prev_hash`` and its own ``hash`` = SHA-256 of the canonical JSON
(sorted keys, no spaces) of ``{"body": ..., "prev_hash": ...}``. Editing a stored body,
deleting a report or re-linking the chain is found by :meth:`Ledger.verify`. Deleting
the newest reports leaves a valid shorter chain: the coordinator publishes the head
(index and hash) as a retained MQTT message, and verifying against that anchor catches
truncation. Rewriting the whole chain consistently is caught by re-deriving each
report's emissions from storage (:func:`verify_against_store`): reports are
reproducible from what the platform stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from carbonlink.coordination._params import PARTIES, Party

if TYPE_CHECKING:
    from carbonlink.platform.storage import Store

__all__ = [
    "GENESIS_HASH",
    "Ledger",
    "LedgerCheck",
    "Report",
    "StoreMismatch",
    "report_hash",
    "verify_against_store",
]

GENESIS_HASH: Final = "0" * 64
# Transfers are floats from a zero-sum construction; allow rounding, not a real imbalance.
BALANCE_TOLERANCE: Final = 1e-6
# A report's tCO2e against a fresh sum of the same stored points: float summation order.
STORE_TOLERANCE_T: Final = 1e-6
KG_PER_T: Final = 1000.0

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
    """One plant's report for one window: emissions, and what the stage's sharing level
    adds (efforts, subsidies, abatement, parameters). Fields left ``None`` were not
    shared and are absent from the stored body.

    ``transfers`` are what each party receives over the window (negative: pays); they
    sum to zero.
    """

    period_start_ms: int
    period_end_ms: int
    plant: str
    policy: str
    stage: int
    stage_name: str
    reported_tco2e: float
    transfers: Mapping[Party, float] = field(default_factory=lambda: dict.fromkeys(PARTIES, 0.0))
    sharing: str | None = None
    verified: bool | None = None
    readings: int | None = None
    factor_set: str | None = None
    factor_version: str | None = None
    effort_firm: float | None = None
    effort_platform: float | None = None
    sigma: float | None = None
    subsidy_rate_firm: float | None = None
    subsidy_rate_platform: float | None = None
    subsidy_claimed: float | None = None
    subsidy_paid: float | None = None
    carbon_price: float | None = None
    projected_abatement: float | None = None
    observed_abatement: float | None = None
    parameters: Mapping[str, float] | None = None

    def body(self) -> dict[str, Any]:
        body = {k: v for k, v in asdict(self).items() if v is not None}
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


@dataclass(frozen=True)
class StoreMismatch:
    """A report that storage does not reproduce.

    ``late`` is True when storage holds more readings for the window than the report
    counted and nothing else disagrees: data that arrived after the report was made,
    not tampering. Otherwise the report or the stored points were changed.
    """

    index: int
    plant: str
    period_start_ms: int
    period_end_ms: int
    reported_tco2e: float
    stored_tco2e: float
    reported_readings: int | None
    stored_readings: int
    late: bool

    @property
    def reason(self) -> str:
        if self.late:
            extra = self.stored_readings - (self.reported_readings or 0)
            return f"{extra} readings arrived after the report"
        return (
            f"report says {self.reported_tco2e:.6f} tCO2e from {self.reported_readings} "
            f"readings, storage {self.stored_tco2e:.6f} from {self.stored_readings}"
        )


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sign(key: bytes, digest: str) -> str:
    """HMAC-SHA256 of a report's hash: only the key's holder can make it."""
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def report_hash(body: Mapping[str, Any], prev_hash: str) -> str:
    text = canonical_json({"body": body, "prev_hash": prev_hash})
    return hashlib.sha256(text.encode()).hexdigest()


class Ledger:
    """Append-only SQLite table of reports. One writer; readers may open it at any time
    (WAL), also from another process such as the API.

    ``connection`` shares an open database (the coordinator's :class:`Journal`), so a
    report and the state that produced it commit in one transaction.
    """

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection | None = None,
        *,
        signing_key: bytes | None = None,
    ) -> None:
        """``signing_key``: sign every report appended (HMAC-SHA256 of its hash)."""
        self.path = path
        self.signing_key = signing_key
        self._owned = connection is None
        if connection is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
        self._db = connection
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(reports)")}
        if "signature" not in columns:  # a ledger from before signatures
            self._db.execute("ALTER TABLE reports ADD COLUMN signature TEXT")

    def close(self) -> None:
        if self._owned:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> tuple[int, str]:
        """The next index and the hash the next report links to."""
        row = self._db.execute("SELECT idx, hash FROM reports ORDER BY idx DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]) + 1, str(row[1]))

    def append(self, report: Report | Mapping[str, Any]) -> str:
        """Store a balanced report; returns its hash."""
        body = report.body() if isinstance(report, Report) else dict(report)
        imbalance = math.fsum(body.get("transfers", {}).values())
        if abs(imbalance) > BALANCE_TOLERANCE:
            raise ValueError(f"transfers must sum to zero, got {imbalance:g}")
        index, prev = self.head()
        digest = report_hash(body, prev)
        signature = None if self.signing_key is None else sign(self.signing_key, digest)
        self._db.execute(
            "INSERT INTO reports (idx, body, prev_hash, hash, signature) VALUES (?, ?, ?, ?, ?)",
            (index, canonical_json(body), prev, digest, signature),
        )
        return digest

    def bodies(self, *, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Report bodies in order, from index ``since``, at most ``limit`` of them."""
        rows = self._db.execute(
            "SELECT body FROM reports WHERE idx >= ? ORDER BY idx LIMIT ?",
            (since, -1 if limit is None else limit),
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def entries(self, *, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Reports with their chain fields: ``index``, ``hash``, ``prev_hash``, ``body``."""
        rows = self._db.execute(
            "SELECT idx, body, prev_hash, hash FROM reports WHERE idx >= ? ORDER BY idx LIMIT ?",
            (since, -1 if limit is None else limit),
        ).fetchall()
        return [
            {"index": i, "hash": h, "prev_hash": prev, "body": json.loads(body)}
            for i, body, prev, h in rows
        ]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM reports").fetchone()[0])

    def verify(
        self, anchor: tuple[int, str] | None = None, *, key: bytes | None = None
    ) -> LedgerCheck:
        """Walk the chain from the start; stop at the first report that does not fit.

        ``anchor`` is a head (next index, hash of the last report) published earlier: the
        chain must still contain that report, unchanged, or reports were removed. With
        ``key`` every report must carry its signature: a chain rewritten from an edited
        report on, consistently hashed, still fails without the key.
        """
        check = self._walk(key)
        if anchor is None or not check.ok:
            return check
        next_index, head_hash = anchor
        if next_index == 0:
            return check
        if check.reports < next_index:
            return LedgerCheck(
                check.reports,
                check.reports,
                f"the anchor says {next_index} reports; only {check.reports} remain",
            )
        row = self._db.execute("SELECT hash FROM reports WHERE idx = ?", (next_index - 1,))
        (stored,) = row.fetchone()
        if stored != head_hash:
            return LedgerCheck(
                check.reports, next_index - 1, "report does not match the anchored head hash"
            )
        return check

    def _walk(self, key: bytes | None) -> LedgerCheck:
        # A ledger from before signatures, opened read-only, cannot gain the column.
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(reports)")}
        query = (
            "SELECT idx, body, prev_hash, hash, signature FROM reports ORDER BY idx"
            if "signature" in columns
            else "SELECT idx, body, prev_hash, hash, NULL FROM reports ORDER BY idx"
        )
        rows = self._db.execute(query)
        prev = GENESIS_HASH
        count = 0
        for expected, (index, body_text, prev_hash, digest, signature) in enumerate(rows):
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
            if key is not None and (
                signature is None or not hmac.compare_digest(signature, sign(key, digest))
            ):
                reason = "unsigned" if signature is None else "signature does not match the key"
                return LedgerCheck(
                    count, index, f"report is {reason}" if signature is None else reason
                )
            transfers = body.get("transfers", {}) if isinstance(body, dict) else {}
            if abs(math.fsum(float(v) for v in transfers.values())) > BALANCE_TOLERANCE:
                return LedgerCheck(count, index, "transfers do not sum to zero")
            prev = digest
        return LedgerCheck(count)


def verify_against_store(
    ledger: Ledger, store: Store, *, tolerance_t: float = STORE_TOLERANCE_T
) -> list[StoreMismatch]:
    """Re-derive every report's tCO2e (and reading count, where shared) from storage.

    Each report names its plant, window and, from the verified level on, its factor set
    and version; the sum of the stored CO2e for exactly those must match. Self-reported
    totals carry no factor version: they are compared against every stored version's
    sum and match if any does.
    """
    from carbonlink.platform.storage import readings_ending_in

    mismatches: list[StoreMismatch] = []
    for entry in ledger.entries():
        body = entry["body"]
        start, end, plant = body["period_start_ms"], body["period_end_ms"], body["plant"]
        first, after = readings_ending_in(start, end)  # as the coordinator reads
        frame = store.emissions(
            plant,
            start_ms=first,
            end_ms=after,
            factor_set=body.get("factor_set"),
            factor_version=body.get("factor_version"),
        )
        sums = _sums_by_version(frame)
        counts = {version: int(n) for version, n in frame.groupby("factor_version").size().items()}
        reported_t = float(body["reported_tco2e"])
        reported_n = body.get("readings")
        matching = [
            v
            for v, total in sums.items()
            if abs(total - reported_t) <= tolerance_t * max(1.0, abs(reported_t))
            and (reported_n is None or counts.get(v) == reported_n)
        ]
        if matching or (not sums and reported_t == 0.0):
            continue
        version = max(sums, key=lambda v: counts[v]) if sums else ""
        stored_t, stored_n = sums.get(version, 0.0), counts.get(version, 0)
        late = (
            reported_n is not None
            and stored_n > reported_n
            and stored_t >= reported_t - tolerance_t * max(1.0, abs(reported_t))
        )
        mismatches.append(
            StoreMismatch(
                entry["index"], plant, start, end, reported_t, stored_t, reported_n, stored_n, late
            )
        )
    return mismatches


def _sums_by_version(frame: Any) -> dict[str, float]:
    if not len(frame):
        return {}
    grouped = frame.groupby("factor_version")["co2e_kg"].apply(lambda s: math.fsum(s))
    return {str(v): float(total) / KG_PER_T for v, total in grouped.items()}
