"""Per-period money flows shared by the coordinator, its shadow policies and the backtest."""

from __future__ import annotations

import functools
from dataclasses import replace

from carbonlink.coordination._policy import Policy
from carbonlink.coordination.model import (
    PARTIES,
    CoordinationParams,
    Party,
    Split,
    StageResult,
    effort_cost,
    inflow,
    settle,
    settling_split,
    shapley,
    stage1_nash,
)

__all__ = ["period_transfers", "recorded_transfers", "relational_params", "settlement_split"]


def settlement_split(params: CoordinationParams) -> Split:
    """The split stage 3 settles on (the core split where it exists, else Shapley): the
    one place that chooses it, for the coordinator and for the ledger's verifier that
    re-derives its transfers."""
    return _split_for(params.model_dump_json())


# Parameters change only when an estimate or a stage does: most periods reuse a split.
@functools.lru_cache(maxsize=256)
def _split_for(params_json: str) -> Split:
    return settling_split(CoordinationParams.model_validate_json(params_json))


def period_transfers(
    params: CoordinationParams,
    result: StageResult,
    split: Split | None,
    x: float,
    periods: float,
) -> dict[Party, float]:
    """What each party receives over ``periods`` model periods at abatement ``x``.

    Stage 3: the settlement of ``split`` (entitlement minus own flow). Stage 2: the
    subsidies, theta_i of each effort cost, paid by the government. Stage 1: none.
    Each case sums to zero.
    """
    cost_m = effort_cost(params.k_M, result.E_M)
    cost_p = effort_cost(params.k_P, result.E_P)
    if result.stage == 3:
        if split is None:
            raise ValueError("stage 3 needs the cooperative split to settle")
        realised: dict[Party, float] = {
            "M": params.m_M * x - cost_m,
            "P": params.m_P * x - cost_p,
            "G": params.g * x,
        }
        dx_dt = result.inflow - params.delta * x
        flows = settle(split, params.r, x, dx_dt, realised).transfer
    else:
        paid_m, paid_p = result.theta_M * cost_m, result.theta_P * cost_p
        flows = {"M": paid_m, "P": paid_p, "G": -(paid_m + paid_p)}
    return {party: flows[party] * periods for party in PARTIES}


def recorded_transfers(
    params: CoordinationParams,
    stage: int,
    efforts: tuple[float, float],
    sigma: float,
    rates: tuple[float, float],
    x: float,
    periods: float,
    split_method: str | None = None,
) -> dict[Party, float]:
    """The transfers of one recorded period, from what its record holds: the parameters
    the decision used (carbon price included), the stage, efforts (E_M, E_P), sigma,
    subsidy rates (theta_M, theta_P), the X it was settled at (observed, else projected)
    and its length in model periods. Stage 3 settles ``split_method`` ("core" or
    "shapley"; None: whichever settles, ``settling_split``). What a verifier re-derives."""
    e_m, e_p = efforts
    result = replace(
        stage1_nash(params),
        stage=stage,
        E_M=e_m,
        E_P=e_p,
        sigma=sigma,
        theta_M=rates[0],
        theta_P=rates[1],
        inflow=inflow(sigma, params.a_M, params.a_P, params.F, e_m, e_p),
    )
    split = None
    if stage == 3:
        split = shapley(params) if split_method == "shapley" else settlement_split(params)
    return period_transfers(params, result, split, x, periods)


def relational_params(
    policy: Policy, params: CoordinationParams, plant: str, stage: int
) -> CoordinationParams:
    """``params`` with R from the stage's sharing rule, when the policy's own ``sharing``
    block defines it (coordination-model.md: R from the sharing configuration)."""
    if not policy.sharing_sets_r:
        return params
    r = policy.sharing[stage].relational_availability(plant)
    return params if r == params.R else params.model_copy(update={"R": r})
