"""Firm-platform-government coordination: a differential-game model in the spirit of
Qin et al. (2026), our own formulation (docs/coordination.md; the spec is
coordination-model.md).

A manufacturing firm (M), an industrial internet platform (P) and the government (G)
build abatement capability X through efforts E_M, E_P in three stages: Nash without
subsidy, government-led subsidies, and joint decisions with shared data. The stage-3
value is split by Shapley value or Nash bargaining and settled period by period.
The closed loop (``Coordinator``) publishes each stage's efforts as retained plant
directives on a policy's schedule and keeps a hash-chained ledger of period reports.
"""

from carbonlink.coordination._cooperative import (
    PartyShare,
    Split,
    coalition_value,
    nash_bargaining,
    shapley,
    shapley_values,
)
from carbonlink.coordination._estimation import (
    RELATIONAL_AVAILABILITY,
    Baseline,
    DynamicsEstimator,
    FunctionalAvailability,
    SharingLevel,
    calibrate_cost,
    energy_value_per_tco2e,
    fit_baseline,
    functional_availability,
    observed_abatement,
    per_window,
    relational_availability,
)
from carbonlink.coordination._ledger import GENESIS_HASH, Ledger, LedgerCheck, Report, report_hash
from carbonlink.coordination._params import PARTIES, CoordinationParams, Party, load_params
from carbonlink.coordination._policy import Policy, PolicySwitch, StageNumber, load_policy
from carbonlink.coordination._service import DEFAULT_PERIOD_S, Coordinator, period_transfers
from carbonlink.coordination._settlement import Settlement, settle
from carbonlink.coordination._solve import Solution, solve
from carbonlink.coordination._stages import (
    STAGE_NAMES,
    GovernmentObjective,
    StageResult,
    best_response_efforts,
    stage1_nash,
    stage2_government,
    stage3_joint,
    subsidy_rate,
)
from carbonlink.coordination._value import (
    carbon_emission_efficiency,
    inflow,
    steady_state,
    stream_value,
    trajectory,
)

__all__ = [
    "DEFAULT_PERIOD_S",
    "GENESIS_HASH",
    "PARTIES",
    "RELATIONAL_AVAILABILITY",
    "STAGE_NAMES",
    "Baseline",
    "CoordinationParams",
    "Coordinator",
    "DynamicsEstimator",
    "FunctionalAvailability",
    "GovernmentObjective",
    "Ledger",
    "LedgerCheck",
    "Party",
    "PartyShare",
    "Policy",
    "PolicySwitch",
    "Report",
    "Settlement",
    "SharingLevel",
    "Solution",
    "Split",
    "StageNumber",
    "StageResult",
    "best_response_efforts",
    "calibrate_cost",
    "carbon_emission_efficiency",
    "coalition_value",
    "energy_value_per_tco2e",
    "fit_baseline",
    "functional_availability",
    "inflow",
    "load_params",
    "load_policy",
    "nash_bargaining",
    "observed_abatement",
    "per_window",
    "period_transfers",
    "relational_availability",
    "report_hash",
    "settle",
    "shapley",
    "shapley_values",
    "solve",
    "stage1_nash",
    "stage2_government",
    "stage3_joint",
    "steady_state",
    "stream_value",
    "subsidy_rate",
    "trajectory",
]
