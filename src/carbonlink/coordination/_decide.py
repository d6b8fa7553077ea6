"""One period's decisions for every plant under a stage: the single place where the
coordinator, the shadow policies and the backtest turn parameters into efforts.

Who decides, and on what they know (docs/coordination.md, "Who knows what"):
- stage 1: each firm and the platform choose their own Nash efforts on their own
  parameters (``firm_params``: what they estimate from their own stream);
- stage 2: the government sets subsidy rates on *its* view of the parameters
  (``government_params``: only what the sharing rules let it see) and its budget, and
  the firms best-respond on their own parameters;
- stage 3: joint decisions on the shared parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

from carbonlink.coordination._budget import budget_rates
from carbonlink.coordination._params import CoordinationParams
from carbonlink.coordination._stages import (
    BUDGET_VARIANT,
    STAGE_NAMES,
    GovernmentObjective,
    StageResult,
    stage1_nash,
    stage3_joint,
    subsidised_stage,
)

__all__ = ["decide"]


def decide(
    stage: int,
    firm_params: Mapping[str, CoordinationParams],
    *,
    objective: GovernmentObjective = "welfare",
    government_params: Mapping[str, CoordinationParams] | None = None,
    budget_per_s: float | None = None,
    period_s: Mapping[str, float] | None = None,
) -> dict[str, StageResult]:
    """Each plant's stage result for the coming period.

    ``budget_per_s`` bounds stage-2 subsidies across all plants, in money per second;
    ``period_s`` is each plant's model period (to convert its per-period spending).
    """
    if stage == 1:
        return {plant: stage1_nash(p) for plant, p in firm_params.items()}
    if stage == 3:
        return {plant: stage3_joint(p) for plant, p in firm_params.items()}
    plants = list(firm_params)
    view = government_params if government_params is not None else firm_params
    seconds = [(period_s or {}).get(plant, 1.0) for plant in plants]
    rates = budget_rates(
        [view[plant] for plant in plants],
        objective,
        budget=budget_per_s,
        weights=[1.0 / s for s in seconds],
    )
    name = STAGE_NAMES[2] if objective == "welfare" else f"{STAGE_NAMES[2]} ({BUDGET_VARIANT})"
    if rates.binding:
        name += " (budget binding)"
    return {
        plant: subsidised_stage(firm_params[plant], 2, rates.theta_M[i], rates.theta_P[i], name)
        for i, plant in enumerate(plants)
    }
