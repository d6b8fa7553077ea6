"""Checking what reached the government: the ledger's chain, its signatures and anchor,
and, with the store, every figure each report carries, re-derived.

A report aggregates period rows (the journal's ``periods`` table) through the sharing
gate. Re-deriving it means, for each of its periods:

- its tCO2e and reading count, from storage: the readings whose interval ends in the
  period, under the factor set version the period was read with, exactly those the
  coordinator counted (``PeriodRow.counted``, runs of timestamps per meter);
- the decision (efforts, sigma, subsidy rates) from the parameters the period ran
  under, through ``decide`` as the coordinator calls it (stage 2: from the rates the
  government set);
- the abatement path (X at the start follows from the period before) and the
  projection, the subsidy claims and the transfers, through ``period_outcome``, the
  coordinator's own function, with the stage-3 split from ``settlement_split``;

then aggregating them with the gate's ``aggregate`` at the report's sharing level and
applying the government's payment as ``Government`` does, and comparing every field
with the report. What cannot be re-derived is taken from the period row: the
parameters (estimated from the stream), the observed abatement, the carbon price.

Late data: readings of a period that storage holds but the coordinator did not count
(they landed after it read the period: an agent's outbox flushed after an outage, a
platform worker's spill replayed). They are accepted, listed with their amount, only
from a report whose signature was checked and which commits to its period rows
(``periods_sha256``): there which readings were counted is the coordinator's signed
word. Without a checked signature, readings left out cannot be told from readings that
came late, so every reading storage holds beyond those counted is a mismatch.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import pandas as pd
from pydantic import ValidationError

from carbonlink.coordination._accounting import (
    period_outcome,
    period_record,
    recorded_decision,
)
from carbonlink.coordination._government import scaled_transfers
from carbonlink.coordination._journal import Journal, PeriodRow, expand_runs
from carbonlink.coordination._ledger import Anchor, LedgerCheck
from carbonlink.coordination._sharing import (
    PeriodRecord,
    SharingLevel,
    aggregate,
    periods_digest,
)
from carbonlink.coordination._signing import Ed25519PublicKey, anchor_signature_ok, key_id
from carbonlink.coordination.model import STAGE_NAMES, CoordinationParams
from carbonlink.storage import Store, readings_ending_in
from carbonlink.wire import format_timestamp

__all__ = ["Finding", "Verification", "verify_journal"]

#: Same code on the same inputs gives the same floats; this covers summation order
#: (math.fsum against a pandas sum) and nothing a person could notice: a milligram of
#: CO2e, a billionth of a currency unit.
RELATIVE_TOLERANCE: Final = 1e-9
ABSOLUTE_TOLERANCE: Final = 1e-9
KG_PER_T: Final = 1000.0
# Parameter names in a period row that say where a value came from, not the value.
_SOURCE_PREFIX: Final = "source_"
# Fields compared as part of a nested figure or checked on their own.
_OWN_CHECK: Final = frozenset({"periods_sha256"})
_UNITS: Final = {"reported_tco2e": " t", "readings": " readings"}

#: Where a verifier's public key comes from, said where none was given.
NO_KEY: Final = (
    "no public key; give --public-key FILE (the .pub file `carbonlink coordinate --keygen` "
    "wrote) or set coordination.public_key"
)

Kind = Literal["broken", "mismatch", "late"]
_LABELS: Final[dict[str, str]] = {"broken": "BROKEN", "mismatch": "MISMATCH", "late": "late data"}


@dataclass(frozen=True)
class Finding:
    """One thing that does not hold (``broken``, ``mismatch``) or that storage holds
    beyond a report (``late``), at report ``index`` (None: the ledger as a whole).
    ``field`` is the report field or the check (``chain``, ``anchor``, ``periods``)."""

    kind: Kind
    index: int | None
    field: str
    message: str
    plant: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    readings: int = 0  # late data: how many readings ...
    tco2e: float = 0.0  # ... and how much CO2e

    def line(self) -> str:
        where = "" if self.index is None else f" at report {self.index}"
        if self.plant is not None and self.start_ms is not None and self.end_ms is not None:
            where += f" ({self.plant}, {window(self.start_ms, self.end_ms)})"
        return f"{_LABELS[self.kind]}{where}: {self.field}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "field": self.field,
            "message": self.message,
            "plant": self.plant,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "readings": self.readings,
            "tco2e": self.tco2e,
            "line": self.line(),
        }


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify_journal`: one object that the CLI prints and the
    API serves, so both say the same thing with the same figures."""

    chain: LedgerCheck
    anchor: Anchor | None = None
    store: str | None = None  # what the reports were re-derived from (None: not asked)
    store_checked: bool = False  # False when the chain is broken: nothing to re-derive
    findings: tuple[Finding, ...] = ()

    @property
    def reports(self) -> int:
        return self.chain.reports

    @property
    def ok(self) -> bool:
        return self.chain.ok and not any(f.kind != "late" for f in self.findings)

    @property
    def late(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "late"]

    def summary(self) -> str:
        """The first line: the chain, the anchor and the signatures."""
        if not self.chain.ok:
            return f"BROKEN at report {self.chain.broken_at}: {self.chain.reason}"
        anchored = " and matches the anchor" if self.anchor is not None else ""
        if self.chain.key_id is not None:
            signed = f", every report signed (key {self.chain.key_id})"
        else:
            signed = f" (signatures not checked: {NO_KEY})"
        if any(f.kind == "broken" for f in self.findings):
            return f"BROKEN: {_count(self.chain.reports, 'report')}; " + "; ".join(
                f.message for f in self.findings if f.kind == "broken"
            )
        return f"OK: {_count(self.chain.reports, 'report')}, chain intact{anchored}{signed}"

    def lines(self) -> list[str]:
        lines = [self.summary()]
        if self.store is None:
            return lines
        if not self.store_checked:
            return [*lines, f"storage not checked: the chain is broken ({self.store})"]
        lines += [f.line() for f in self.findings if f.kind == "mismatch"]
        lines += [f.line() for f in self.late]
        wrong = [f for f in self.findings if f.kind == "mismatch"]
        late = self.late
        late_text = (
            f"{len({f.index for f in late})} with late data: "
            f"{_count(sum(f.readings for f in late), 'reading')}, "
            f"{math.fsum(f.tco2e for f in late):.6f} tCO2e"
            if late
            else "none with late data"
        )
        if wrong:
            reports = len({f.index for f in wrong if f.index is not None})
            where = (
                f"in {reports} of {_count(self.reports, 'report')}" if reports else "in the journal"
            )
            lines.append(f"MISMATCH: {_count(len(wrong), 'finding')} {where} against {self.store}")
        else:
            lines.append(
                f"OK: every report re-derives from {self.store}: tCO2e, readings, "
                f"decisions, subsidies, abatement and transfers "
                f"({_count(self.reports, 'report')}, {late_text})"
            )
        return lines

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reports": self.reports,
            "broken_at": self.chain.broken_at,
            "reason": self.chain.reason,
            "signed": self.chain.signed,
            "key_id": self.chain.key_id,
            "anchored": self.anchor is not None
            and self.chain.ok
            and not any(f.field == "anchor" for f in self.findings),
            "store_checked": self.store_checked,
            "mismatches": sum(f.kind == "mismatch" for f in self.findings),
            "late_reports": len({f.index for f in self.late}),
            "late_readings": sum(f.readings for f in self.late),
            "late_tco2e": math.fsum(f.tco2e for f in self.late),
            "findings": [f.as_json() for f in self.findings],
            "lines": self.lines(),
        }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def window(start_ms: int, end_ms: int) -> str:
    return f"{format_timestamp(start_ms)} to {format_timestamp(end_ms)}"


