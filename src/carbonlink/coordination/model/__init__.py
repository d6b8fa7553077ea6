"""The coordination model, pure: parameters, stages, values, splits and settlement."""

from __future__ import annotations

from carbonlink.abatement import (
    effort_cost,
    exact_step,
    inflow,
    steady_state,
    x_at,
)
from carbonlink.coordination.model._budget import SubsidyRates, budget_rates, spending
from carbonlink.coordination.model._cooperative import (
    PartyShare,
    Split,
    coalition_value,
    nash_bargaining,
    shapley,
    shapley_values,
)
from carbonlink.coordination.model._core import core_split, settlement_reason, settling_split
from carbonlink.coordination.model._decide import decide
from carbonlink.coordination.model._money import MoneyUnit
from carbonlink.coordination.model._params import (
    PARTIES,
    CoordinationParams,
    ParameterFile,
    Party,
    for_plant,
    load_parameter_file,
    load_params,
    with_carbon_price,
)
from carbonlink.coordination.model._settlement import Settlement, settle
from carbonlink.coordination.model._solve import Solution, solve
from carbonlink.coordination.model._stages import (
    STAGE_NAMES,
    GovernmentObjective,
    StageResult,
    best_response_efforts,
    stage1_nash,
    stage2_government,
    stage3_joint,
    subsidised_stage,
    subsidy_rate,
)
from carbonlink.coordination.model._value import (
    abatement_per_cost,
    discounted_step,
    stream_value,
    trajectory,
)

__all__ = [
    "PARTIES",
    "STAGE_NAMES",
    "CoordinationParams",
    "GovernmentObjective",
    "MoneyUnit",
    "ParameterFile",
    "Party",
    "PartyShare",
    "Settlement",
    "Solution",
    "Split",
    "StageResult",
    "SubsidyRates",
    "abatement_per_cost",
    "best_response_efforts",
    "budget_rates",
    "coalition_value",
    "core_split",
    "decide",
    "discounted_step",
    "effort_cost",
    "exact_step",
    "for_plant",
    "inflow",
    "load_parameter_file",
    "load_params",
    "nash_bargaining",
    "settle",
    "settlement_reason",
    "settling_split",
    "shapley",
    "shapley_values",
    "solve",
    "spending",
    "stage1_nash",
    "stage2_government",
    "stage3_joint",
    "steady_state",
    "stream_value",
    "subsidised_stage",
    "subsidy_rate",
    "trajectory",
    "with_carbon_price",
    "x_at",
]
