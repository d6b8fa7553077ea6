"""What reaches the government: the sharing gate's windows, delays and fields, and the
government model that decides only on what it received."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from carbonlink.coordination import (
    DEFAULT_SHARING,
    FIELDS_BY_LEVEL,
    CoordinationParams,
    Government,
    PeriodRecord,
    SharingGate,
    SharingLevel,
    SharingRule,
    decide,
    load_policy,
)
from carbonlink.coordination._sharing import periods_digest
from tests.coordination.conftest import REFERENCE_YAML

HOUR = 3_600_000
QUARTER = HOUR // 4
DAY = 24 * HOUR
START = 1_795_392_000_000  # 2026-11-23T00:00:00Z: days and hours align on it


def record(k: int, stage: int = 1, plant: str = "p", tco2e: float = 10.0) -> PeriodRecord:
    """The k-th quarter hour from START."""
    claimed = 2.0 if stage == 2 else 0.0
    transfers = {"M": 1.5, "P": 0.5, "G": -2.0} if stage == 2 else {"M": 0.0, "P": 0.0, "G": 0.0}
    if stage == 3:
        transfers = {"M": 0.3, "P": 0.2, "G": -0.5}
    return PeriodRecord(
        period_start_ms=START + k * QUARTER, period_end_ms=START + (k + 1) * QUARTER,
        plant=plant, policy="lab", stage=stage, stage_name=f"stage {stage}",
        reported_tco2e=tco2e, readings=75, factor_set="fs", factor_version="v1",
        effort_firm=1.0 + k, effort_platform=0.5, sigma=1.0 if stage < 3 else 1.25,
        subsidy_rate_firm=0.4 if stage == 2 else 0.0, subsidy_rate_platform=0.0,
        subsidy_claimed=claimed, carbon_price=0.0, projected_abatement=float(k),
        observed_abatement=float(k) - 0.1, transfers=transfers, parameters={"a_M": 0.9},
        money="kCNY", split="core" if stage == 3 else "",
        row_sha256=f"{k:064x}",  # stands for the digest of the period's journal row
    )  # fmt: skip


def test_stage_1_shares_daily_totals_an_hour_late() -> None:
    gate = SharingGate(DEFAULT_SHARING)
    gate.add(record(k) for k in range(96))  # one day of quarter hours
    assert gate.due(START + DAY) == []  # the day is over, its report not yet due
    (report,) = gate.due(START + DAY + HOUR)
    assert report["period_start_ms"] == START
    assert report["period_end_ms"] == START + DAY
    assert report["reported_tco2e"] == pytest.approx(960.0)
    assert set(report) == FIELDS_BY_LEVEL[SharingLevel.SELF_REPORTED]
    assert report["verified"] is False
    assert "effort_firm" not in report  # self-reported totals only
    # Self-reported or not, a report commits to the period rows it was made from.
    assert report["periods_sha256"] == periods_digest([f"{k:064x}" for k in range(96)])


def test_stage_2_shares_verified_hourly_reports_with_claims() -> None:
    gate = SharingGate(DEFAULT_SHARING)
    gate.add(record(k, stage=2) for k in range(8))
    released = gate.due(START + 2 * HOUR + QUARTER)  # two hours, each due 15 min after
    assert [r["period_end_ms"] for r in released] == [START + HOUR, START + 2 * HOUR]
    first = released[0]
    assert set(first) == FIELDS_BY_LEVEL[SharingLevel.VERIFIED]
    assert first["verified"] is True
    assert first["readings"] == 300
    assert first["subsidy_claimed"] == pytest.approx(8.0)
    assert first["transfers"] == pytest.approx({"M": 6.0, "P": 2.0, "G": -8.0})
    assert first["effort_firm"] == pytest.approx((1 + 2 + 3 + 4) / 4)  # time-weighted mean
    assert "parameters" not in first
    assert "projected_abatement" not in first


def test_stage_3_shares_every_period_at_once_with_parameters() -> None:
    gate = SharingGate(DEFAULT_SHARING)
    gate.add([record(0, stage=3)])
    (report,) = gate.due(START + QUARTER)
    assert set(report) == FIELDS_BY_LEVEL[SharingLevel.JOINT]
    assert report["parameters"] == {"a_M": 0.9}
    assert report["projected_abatement"] == 0.0


def test_a_stage_switch_closes_the_open_window() -> None:
    gate = SharingGate(DEFAULT_SHARING)
    gate.add([record(k) for k in range(8)] + [record(8, stage=3)])
    released = gate.due(START + 3 * HOUR)  # stage 1's partial day: due an hour after
    assert [(r["stage"], r["period_end_ms"]) for r in released] == [
        (3, START + 9 * QUARTER),
        (1, START + 2 * HOUR),
    ] or [(r["stage"], r["period_end_ms"]) for r in released] == [
        (1, START + 2 * HOUR),
        (3, START + 9 * QUARTER),
    ]
    stage1 = next(r for r in released if r["stage"] == 1)
    assert stage1["reported_tco2e"] == pytest.approx(80.0)


def test_plants_outside_a_rule_share_totals_only() -> None:
    rules = dict(DEFAULT_SHARING) | {3: SharingRule(SharingLevel.LIVE, plants=frozenset({"a"}))}
    gate = SharingGate(rules)
    gate.add([record(0, stage=3, plant="a"), record(0, stage=3, plant="b")])
    reports = {r["plant"]: r for r in gate.due(START + QUARTER)}
    assert set(reports["a"]) == FIELDS_BY_LEVEL[SharingLevel.LIVE]
    assert set(reports["b"]) == FIELDS_BY_LEVEL[SharingLevel.SELF_REPORTED]
    assert rules[3].relational_availability("a") == 0.75
    assert rules[3].relational_availability("b") == 0.25


def test_gate_survives_a_restart() -> None:
    gate = SharingGate(DEFAULT_SHARING)
    gate.add(record(k) for k in range(50))
    gate.add([record(50, stage=2)])  # closes the stage-1 window: pending, not yet due
    copy = SharingGate(DEFAULT_SHARING)
    copy.restore(gate.snapshot())
    later = START + 2 * DAY
    for g in (gate, copy):
        g.add(record(k, stage=2) for k in range(51, 56))
    assert copy.due(later) == gate.due(later)
    assert copy.pending == gate.pending == 0


# --- the government -----------------------------------------------------------------------


def _policy(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.yaml"
    path.write_text(f"name: lab\nparams: {REFERENCE_YAML}\n{body}")
    return load_policy(path)


def test_claims_are_paid_within_the_total_budget(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "stage: 2\nbudget: {amount: 100, per: 1h, total: 10}\n")
    government = Government(policy)
    gate = SharingGate(policy.sharing)
    gate.add(record(k, stage=2) for k in range(8))  # claims of 8 over each hour
    for _k in range(8):
        government.expect(2.0)
    paid = [government.receive(r) for r in gate.due(START + 3 * HOUR)]
    assert [r["subsidy_paid"] for r in paid] == pytest.approx([8.0, 2.0])
    assert government.spent == pytest.approx(10.0)
    assert government.unpaid == pytest.approx(6.0)
    assert government.outstanding == pytest.approx(0.0)
    for report in paid:
        assert sum(report["transfers"].values()) == pytest.approx(0.0, abs=1e-12)
        assert -report["transfers"]["G"] == pytest.approx(report["subsidy_paid"])
    assert government.budget_per_s(900.0) == 0.0  # nothing left to commit


def test_government_decides_on_what_it_was_told(tmp_path: Path) -> None:
    """Stage 2: rates follow the government's view, not the firm's private estimates."""
    policy = _policy(tmp_path, "stage: 2\n")
    prior = policy.params
    firm_knows = prior.model_copy(update={"a_M": 0.5, "m_M": 1.6})  # the firm's own data
    government = Government(policy)
    told = government.view("p", prior)
    assert told == prior  # nothing shared yet: the policy's values
    rates_before = decide(2, {"p": firm_knows}, government_params={"p": told})["p"]
    # A verified (not joint) report carries no parameters: the view does not move.
    gate = SharingGate(policy.sharing)
    gate.add(record(k, stage=2) for k in range(4))
    for report in gate.due(START + 2 * HOUR):
        government.receive(report)
    assert government.view("p", prior) == prior
    rates_after = decide(2, {"p": firm_knows}, government_params={"p": government.view("p", prior)})
    assert rates_after["p"].theta_M == rates_before.theta_M
    # A joint-level report shares parameters, and the government uses them.
    gate.add([record(4, stage=3)])
    for report in gate.due(START + 2 * HOUR):
        government.receive(report)
    assert government.view("p", prior).a_M == 0.9


def test_firms_best_respond_on_their_own_parameters(reference: CoordinationParams) -> None:
    firm = reference.model_copy(update={"a_M": 0.5})
    result = decide(2, {"p": firm}, government_params={"p": reference})["p"]
    expected_theta = decide(2, {"p": reference})["p"].theta_M
    assert result.theta_M == expected_theta  # set by the government on its view
    stage1_firm = decide(1, {"p": firm})["p"].E_M
    assert pytest.approx(stage1_firm / (1 - expected_theta)) == result.E_M


def test_default_rules_follow_the_spec_words() -> None:
    assert DEFAULT_SHARING[1].level is SharingLevel.SELF_REPORTED
    assert DEFAULT_SHARING[2].level is SharingLevel.VERIFIED
    assert DEFAULT_SHARING[3].level is SharingLevel.JOINT
    assert DEFAULT_SHARING[3].every_s is None  # live: every period
    # Each level shares at least what the one below it does.
    levels = list(SharingLevel)
    for lower, higher in itertools.pairwise(levels):
        assert FIELDS_BY_LEVEL[lower] <= FIELDS_BY_LEVEL[higher]
    assert (
        replace(DEFAULT_SHARING[1], plants=frozenset()).level_for("x") is SharingLevel.SELF_REPORTED
    )
