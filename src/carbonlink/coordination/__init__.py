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

from carbonlink.coordination._backtest import (
    BacktestResult,
    RecordedWindow,
    backtest,
    load_window,
)
from carbonlink.coordination._budget import SubsidyRates, budget_rates, spending
from carbonlink.coordination._cooperative import (
    PartyShare,
    Split,
    coalition_value,
    nash_bargaining,
    shapley,
    shapley_values,
)
from carbonlink.coordination._counterfactual import (
    STEP_COLUMNS,
    SUMMARY_COLUMNS,
    PlantModel,
    PolicyEvaluator,
    StepInput,
    exact_step,
    summarise,
)
from carbonlink.coordination._decide import decide
from carbonlink.coordination._estimation import (
    Baseline,
    DynamicsEstimator,
    FunctionalAvailability,
    calibrate_cost,
    energy_value_per_tco2e,
    fit_baseline,
    functional_availability,
    observed_abatement,
    per_window,
)
from carbonlink.coordination._flows import period_transfers, relational_params, settlement_split
from carbonlink.coordination._government import Government
from carbonlink.coordination._journal import PERIOD_COLUMNS, Journal, PeriodRow
from carbonlink.coordination._ledger import (
    GENESIS_HASH,
    Anchor,
    Ledger,
    LedgerCheck,
    Report,
    parse_anchor,
    report_hash,
)
from carbonlink.coordination._params import (
    PARTIES,
    CoordinationParams,
    Party,
    for_plant,
    load_params,
)
from carbonlink.coordination._policy import (
    Budget,
    EnergyPrice,
    Estimation,
    Policy,
    PolicySwitch,
    StageNumber,
    Valuation,
    load_policy,
)
from carbonlink.coordination._service import (
    DEFAULT_PERIOD_S,
    LEDGER_ANCHOR_TOPIC,
    STAGE_WIRE_NAMES,
    STATUS_STATE_KEY,
    Coordinator,
    decode_anchor,
    directive_history,
)
from carbonlink.coordination._settlement import Settlement, settle
from carbonlink.coordination._shadows import ShadowBank
from carbonlink.coordination._sharing import (
    DEFAULT_SHARING,
    FIELDS_BY_LEVEL,
    RELATIONAL_AVAILABILITY,
    PeriodRecord,
    SharingGate,
    SharingLevel,
    SharingRule,
    relational_availability,
)
from carbonlink.coordination._signing import (
    generate_key_pair,
    key_id,
    public_pem,
    read_public_key,
    settings_public_key,
    settings_signing_key,
)
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
from carbonlink.coordination._stream import PeriodData, PlantStream
from carbonlink.coordination._value import (
    abatement_per_cost,
    inflow,
    steady_state,
    stream_value,
    trajectory,
)
from carbonlink.coordination._verify import Finding, Verification, verify_journal

__all__ = [
    "DEFAULT_PERIOD_S",
    "DEFAULT_SHARING",
    "FIELDS_BY_LEVEL",
    "GENESIS_HASH",
    "LEDGER_ANCHOR_TOPIC",
    "PARTIES",
    "PERIOD_COLUMNS",
    "RELATIONAL_AVAILABILITY",
    "STAGE_NAMES",
    "STAGE_WIRE_NAMES",
    "STATUS_STATE_KEY",
    "STEP_COLUMNS",
    "SUMMARY_COLUMNS",
    "Anchor",
    "BacktestResult",
    "Baseline",
    "Budget",
    "CoordinationParams",
    "Coordinator",
    "DynamicsEstimator",
    "EnergyPrice",
    "Estimation",
    "Finding",
    "FunctionalAvailability",
    "Government",
    "GovernmentObjective",
    "Journal",
    "Ledger",
    "LedgerCheck",
    "Party",
    "PartyShare",
    "PeriodData",
    "PeriodRecord",
    "PeriodRow",
    "PlantModel",
    "PlantStream",
    "Policy",
    "PolicyEvaluator",
    "PolicySwitch",
    "RecordedWindow",
    "Report",
    "Settlement",
    "ShadowBank",
    "SharingGate",
    "SharingLevel",
    "SharingRule",
    "Solution",
    "Split",
    "StageNumber",
    "StageResult",
    "StepInput",
    "SubsidyRates",
    "Valuation",
    "Verification",
    "abatement_per_cost",
    "backtest",
    "best_response_efforts",
    "budget_rates",
    "calibrate_cost",
    "coalition_value",
    "decide",
    "decode_anchor",
    "directive_history",
    "energy_value_per_tco2e",
    "exact_step",
    "fit_baseline",
    "for_plant",
    "functional_availability",
    "generate_key_pair",
    "inflow",
    "key_id",
    "load_params",
    "load_policy",
    "load_window",
    "nash_bargaining",
    "observed_abatement",
    "parse_anchor",
    "per_window",
    "period_transfers",
    "public_pem",
    "read_public_key",
    "relational_availability",
    "relational_params",
    "report_hash",
    "settings_public_key",
    "settings_signing_key",
    "settle",
    "settlement_split",
    "shapley",
    "shapley_values",
    "solve",
    "spending",
    "stage1_nash",
    "stage2_government",
    "stage3_joint",
    "steady_state",
    "stream_value",
    "subsidy_rate",
    "summarise",
    "trajectory",
    "verify_journal",
]
