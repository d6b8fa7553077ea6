"""Solve every stage and split for one parameter set, and render it as plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from carbonlink.coordination.model._cooperative import Split, nash_bargaining, shapley
from carbonlink.coordination.model._core import CoreSplit, core_split, settlement_reason
from carbonlink.coordination.model._money import UNDECLARED, MoneyUnit
from carbonlink.coordination.model._params import PARTIES, CoordinationParams
from carbonlink.coordination.model._stages import (
    StageResult,
    stage1_nash,
    stage2_government,
    stage3_joint,
)

__all__ = ["Solution", "solve"]


@dataclass(frozen=True)
class Solution:
    """Stages 1-3 (stage 2 welfare-maximising, plus its budget-only variant) and the
    stage-3 splits for one parameter set."""

    params: CoordinationParams
    stage1: StageResult
    stage2: StageResult
    stage2_budget: StageResult
    stage3: StageResult
    shapley: Split
    nash: Split
    core: CoreSplit
    money: MoneyUnit = UNDECLARED

    @property
    def stages(self) -> tuple[StageResult, StageResult, StageResult]:
        return self.stage1, self.stage2, self.stage3

    @property
    def settling(self) -> Split:
        """The split stage 3 settles on: the core split where it exists, else Shapley."""
        return self.core.split if self.core.split is not None else self.shapley

    @property
    def settlement(self) -> str:
        """Which split settles, and why (``settlement_reason``)."""
        return settlement_reason(self.core, self.shapley)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: parameters, stages, and each split's values and linear shares."""

        def split_dict(split: Split) -> dict[str, Any]:
            return {
                "values": split.values,
                "total": split.total,
                "shares": {
                    s.party: {"slope": s.slope, "intercept": s.intercept} for s in split.shares
                },
            }

        core = self.core
        floors = {i: core.floors[i] for i in PARTIES}
        core_dict: dict[str, Any] = (
            split_dict(core.split) | {"floors": floors, "slack": -core.shortfall}
            if core.split is not None
            else {
                "values": None,
                "floors": floors,
                "total": core.total,
                "infeasible": core.infeasible,
                "shortfall": core.shortfall,
            }
        )
        return {
            "params": self.params.model_dump(),
            "money": self.money.as_record(),
            "stages": [asdict(s) for s in self.stages],
            "stage2_budget": asdict(self.stage2_budget),
            "splits": {
                "shapley": split_dict(self.shapley),
                "nash": split_dict(self.nash),
                "core": core_dict,
            },
            "settlement": {"split": self.settling.method, "why": self.settlement},
        }


def solve(p: CoordinationParams, money: MoneyUnit = UNDECLARED) -> Solution:
    """Everything ``carbonlink policy solve`` reports (coordination-model.md, Stages 1-3)."""
    return Solution(
        params=p,
        stage1=stage1_nash(p),
        stage2=stage2_government(p, "welfare"),
        stage2_budget=stage2_government(p, "budget"),
        stage3=stage3_joint(p),
        shapley=shapley(p),
        nash=nash_bargaining(p),
        core=core_split(p),
        money=money,
    )
