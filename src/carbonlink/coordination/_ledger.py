"""Hash-chained, signed ledger of the reports the coordinator sends the government.

Every report stores ``prev_hash`` and its own ``hash`` = SHA-256 of the canonical JSON
(sorted keys, no spaces) of ``{"body": ..., "prev_hash": ...}``. Editing a stored body,
deleting a report or re-linking the chain is found by :meth:`Ledger.verify`. With a
signing key (Ed25519, ``_signing``) each report also carries the coordinator's
signature of its hash: a chain rewritten consistently by someone without the private
key fails against the public key. Deleting the newest reports leaves a valid shorter
chain: the coordinator publishes the head (index and hash, signed) as a retained MQTT
message, and verifying against that anchor catches truncation. What each report says
is re-derived from storage and the journal's period rows by ``_verify``.

A body that is not what the coordinator writes (not JSON, NaN, a missing field, a
wrong type) is reported as broken with the field and the problem, never raised.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carbonlink.coordination._signing import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
    key_id,
    report_signature_ok,
    sign_report,
)
from carbonlink.coordination.model import PARTIES, Party

__all__ = [
    "GENESIS_HASH",
    "Anchor",
    "Ledger",
    "LedgerCheck",
    "Report",
    "body_problem",
    "canonical_json",
    "digest_of",
    "parse_anchor",
    "parse_json",
    "report_hash",
]

GENESIS_HASH: Final = "0" * 64
# Transfers are floats from a zero-sum construction; allow rounding, not a real imbalance.
BALANCE_TOLERANCE: Final = 1e-6
SHA256_HEX: Final = re.compile(r"^[0-9a-f]{64}$")
# An HMAC-SHA256 signature (64 hex digits) from before carbonlink signed with Ed25519.
_HMAC_SIGNATURE: Final = re.compile(r"^[0-9a-f]{64}$")
# A few of a malformed body's problems are enough to say what is wrong with it.
_PROBLEMS_SHOWN: Final = 3

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS reports (
    idx INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)
"""
# Columns added since the first layout; a writer adds those missing.
_ADDED_COLUMNS: Final = (("signature", "TEXT"), ("key_id", "TEXT"))


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


# --- what a stored body must look like ---------------------------------------------------

_Finite = Annotated[float, Field(allow_inf_nan=False)]
#: SQLite's integers are 64-bit: a larger count or time could not even be looked up.
MAX_INTEGER: Final = 2**62
_Millis = Annotated[int, Field(ge=0, le=MAX_INTEGER)]
_Amount = _Finite | None


