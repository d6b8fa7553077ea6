"""What reaches the government in each stage: granularity, delay and content.

coordination-model.md names the stages' sharing in words: primary neutrality shares
periodic self-reported totals, intermediate dependence verified periodic reports and
subsidy claims, advanced symbiosis live shared aggregates and joint decisions. Here that
becomes a :class:`SharingRule` per stage (a policy file may override each), and the
:class:`SharingGate` that enforces it: the coordinator hands it full per-period records,
and the government receives only what the gate releases, aggregated to the rule's
window, after its delay, with the fields its level allows.

R (relational availability) follows from the rule: each level is worth a fixed share of
full sharing (``RELATIONAL_AVAILABILITY``, our assumption), for the plants that share.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final

from carbonlink.coordination._ledger import digest_of
from carbonlink.coordination.model import PARTIES, Party

__all__ = [
    "DEFAULT_SHARING",
    "FIELDS_BY_LEVEL",
    "RELATIONAL_AVAILABILITY",
    "PeriodRecord",
    "SharingGate",
    "SharingLevel",
    "SharingRule",
    "periods_digest",
    "relational_availability",
]


class SharingLevel(StrEnum):
    """What reaches the government (our scale, ordered)."""

    NONE = "none"
    SELF_REPORTED = "self_reported"  # periodic self-reported totals
    VERIFIED = "verified"  # verified reports and subsidy claims
    LIVE = "live"  # live aggregates
    JOINT = "joint"  # live aggregates and the joint decisions' parameters


#: Our assumption, not the spec's: R rises in equal steps with each tier of sharing,
#: from nothing (0) to live data plus joint decision making (1).
RELATIONAL_AVAILABILITY: Final[Mapping[SharingLevel, float]] = {
    SharingLevel.NONE: 0.0,
    SharingLevel.SELF_REPORTED: 0.25,
    SharingLevel.VERIFIED: 0.5,
    SharingLevel.LIVE: 0.75,
    SharingLevel.JOINT: 1.0,
}

# Every report carries these: who, when, under what, the money that moved (the ledger
# must balance whatever is shared), and the digest of the period rows it was made from,
# so the journal's record of them can be checked against the signed report (it reveals
# nothing of them).
_ALWAYS: Final = frozenset(
    {"period_start_ms", "period_end_ms", "plant", "policy", "stage", "stage_name",
     "sharing", "verified", "transfers", "money", "periods_sha256"}
)  # fmt: skip
_SELF_REPORTED: Final = _ALWAYS | {"reported_tco2e"}
_VERIFIED: Final = _SELF_REPORTED | {
    "readings", "factor_set", "factor_version", "effort_firm", "effort_platform",
    "subsidy_rate_firm", "subsidy_rate_platform", "subsidy_claimed", "subsidy_paid",
}  # fmt: skip
_LIVE: Final = _VERIFIED | {"sigma", "projected_abatement", "observed_abatement", "carbon_price"}
FIELDS_BY_LEVEL: Final[Mapping[SharingLevel, frozenset[str]]] = {
    SharingLevel.NONE: _ALWAYS,
    SharingLevel.SELF_REPORTED: _SELF_REPORTED,
    SharingLevel.VERIFIED: _VERIFIED,
    SharingLevel.LIVE: _LIVE,
    SharingLevel.JOINT: _LIVE | {"parameters", "split"},
}


def relational_availability(
    level: SharingLevel,
    shared: Collection[str] | None = None,
    all_items: Collection[str] | None = None,
) -> float:
    """R = tier value of ``level`` x share of ``all_items`` that are in ``shared``
    (coordination-model.md, "Feeding the model from the stream"); without ``all_items``
    coverage is taken as full."""
    tier = RELATIONAL_AVAILABILITY[level]
    if not all_items:
        return tier
    covered = len(set(all_items) & set(shared or ()))
    return tier * covered / len(set(all_items))


@dataclass(frozen=True)
class SharingRule:
    """One stage's sharing: ``level`` of detail, aggregated over windows of ``every_s``
    (None: every coordinator period), reaching the government ``delay_s`` after each
    window ends. ``plants`` (None: all) are those that share at ``level``; the others
    share only self-reported totals."""

    level: SharingLevel
    every_s: float | None = None
    delay_s: float = 0.0
    plants: frozenset[str] | None = None

    def level_for(self, plant: str) -> SharingLevel:
        if self.plants is None or plant in self.plants:
            return self.level
        return min(self.level, SharingLevel.SELF_REPORTED, key=_rank)

    def relational_availability(self, plant: str) -> float:
        return RELATIONAL_AVAILABILITY[self.level_for(plant)]


def _rank(level: SharingLevel) -> int:
    return list(SharingLevel).index(level)


#: Defaults, our reading of the spec's words (a policy's ``sharing`` block overrides):
#: daily self-reported totals an hour after the day; hourly verified reports after a
#: quarter hour of verification; live per-period aggregates with no delay.
DEFAULT_SHARING: Final[Mapping[int, SharingRule]] = {
    1: SharingRule(SharingLevel.SELF_REPORTED, every_s=86_400.0, delay_s=3_600.0),
    2: SharingRule(SharingLevel.VERIFIED, every_s=3_600.0, delay_s=900.0),
    3: SharingRule(SharingLevel.JOINT, every_s=None, delay_s=0.0),
}


@dataclass(frozen=True)
class PeriodRecord:
    """Everything the coordinator knows of one plant's period: more than the
    government may see. Amounts (tCO2e, subsidies, transfers) are totals over the
    period; rates and efforts held constant through it."""

    period_start_ms: int
    period_end_ms: int
    plant: str
    policy: str
    stage: int
    stage_name: str
    reported_tco2e: float
    readings: int
    factor_set: str
    factor_version: str
    effort_firm: float
    effort_platform: float
    sigma: float
    subsidy_rate_firm: float
    subsidy_rate_platform: float
    subsidy_claimed: float
    carbon_price: float
    projected_abatement: float
    observed_abatement: float | None
    transfers: Mapping[Party, float]
    parameters: Mapping[str, float] = field(default_factory=dict)
    #: The money unit of every amount (``MoneyUnit.label``), and which split settled
    #: stage 3 (``core``, or ``shapley`` where no core split exists); "" otherwise.
    money: str = ""
    split: str = ""
    row_sha256: str = ""  # the journal row of this period (PeriodRow.digest); "": none


_MEANS: Final = (
    "effort_firm", "effort_platform", "sigma", "subsidy_rate_firm", "subsidy_rate_platform",
    "carbon_price",
)  # fmt: skip
_SUMS: Final = ("reported_tco2e", "readings", "subsidy_claimed")


@dataclass
class _Window:
    start_ms: int
    end_ms: int  # where it closes at the latest
    rule: SharingRule
    records: list[PeriodRecord]


def _aligned_end(start_ms: int, every_s: float | None, period_end_ms: int) -> int:
    if every_s is None:
        return period_end_ms
    every_ms = round(every_s * 1000)
    return (start_ms // every_ms + 1) * every_ms


def aggregate(records: list[PeriodRecord], level: SharingLevel) -> dict[str, Any]:
    """One report body from a window's records: sums of amounts, time-weighted means of
    rates, the last state; then only the fields ``level`` shares."""
    first, last = records[0], records[-1]
    weights = [max(r.period_end_ms - r.period_start_ms, 1) for r in records]
    total_weight = sum(weights)
    body: dict[str, Any] = {
        "period_start_ms": first.period_start_ms,
        "period_end_ms": last.period_end_ms,
        "plant": first.plant,
        "policy": last.policy,
        "stage": last.stage,
        "stage_name": last.stage_name,
        "sharing": str(level),
        "verified": _rank(level) >= _rank(SharingLevel.VERIFIED),
        "factor_set": last.factor_set,
        "factor_version": last.factor_version,
        "projected_abatement": last.projected_abatement,
        "observed_abatement": last.observed_abatement,
        "parameters": dict(last.parameters),
        "money": last.money,
        "split": last.split,
        "transfers": {p: math.fsum(r.transfers[p] for r in records) for p in PARTIES},
    }
    for name in _SUMS:
        body[name] = math.fsum(getattr(r, name) for r in records)
    body["readings"] = int(body["readings"])
    for name in _MEANS:
        body[name] = (
            math.fsum(getattr(r, name) * w for r, w in zip(records, weights, strict=True))
            / total_weight
        )
    # What was paid is what the transfers say the government gave (stage 2).
    body["subsidy_paid"] = -body["transfers"]["G"] if last.stage == 2 else 0.0
    if all(r.row_sha256 for r in records):
        body["periods_sha256"] = periods_digest([r.row_sha256 for r in records])
    allowed = FIELDS_BY_LEVEL[level]
    # Empty strings are fields a record had no value for (no split outside stage 3, no
    # money unit in a record restored from before it existed): left out, like None.
    return {k: v for k, v in body.items() if k in allowed and v is not None and v != ""}


def periods_digest(row_digests: list[str]) -> str:
    """What a report commits to: the digest of its period rows' digests, in order."""
    return digest_of(row_digests)


