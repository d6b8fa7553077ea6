"""One plant's period in money and abatement: the coordinator records it with these
functions, and the ledger's verifier re-derives it with the same ones, so a change to
the model (a split, a settlement rule) reaches both at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from carbonlink.coordination._flows import period_transfers, settlement_split
from carbonlink.coordination._journal import PeriodRow
from carbonlink.coordination._sharing import PeriodRecord
from carbonlink.coordination.model import (
    CoordinationParams,
    Party,
    StageResult,
    decide,
    effort_cost,
    exact_step,
    subsidised_stage,
)

__all__ = ["PeriodOutcome", "period_outcome", "period_record", "recorded_decision"]


@dataclass(frozen=True)
class PeriodOutcome:
    """``x_mean``: mean X over the period (the projection); ``x_end``: X at its end;
    ``x_settle``: the X settled on (observed where measured, else projected);
    ``transfers``: what each party receives over the period; ``claimed``: the stage-2
    subsidy claims (theta_i of each effort cost), 0 in the other stages."""

    x_mean: float
    x_end: float
    x_settle: float
    transfers: dict[Party, float]
    claimed: float


def period_outcome(
    params: CoordinationParams,
    result: StageResult,
    x_start: float,
    x_observed: float | None,
    periods: float,
) -> PeriodOutcome:
    """A period of ``periods`` model periods under ``result``, from X = ``x_start``."""
    x_mean, x_end = exact_step(x_start, result.inflow, params.delta, periods)
    x_settle = x_observed if x_observed is not None else x_mean
    split = settlement_split(params) if result.stage == 3 else None
    transfers = period_transfers(params, result, split, x_settle, periods)
    cost_m = effort_cost(params.k_M, result.E_M)
    cost_p = effort_cost(params.k_P, result.E_P)
    claimed = (result.theta_M * cost_m + result.theta_P * cost_p) * periods
    return PeriodOutcome(x_mean, x_end, x_settle, transfers, claimed)


def recorded_decision(
    stage: int, params: CoordinationParams, theta_m: float, theta_p: float
) -> StageResult:
    """The decision a period ran under, from its recorded parameters: stages 1 and 3
    follow from them alone (``decide``, as the coordinator calls it); stage 2 from the
    subsidy rates the government set, which depend on its view and budget."""
    if stage == 2:
        return subsidised_stage(params, 2, theta_m, theta_p)
    decided: Mapping[str, StageResult] = decide(stage, {"plant": params})
    return decided["plant"]


def period_record(
    row: PeriodRow,
    result: StageResult,
    outcome: PeriodOutcome,
    parameters: Mapping[str, float],
) -> PeriodRecord:
    """What the sharing gate aggregates for one period: its journal row, with the
    decision and the outcome it ran under (the coordinator's, or re-derived), and the
    digest of the row, which the report commits to."""
    return PeriodRecord(
        period_start_ms=row.start_ms,
        period_end_ms=row.end_ms,
        plant=row.plant,
        policy=row.policy,
        stage=result.stage,
        stage_name=row.stage_name or result.name,
        reported_tco2e=row.tco2e,
        readings=row.readings,
        factor_set=row.factor_set or "",
        factor_version=row.factor_version or "",
        **result.decision(),
        subsidy_claimed=outcome.claimed,
        carbon_price=row.carbon_price,
        projected_abatement=outcome.x_mean,
        observed_abatement=row.x_observed,
        transfers=outcome.transfers,
        parameters=parameters,
        money=row.money or "",
        split=settlement_split(_params_of(parameters)).method if result.stage == 3 else "",
        row_sha256=row.digest(),
    )


def _params_of(parameters: Mapping[str, float]) -> CoordinationParams:
    return CoordinationParams.model_validate(
        {k: v for k, v in parameters.items() if k in CoordinationParams.model_fields}
    )
