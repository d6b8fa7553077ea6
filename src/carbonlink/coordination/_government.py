"""The government's side of the closed loop: it knows only what reaches it.

The coordinator hands the government the reports the sharing gate releases, nothing
else. From them it keeps its picture of each plant (the parameters a report shares at
the joint level, otherwise the policy's), pays stage-2 subsidy claims out of its budget,
and paces the rates it sets so that the budget holds (docs/coordination.md, "Who knows
what").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from carbonlink.coordination._policy import Policy
from carbonlink.coordination.model import PARTIES, CoordinationParams

__all__ = ["Government", "scaled_transfers"]

# Parameter names a joint-level report may share with the government.
_SHARED_PARAMETERS: Final = frozenset(CoordinationParams.model_fields)


@dataclass
class _PlantKnowledge:
    reports: int = 0
    last_end_ms: int | None = None
    reported_tco2e: float = 0.0
    verified_reports: int = 0
    parameters: dict[str, float] = field(default_factory=dict)


@dataclass
class Government:
    policy: Policy
    spent: float = 0.0  # subsidies paid on received claims
    outstanding: float = 0.0  # claims of periods decided but not yet reported
    unpaid: float = 0.0  # claims refused because the budget ran out
    plants: dict[str, _PlantKnowledge] = field(default_factory=dict)

    def expect(self, claimed: float) -> None:
        """A period with this stage-2 claim was decided; its report is still to come."""
        self.outstanding += claimed

    def receive(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Take in one released report; returns it with the claims actually paid."""
        report = dict(body)
        if report["stage"] == 2:
            claimed = -float(report["transfers"]["G"])  # what the claims amount to
            self.outstanding = max(0.0, self.outstanding - claimed)
            paid = self._payable(claimed)
            self.spent += paid
            self.unpaid += claimed - paid
            report["transfers"] = scaled_transfers(report["transfers"], paid, claimed)
            if "subsidy_paid" in report or "subsidy_claimed" in report:
                report["subsidy_paid"] = paid
        knowledge = self.plants.setdefault(report["plant"], _PlantKnowledge())
        knowledge.reports += 1
        knowledge.last_end_ms = int(report["period_end_ms"])
        knowledge.reported_tco2e += float(report.get("reported_tco2e", 0.0))
        knowledge.verified_reports += int(bool(report.get("verified")))
        shared = report.get("parameters")
        if isinstance(shared, Mapping):
            known = {k: float(v) for k, v in shared.items() if k in _SHARED_PARAMETERS}
            # The joint decision's parameters include the carbon price in force
            # (with_carbon_price); the government keeps them without it, since it adds
            # the price in force when it decides.
            price = float(report.get("carbon_price", 0.0))
            if price and {"m_M", "g"} <= set(known):
                known["m_M"] -= price
                known["g"] += price
            knowledge.parameters = known
        return report

    def view(self, plant: str, prior: CoordinationParams) -> CoordinationParams:
        """What the government believes of ``plant``: the policy's parameters, updated
        by whatever a report shared with it."""
        knowledge = self.plants.get(plant)
        if knowledge is None or not knowledge.parameters:
            return prior
        try:
            return CoordinationParams.model_validate(prior.model_dump() | knowledge.parameters)
        except ValueError:
            return prior

    def budget_per_s(self, step_s: float) -> float | None:
        """Money per second the coming step may commit (None: no budget)."""
        budget = self.policy.budget
        if budget is None or step_s <= 0:
            return None
        return budget.allowance(step_s, self.spent + self.outstanding) / step_s

    def _payable(self, claimed: float) -> float:
        budget = self.policy.budget
        if budget is None or budget.total is None:
            return claimed
        return max(0.0, min(claimed, budget.total - self.spent))

    def summary(self) -> dict[str, Any]:
        budget = self.policy.budget
        return {
            "spent": self.spent,
            "outstanding_claims": self.outstanding,
            "unpaid_claims": self.unpaid,
            "budget_total": None if budget is None else budget.total,
            "budget_remaining": (
                None if budget is None or budget.total is None else budget.total - self.spent
            ),
            "plants": {
                plant: {
                    "reports": k.reports,
                    "verified_reports": k.verified_reports,
                    "last_report_end_ms": k.last_end_ms,
                    "reported_tco2e": k.reported_tco2e,
                    "shared_parameters": sorted(k.parameters),
                }
                for plant, k in sorted(self.plants.items())
            },
        }

    def state(self) -> dict[str, Any]:
        return {
            "spent": self.spent,
            "outstanding": self.outstanding,
            "unpaid": self.unpaid,
            "plants": {
                plant: {
                    "reports": k.reports,
                    "last_end_ms": k.last_end_ms,
                    "reported_tco2e": k.reported_tco2e,
                    "verified_reports": k.verified_reports,
                    "parameters": k.parameters,
                }
                for plant, k in self.plants.items()
            },
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.spent = float(state["spent"])
        self.outstanding = float(state["outstanding"])
        self.unpaid = float(state.get("unpaid", 0.0))
        self.plants = {p: _PlantKnowledge(**k) for p, k in state["plants"].items()}


def scaled_transfers(
    transfers: Mapping[str, float], paid: float, claimed: float
) -> dict[str, float]:
    """Stage-2 transfers when only ``paid`` of ``claimed`` is paid: firms get the same
    share of their claims, the government pays exactly ``paid``; still zero-sum."""
    if claimed <= 0 or math.isclose(paid, claimed):
        return {p: float(transfers[p]) for p in PARTIES}
    share = paid / claimed
    firm, platform = float(transfers["M"]) * share, float(transfers["P"]) * share
    return {"M": firm, "P": platform, "G": -(firm + platform)}