def verify_journal(
    journal: Journal,
    *,
    key: Ed25519PublicKey | None = None,
    anchor: Anchor | None = None,
    anchor_must_be_signed: bool = False,
    store: Store | None = None,
) -> Verification:
    """Check the journal's ledger: the chain, every signature (with ``key``), the
    ``anchor`` (signed, when ``anchor_must_be_signed`` and there is a key: one read from
    the broker), and with ``store`` every report re-derived."""
    check = journal.ledger.verify(None if anchor is None else anchor.pair, key=key)
    findings: list[Finding] = []
    if anchor is not None and anchor_must_be_signed and key is not None:
        problem = _anchor_problem(anchor, key)
        if problem is not None:
            findings.append(Finding("broken", None, "anchor", problem))
    name = None if store is None else store.url
    if store is None or not check.ok:
        return Verification(check, anchor, name, False, tuple(findings))
    trusted = check.signed
    findings += _Rederivation(journal, store, trusted=trusted).run()
    return Verification(check, anchor, name, True, tuple(findings))


def _anchor_problem(anchor: Anchor, key: Ed25519PublicKey) -> str | None:
    if anchor.signature is None:
        return "the anchor is unsigned, yet the reports are: it may not be the coordinator's"
    if not anchor_signature_ok(key, anchor.next_index, anchor.head, anchor.signature):
        return f"the anchor's signature does not verify with key {key_id(key)}"
    return None