class SharingGate:
    """Turns per-period records into the reports the government receives.

    Records of one plant are collected into a window by the stage's rule; a window
    closes when a record reaches its aligned end (``every``), when the stage changes,
    or on :meth:`flush`. A closed window becomes a report body due ``delay`` after its
    end; :meth:`due` hands out the bodies whose time has come, oldest first.
    """

    def __init__(self, rules: Mapping[int, SharingRule]) -> None:
        self._rules = dict(rules)
        self._open: dict[str, _Window] = {}
        self._pending: list[tuple[int, int, dict[str, Any]]] = []  # (release, order, body)
        self._order = 0

    def rule(self, stage: int) -> SharingRule:
        return self._rules[stage]

    def add(self, records: Iterable[PeriodRecord]) -> None:
        for record in records:
            window = self._open.get(record.plant)
            rule = self._rules[record.stage]
            if window is not None and window.records[-1].stage != record.stage:
                self._close(record.plant)
                window = None
            if window is None:
                end = _aligned_end(record.period_start_ms, rule.every_s, record.period_end_ms)
                window = _Window(record.period_start_ms, end, rule, [])
                self._open[record.plant] = window
            window.records.append(record)
            if record.period_end_ms >= window.end_ms:
                self._close(record.plant)

    def flush(self) -> None:
        """Close every open window now (a run's end)."""
        for plant in list(self._open):
            self._close(plant)

    def due(self, now_ms: int) -> list[dict[str, Any]]:
        ready = sorted(p for p in self._pending if p[0] <= now_ms)
        self._pending = [p for p in self._pending if p[0] > now_ms]
        return [body for _, _, body in ready]

    @property
    def pending(self) -> int:
        """Reports not yet released, counting windows still open."""
        return len(self._pending) + len(self._open)

    def _close(self, plant: str) -> None:
        window = self._open.pop(plant)
        level = window.rule.level_for(plant)
        body = aggregate(window.records, level)
        release = window.records[-1].period_end_ms + round(window.rule.delay_s * 1000)
        self._pending.append((release, self._order, body))
        self._order += 1

    # --- persistence: a restarted coordinator picks up open windows and pending reports

    def snapshot(self) -> dict[str, Any]:
        return {
            "open": {
                plant: {
                    "start_ms": w.start_ms,
                    "end_ms": w.end_ms,
                    "records": [asdict(r) for r in w.records],
                }
                for plant, w in self._open.items()
            },
            "pending": [list(p) for p in self._pending],
            "order": self._order,
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        self._open = {}
        for plant, window in snapshot.get("open", {}).items():
            records = [PeriodRecord(**r) for r in window["records"]]
            rule = self._rules[records[-1].stage]
            self._open[plant] = _Window(window["start_ms"], window["end_ms"], rule, records)
        self._pending = [(int(r), int(o), dict(b)) for r, o, b in snapshot.get("pending", [])]
        self._order = int(snapshot.get("order", 0))