class _Transfers(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    M: _Finite
    P: _Finite
    G: _Finite


class _Body(BaseModel):
    """The fields a report body may carry (``sharing.FIELDS_BY_LEVEL`` says which a
    level shares), with their JSON types: strict, so "12" is not a number and 1.0 is
    not a count."""

    model_config = ConfigDict(extra="forbid", strict=True)
    period_start_ms: _Millis
    period_end_ms: _Millis
    plant: Annotated[str, Field(min_length=1)]
    policy: str
    stage: Literal[1, 2, 3]
    stage_name: str
    transfers: _Transfers
    sharing: Literal["none", "self_reported", "verified", "live", "joint"] | None = None
    verified: bool | None = None
    reported_tco2e: _Amount = None
    readings: Annotated[int, Field(ge=0, le=MAX_INTEGER)] | None = None
    factor_set: str | None = None
    factor_version: str | None = None
    effort_firm: _Amount = None
    effort_platform: _Amount = None
    sigma: _Amount = None
    subsidy_rate_firm: _Amount = None
    subsidy_rate_platform: _Amount = None
    subsidy_claimed: _Amount = None
    subsidy_paid: _Amount = None
    carbon_price: _Amount = None
    projected_abatement: _Amount = None
    observed_abatement: _Amount = None
    parameters: dict[str, _Finite] | None = None
    periods_sha256: Annotated[str, Field(pattern=SHA256_HEX.pattern)] | None = None
    money: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    split: Literal["core", "shapley"] | None = None


def body_problem(body: object) -> str | None:
    """What is wrong with a stored report body (None: nothing), field by field."""
    if not isinstance(body, dict):
        return f"the body is a JSON {type(body).__name__}, not an object"
    try:
        parsed = _Body.model_validate(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            + ("" if e["type"] in ("missing", "extra_forbidden") else f" (got {e['input']!r})")
            for e in exc.errors()
        ]
        more = len(problems) - _PROBLEMS_SHOWN
        return "; ".join(problems[:_PROBLEMS_SHOWN]) + (f"; {more} more" if more > 0 else "")
    if parsed.period_end_ms <= parsed.period_start_ms:
        return "period_end_ms: the window ends before it starts"
    return None


# --- hashing -------------------------------------------------------------------------------


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest_of(value: object) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def report_hash(body: Mapping[str, Any], prev_hash: str) -> str:
    return digest_of({"body": body, "prev_hash": prev_hash})


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise ValueError(f"{text:.40} is too large for a number")
    return value


def parse_json(text: str) -> Any:
    """JSON as the ledger writes it: NaN, Infinity and numbers too large for a float are
    refused (ValueError), as is nesting deep enough to exhaust the parser."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# --- the anchor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """A published head: the ledger had ``next_index`` reports, the last hashed ``head``.
    The coordinator signs it (``key_id``, ``signature``) when it signs reports."""

    next_index: int
    head: str
    key_id: str | None = None
    signature: str | None = None

    @property
    def pair(self) -> tuple[int, str]:
        return self.next_index, self.head


def parse_anchor(payload: bytes | str) -> Anchor:
    """The anchor in a retained message; ValueError saying what is wrong with it."""
    try:
        data = parse_json(payload.decode() if isinstance(payload, bytes) else payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    index, head = data.get("next_index"), data.get("head")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"next_index: not a count ({index!r:.40})")
    if not isinstance(head, str) or not SHA256_HEX.match(head):
        raise ValueError(f"head: not a SHA-256 digest ({head!r:.80})")
    signer, signature = data.get("key_id"), data.get("signature")
    return Anchor(
        index,
        head,
        signer if isinstance(signer, str) else None,
        signature if isinstance(signature, str) else None,
    )


# --- the ledger ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerCheck:
    """``broken_at`` is the index of the first bad report (None: the chain is intact).

    ``key_id`` names the public key every report's signature was checked against (None:
    signatures were not checked).
    """

    reports: int
    broken_at: int | None = None
    reason: str = ""
    key_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None

    @property
    def signed(self) -> bool:
        """Every report's signature was checked and holds."""
        return self.ok and self.key_id is not None


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
        signing_key: Ed25519PrivateKey | None = None,
    ) -> None:
        """``signing_key``: sign every report appended (Ed25519, of its hash)."""
        self.path = path
        self.signing_key = signing_key
        self._owned = connection is None
        if connection is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
        self._db = connection
        self._db.execute(_SCHEMA)
        columns = self._columns()
        for name, kind in _ADDED_COLUMNS:
            if name not in columns:  # a ledger from before this column
                self._db.execute(f"ALTER TABLE reports ADD COLUMN {name} {kind}")

    def close(self) -> None:
        if self._owned:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _columns(self) -> set[str]:
        return {str(row[1]) for row in self._db.execute("PRAGMA table_info(reports)")}

    def _select(self, names: tuple[str, ...]) -> str:
        """Column list for a query; NULL for a column an older ledger lacks (opened
        read-only, it cannot gain it)."""
        have = self._columns()
        return ", ".join(n if n in have else f"NULL AS {n}" for n in names)

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
        key = self.signing_key
        self._db.execute(
            "INSERT INTO reports (idx, body, prev_hash, hash, signature, key_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                index,
                canonical_json(body),
                prev,
                digest,
                None if key is None else sign_report(key, digest),
                None if key is None else key_id(key),
            ),
        )
        return digest

    def bodies(self, *, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Report bodies in order, from index ``since``, at most ``limit`` of them; a body
        that does not parse as a JSON object is left out (``entries`` says why)."""
        return [e["body"] for e in self.entries(since=since, limit=limit) if e["body"] is not None]

    def entries(self, *, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Reports with their chain fields: ``index``, ``hash``, ``prev_hash``, ``body``,
        ``signature``, ``key_id``. A body that is not a valid report is ``None``, with
        ``problem`` saying why."""
        columns = self._select(("idx", "body", "prev_hash", "hash", "signature", "key_id"))
        rows = self._db.execute(
            f"SELECT {columns} FROM reports WHERE idx >= ? ORDER BY idx LIMIT ?",  # noqa: S608 (constant column names)
            (since, -1 if limit is None else limit),
        ).fetchall()
        entries = []
        for index, text, prev, digest, signature, signer in rows:
            body, problem = _parse_body(text)
            entry = {
                "index": index,
                "hash": digest,
                "prev_hash": prev,
                "body": body,
                "signature": signature,
                "key_id": signer,
            }
            if problem is not None:
                entry["problem"] = problem
            entries.append(entry)
        return entries

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM reports").fetchone()[0])

    def verify(
        self, anchor: tuple[int, str] | None = None, *, key: Ed25519PublicKey | None = None
    ) -> LedgerCheck:
        """Walk the chain from the start; stop at the first report that does not fit.

        ``anchor`` is a head (next index, hash of the last report) published earlier: the
        chain must still contain that report, unchanged, or reports were removed. With
        ``key`` (the coordinator's public key) every report must carry a signature that
        key verifies: a chain rewritten from an edited report on, consistently hashed,
        fails without the private key.
        """
        try:
            check = self._walk(key)
        except sqlite3.DatabaseError as exc:
            return LedgerCheck(0, 0, f"the reports table cannot be read: {exc}")
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

    def _walk(self, key: Ed25519PublicKey | None) -> LedgerCheck:
        names = ("idx", "body", "prev_hash", "hash", "signature", "key_id")
        rows = self._db.execute(f"SELECT {self._select(names)} FROM reports ORDER BY idx")  # noqa: S608 (constant column names)
        checking = None if key is None else key_id(key)
        prev = GENESIS_HASH
        for expected, (index, body_text, prev_hash, digest, signature, signer) in enumerate(rows):
            if not isinstance(index, int) or index != expected:
                problem: str | None = f"report {expected} is missing"
            else:
                problem = _row_problem(body_text, prev, prev_hash, digest)
            if problem is None and key is not None:
                problem = _signature_problem(key, digest, signature, signer)
            if problem is not None:
                return LedgerCheck(expected + 1, expected, problem, checking)
            prev = digest
        return LedgerCheck(len(self), key_id=checking)


def _row_problem(body_text: object, prev: str, prev_hash: object, digest: object) -> str | None:
    """What is wrong with one stored report, signatures aside (None: nothing)."""
    if prev_hash != prev:
        return "prev_hash does not match the report before"
    if not isinstance(digest, str) or not SHA256_HEX.match(digest):
        return f"its hash is not a SHA-256 digest: {digest!r:.80}"
    body, problem = _parse_body(body_text)
    if body is None:
        return f"malformed body: {problem}"
    if report_hash(body, prev) != digest:
        return "body was edited: its hash does not match"
    problem = body_problem(body)
    if problem is not None:
        return f"malformed body: {problem}"
    if abs(math.fsum(body["transfers"].values())) > BALANCE_TOLERANCE:
        return "transfers do not sum to zero"
    return None


def _parse_body(text: object) -> tuple[dict[str, Any] | None, str | None]:
    """(body, None) or (None, what is wrong): never raises."""
    if not isinstance(text, str):
        return None, f"the body is stored as {type(text).__name__}, not text"
    try:
        body = parse_json(text)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(body, dict):
        return None, f"the body is a JSON {type(body).__name__}, not an object"
    return body, None


def _signature_problem(
    key: Ed25519PublicKey, digest: str, signature: object, signer: object
) -> str | None:
    if signature is None:
        return "report is unsigned"
    if not isinstance(signature, str):
        return f"its signature is stored as {type(signature).__name__}, not text"
    if report_signature_ok(key, digest, signature):
        return None
    if _HMAC_SIGNATURE.match(signature):
        return "signed with an HMAC key by an older carbonlink: a public key cannot check it"
    expected = key_id(key)
    if isinstance(signer, str) and signer != expected:
        return f"signature does not verify: it names key {signer:.20}, the given key is {expected}"
    return f"signature does not verify with key {expected}: forged, or changed after signing"