# --- re-deriving -----------------------------------------------------------------------------


@dataclass
class _Period:
    """One period row re-derived: the record the gate would have aggregated, what
    does not hold in it, and X at its end (where the next period must start)."""

    row: PeriodRow
    record: PeriodRecord | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (field, message)
    x_end: float | None = None


class _Rederivation:
    def __init__(self, journal: Journal, store: Store, *, trusted: bool) -> None:
        self._journal = journal
        self._store = store
        self._trusted = trusted
        self._findings: list[Finding] = []

    def run(self) -> list[Finding]:
        try:
            rows = self._journal.period_rows()
        except (ValueError, sqlite3.DatabaseError) as exc:
            return [Finding("mismatch", None, "periods", f"cannot be read: {exc}")]
        by_plant: dict[str, list[PeriodRow]] = {}
        for row in rows:
            by_plant.setdefault(row.plant, []).append(row)
        periods = {
            (row.plant, row.start_ms): derived
            for plant_rows in by_plant.values()
            for row, derived in zip(plant_rows, _derive_plant(plant_rows), strict=True)
        }
        for entry in self._journal.ledger.entries():
            body = entry["body"]
            if body is None:  # the chain walk refuses these already
                continue
            plant_rows = by_plant.get(body["plant"], [])
            chosen = [
                periods[(r.plant, r.start_ms)]
                for r in plant_rows
                if r.start_ms >= body["period_start_ms"] and r.end_ms <= body["period_end_ms"]
            ]
            self._report(int(entry["index"]), body, chosen)
        return self._findings

    def _add(
        self, kind: Kind, index: int, body: Mapping[str, Any], what: str, message: str, **extra: Any
    ) -> None:
        self._findings.append(
            Finding(
                kind,
                index,
                what,
                message,
                body["plant"],
                body["period_start_ms"],
                body["period_end_ms"],
                **extra,
            )
        )

    def _report(self, index: int, body: Mapping[str, Any], periods: list[_Period]) -> None:
        def add(what: str, message: str) -> None:
            self._add("mismatch", index, body, what, message)

        if not periods:
            add(
                "periods",
                "the journal holds no period rows for this window: nothing to re-derive it "
                "from (a ledger without its journal, or rows removed)",
            )
            return
        rows = [p.row for p in periods]
        gaps = _gaps(rows, body["period_start_ms"], body["period_end_ms"])
        if gaps:
            add("periods", f"the period rows do not cover the window: {gaps}")
        committed = "periods_sha256" in body
        if committed and body["periods_sha256"] != periods_digest([r.digest() for r in rows]):
            committed = False
            add(
                "periods",
                "the journal's period rows are not those the report was made from "
                "(their digest differs from the report's periods_sha256)",
            )
        for period in periods:
            for what, message in period.problems:
                at = window(period.row.start_ms, period.row.end_ms)
                add(what, f"period {at}: {message}")
        self._storage(index, body, rows, committed=committed)
        records = [p.record for p in periods if p.record is not None]
        if len(records) < len(periods):
            return  # the period problems above say why
        level = body.get("sharing")
        if level is None:
            add("sharing", "missing: which fields the report should carry is unknown")
            return
        expected = aggregate(records, SharingLevel(level))
        _apply_payment(expected, body, add)
        for what, message in _differences(body, expected, level):
            add(what, message)

    def _storage(
        self, index: int, body: Mapping[str, Any], rows: Sequence[PeriodRow], *, committed: bool
    ) -> None:
        """Each period's tCO2e and readings against the store; late readings listed."""
        groups: dict[tuple[str | None, str | None], list[PeriodRow]] = {}
        for row in rows:
            groups.setdefault((row.factor_set, row.factor_version), []).append(row)
        for (factor_set, version), group in groups.items():
            first, after = readings_ending_in(group[0].start_ms, group[-1].end_ms)
            frame = self._store.emissions(
                body["plant"],
                start_ms=first,
                end_ms=after,
                factor_set=factor_set,
                factor_version=version,
            )
            times = _ms(frame["time"]) if len(frame) else pd.Series(dtype="int64")
            for row in group:
                inside = (times > row.start_ms) & (times <= row.end_ms)  # as it was read
                self._period_storage(
                    index, body, row, frame[inside], times[inside], committed=committed
                )

    def _period_storage(
        self,
        index: int,
        body: Mapping[str, Any],
        row: PeriodRow,
        frame: pd.DataFrame,
        times: pd.Series,
        *,
        committed: bool,
    ) -> None:
        """One period: ``frame`` and ``times`` hold the stored readings that end in it."""
        at = window(row.start_ms, row.end_ms)
        keys = list(zip(frame["meter"].astype(str), times, strict=True))
        if row.counted is None:  # a row from before late data was told apart
            counted = pd.Series(True, index=frame.index, dtype=bool)
            missing = 0
        else:
            wanted = {(m, t) for m, runs in row.counted.items() for t in expand_runs(runs)}
            counted = pd.Series([k in wanted for k in keys], index=frame.index, dtype=bool)
            missing = len(wanted - {k for k, c in zip(keys, counted, strict=True) if c})
        readings = int(counted.sum())
        tco2e = math.fsum(frame.loc[counted, "co2e_kg"]) / KG_PER_T
        if missing or readings != row.readings or not _close(tco2e, row.tco2e):
            gone = f"; {missing} of the readings counted are no longer stored" if missing else ""
            self._add(
                "mismatch",
                index,
                body,
                "reported_tco2e",
                f"period {at} counted {row.readings} readings, {row.tco2e:.6f} t; storage "
                f"holds {readings} readings, {tco2e:.6f} t of those{gone} (factor set "
                f"{row.factor_set} {row.factor_version})",
            )
        late = ~counted
        if not late.any():
            return
        late_t = math.fsum(frame.loc[late, "co2e_kg"]) / KG_PER_T
        meters = _late_meters(frame[late], times[late])
        message = (
            f"period {at}: {int(late.sum())} readings, {late_t:.6f} tCO2e stored after the "
            f"report ({meters})"
        )
        if self._trusted and committed:
            self._add("late", index, body, "readings", message, readings=int(late.sum()),
                      tco2e=late_t)  # fmt: skip
        else:
            why = (
                "the report does not commit to its period rows"
                if self._trusted
                else "without a checked signature (--public-key) readings left out cannot "
                "be told from late ones"
            )
            self._add("mismatch", index, body, "readings", f"{message}, not counted: {why}")


