"""Solve every stage and split for one parameter set, and render it as plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from carbonlink.coordination._cooperative import Split, nash_bargaining, shapley
from carbonlink.coordination._params import CoordinationParams
from carbonlink.coordination._stages import (
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

    @property
    def stages(self) -> tuple[StageResult, StageResult, StageResult]:
        return self.stage1, self.stage2, self.stage3

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

        return {
            "params": self.params.model_dump(),
            "stages": [asdict(s) for s in self.stages],
            "stage2_budget": asdict(self.stage2_budget),
            "splits": {"shapley": split_dict(self.shapley), "nash": split_dict(self.nash)},
        }


def solve(p: CoordinationParams) -> Solution:
    """Everything ``carbonlink policy solve`` reports (coordination-model.md, Stages 1-3)."""
    return Solution(
        params=p,
        stage1=stage1_nash(p),
        stage2=stage2_government(p, "welfare"),
        stage2_budget=stage2_government(p, "budget"),
        stage3=stage3_joint(p),
        shapley=shapley(p),
        nash=nash_bargaining(p),
    )
