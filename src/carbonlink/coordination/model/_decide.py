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

from carbonlink.coordination.model._budget import budget_rates, spending
from carbonlink.coordination.model._params import CoordinationParams
from carbonlink.coordination.model._stages import (
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
    fixed_rates: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, StageResult]:
    """Each plant's stage result for the coming period.

    ``budget_per_s`` bounds stage-2 subsidies across all plants, in money per second;
    ``period_s`` is each plant's model period (to convert its per-period spending).
    ``fixed_rates`` are stage-2 rates (theta_M, theta_P) a differentiated policy sets
    for some plants: they are paid as set, count against the budget first, and the
    government optimises the other plants' rates within what is left.
    """
    if stage == 1:
        return {plant: stage1_nash(p) for plant, p in firm_params.items()}
    if stage == 3:
        return {plant: stage3_joint(p) for plant, p in firm_params.items()}
    fixed = dict(fixed_rates or {})
    plants = [plant for plant in firm_params if plant not in fixed]
    view = government_params if government_params is not None else firm_params
    seconds = {plant: (period_s or {}).get(plant, 1.0) for plant in firm_params}
    committed = sum(spending(view[plant], *fixed[plant]) / seconds[plant] for plant in fixed)
    rates = budget_rates(
        [view[plant] for plant in plants],
        objective,
        budget=None if budget_per_s is None else max(0.0, budget_per_s - committed),
        weights=[1.0 / seconds[plant] for plant in plants],
    )
    name = STAGE_NAMES[2] if objective == "welfare" else f"{STAGE_NAMES[2]} ({BUDGET_VARIANT})"
    if rates.binding:
        name += " (budget binding)"
    results = {
        plant: subsidised_stage(firm_params[plant], 2, rates.theta_M[i], rates.theta_P[i], name)
        for i, plant in enumerate(plants)
    }
    for plant, (theta_m, theta_p) in fixed.items():
        results[plant] = subsidised_stage(
            firm_params[plant], 2, theta_m, theta_p, f"{STAGE_NAMES[2]} (fixed rates)"
        )
    return {plant: results[plant] for plant in firm_params}