def _derive_plant(rows: Sequence[PeriodRow]) -> list[_Period]:
    """Re-derive one plant's periods in time order, following X from one to the next."""
    derived = []
    previous: _Period | None = None
    for row in rows:
        period = _derive(row)
        if period.record is not None and row.x_start is not None:
            if previous is not None and previous.row.policy == row.policy:
                expected, after = previous.x_end, "the period before ends"
            else:  # a run starts from the policy's X0
                expected, after = _params(row).X0, "a new run starts from X0 ="
            if expected is not None and not _close(row.x_start, expected):
                period.problems.append(
                    ("projected_abatement", f"X at its start is {row.x_start:.9g}; {after} "
                     f"{expected:.9g}")
                )  # fmt: skip
        derived.append(period)
        previous = period
    return derived


def _params(row: PeriodRow) -> CoordinationParams:
    return CoordinationParams.model_validate(
        {k: v for k, v in row.parameters.items() if not k.startswith(_SOURCE_PREFIX)}
    )


def _derive(row: PeriodRow) -> _Period:
    period = _Period(row)
    missing = [
        name
        for name in ("stage_name", "x_start", "model_periods", "factor_set", "counted")
        if getattr(row, name) is None
    ]
    if missing:
        period.problems.append(
            ("periods", f"the row lacks {', '.join(missing)} (a journal from before they "
             "were recorded): it cannot be re-derived")
        )  # fmt: skip
        return period
    try:
        params = _params(row)
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        period.problems.append(("parameters", f"not a parameter set: {problem}"))
        return period
    if row.x_start is None or row.model_periods is None or row.stage_name is None:
        return period  # listed as missing above; this tells the type checker too
    result = recorded_decision(row.stage, params, row.subsidy_rate_firm, row.subsidy_rate_platform)
    problems = period.problems
    if row.stage == 2:
        for what, theta in (("subsidy_rate_firm", row.subsidy_rate_firm),
                            ("subsidy_rate_platform", row.subsidy_rate_platform)):  # fmt: skip
            if not -ABSOLUTE_TOLERANCE <= theta <= params.theta_max + ABSOLUTE_TOLERANCE:
                problems.append((what, f"{theta:.9g} is outside 0 ... theta_max "
                                       f"{params.theta_max:.9g}"))  # fmt: skip
    # Stage 2's name also says whether the budget was binding, which only the
    # government's decision knows.
    if row.stage == 2:
        name_ok = row.stage_name.startswith(STAGE_NAMES[2])
    else:
        name_ok = row.stage_name == result.name
    if not name_ok:
        problems.append(("stage_name", f"{row.stage_name!r} is not stage {row.stage}'s name"))
    outcome = period_outcome(params, result, row.x_start, row.x_observed, row.model_periods)
    for what, recorded, derived in (
        ("effort_firm", row.effort_firm, result.E_M),
        ("effort_platform", row.effort_platform, result.E_P),
        ("sigma", row.sigma, result.sigma),
        ("subsidy_rate_firm", row.subsidy_rate_firm, result.theta_M),
        ("subsidy_rate_platform", row.subsidy_rate_platform, result.theta_P),
        ("projected_abatement", row.x_projected, outcome.x_mean),
    ):
        if not _close(recorded, derived):
            problems.append((what, f"recorded {recorded:.9g}; the parameters give {derived:.9g}"))
    period.x_end = outcome.x_end
    period.record = period_record(row, result, outcome, params.model_dump())
    return period


def _apply_payment(expected: dict[str, Any], body: Mapping[str, Any], add: Any) -> None:
    """Stage 2: the government pays claims within its budget (``Government.receive``):
    it may pay less than claimed, never more, and firm and platform get the same share
    of their claims. The budget itself is in the policy file, not in the journal."""
    if expected["stage"] != 2:
        return
    claimed = -float(expected["transfers"]["G"])
    paid = -float(body["transfers"]["G"])
    if claimed <= 0:
        return
    if paid < -ABSOLUTE_TOLERANCE or paid > claimed * (1 + RELATIVE_TOLERANCE) + ABSOLUTE_TOLERANCE:
        add(
            "transfers.G",
            f"the government paid {paid:.9g} on claims that re-derive to {claimed:.9g}",
        )
        return
    expected["transfers"] = scaled_transfers(expected["transfers"], paid, claimed)
    if "subsidy_paid" in expected:
        expected["subsidy_paid"] = paid


def _differences(
    body: Mapping[str, Any], expected: Mapping[str, Any], level: str
) -> Iterable[tuple[str, str]]:
    for name in sorted((set(body) | set(expected)) - _OWN_CHECK):
        if name not in expected:
            yield name, f"the report carries it, but a {level} report does not share it"
        elif name not in body:
            yield name, f"missing (a {level} report shares it)"
        else:
            yield from _compare(name, body[name], expected[name])


def _compare(name: str, reported: Any, derived: Any) -> Iterable[tuple[str, str]]:
    if isinstance(derived, Mapping):
        if not isinstance(reported, Mapping):
            yield name, f"report {reported!r:.60}, re-derived an object"
            return
        for key in sorted(set(reported) | set(derived)):
            if key not in derived:
                yield f"{name}.{key}", "the report carries it; the re-derivation has none"
            elif key not in reported:
                yield f"{name}.{key}", f"missing; re-derived {derived[key]!r:.60}"
            else:
                yield from _compare(f"{name}.{key}", reported[key], derived[key])
        return
    if isinstance(derived, float) and isinstance(reported, int | float):
        if not _close(float(reported), derived):
            unit = _UNITS.get(name, "")
            yield name, f"report {reported:.9g}{unit}, re-derived {derived:.9g}{unit}"
        return
    if reported != derived:
        unit = _UNITS.get(name, "")
        yield name, f"report {reported!r:.60}{unit}, re-derived {derived!r:.60}{unit}"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)


def _gaps(rows: Sequence[PeriodRow], start_ms: int, end_ms: int) -> str:
    edges = [start_ms, *(x for r in rows for x in (r.start_ms, r.end_ms)), end_ms]
    holes = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if a != b]
    return ", ".join(window(a, b) if a < b else f"overlap at {format_timestamp(b)}"
                     for a, b in holes)  # fmt: skip


def _ms(times: pd.Series) -> pd.Series:
    """Epoch milliseconds of a datetime series, whatever its resolution."""
    ms: pd.Series = times.dt.as_unit("ms").astype("int64")
    return ms


def _late_meters(late: pd.DataFrame, times: pd.Series) -> str:
    """Which meters' readings came late, and when they were taken: meters with the same
    count and span are named together (an agent's outage delays them all alike)."""
    spans: dict[tuple[int, int, int], list[str]] = {}
    for meter, group in times.groupby(late["meter"]):
        spans.setdefault((len(group), int(group.min()), int(group.max())), []).append(str(meter))
    parts = []
    for (count, first, last), meters in sorted(spans.items(), key=lambda kv: kv[0][1:]):
        span = format_timestamp(first) if first == last else window(first, last)
        parts.append(f"{', '.join(sorted(meters))}: {count} each, {span}")
    return "; ".join(parts)
