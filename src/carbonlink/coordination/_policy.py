"""Policy files: which stage of the coordination model is in force, when, and with which
levers (docs/policies.md).

A policy names a parameter set (a file beside it, or inline), a fixed ``stage`` or a
``schedule`` of stage switches, and optional levers: a carbon price (constant or a path
over time) that adds to the firm's value of abatement, a subsidy cap, a government
budget, the government's stage-2 objective, per-stage data-sharing rules, whether
parameters are estimated from the stream, and differentiated terms per plant or per
sector (the plant's archetype): parameters, a subsidy cap, fixed subsidy rates. Any
problem is a ConfigError naming the policy file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator

from carbonlink import wire
from carbonlink.config import PlantConfig
from carbonlink.coordination._sharing import DEFAULT_SHARING, SharingLevel, SharingRule
from carbonlink.coordination.model import (
    CoordinationParams,
    GovernmentObjective,
    MoneyUnit,
    ParameterFile,
    StageResult,
    for_plant,
    load_parameter_file,
    stage1_nash,
    stage2_government,
    stage3_joint,
    with_carbon_price,
)
from carbonlink.core.durations import MS_PER_S, OFFSET, UNIT_S, Duration
from carbonlink.core.yamlfiles import StrictModel, load_yaml_model
from carbonlink.errors import ConfigError

__all__ = [
    "Budget",
    "Differentiation",
    "EnergyPrice",
    "Estimation",
    "Policy",
    "PolicySwitch",
    "StageNumber",
    "Valuation",
    "load_policy",
]

StageNumber = Literal[1, 2, 3]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class TimeRef:
    """An instant given absolutely (``at_ms``) or as an offset from a run's start."""

    at_ms: int | None = None
    offset_ms: int = 0

    def resolve(self, run_start_ms: int) -> int:
        return self.at_ms if self.at_ms is not None else run_start_ms + self.offset_ms

    @property
    def is_offset(self) -> bool:
        return self.at_ms is None


def parse_time_ref(text: object) -> TimeRef:
    """``+2h`` / ``-90m`` (offset from the run's start) or an RFC 3339 time."""
    if isinstance(text, str):
        offset = OFFSET.match(text)
        if offset is not None:
            sign = -1 if offset[1] == "-" else 1
            seconds = float(offset[2]) * UNIT_S[offset[3]]
            return TimeRef(offset_ms=sign * round(seconds * MS_PER_S))
    try:
        return TimeRef(at_ms=wire.parse_timestamp(text))
    except Exception as exc:
        raise ValueError(f'expected RFC 3339 or an offset like "+2h" or "-30m": {exc}') from exc


def _time_ref_text(value: str) -> str:
    parse_time_ref(value)  # raises ValueError with the accepted forms
    return value


class _ScheduleEntry(StrictModel):
    at: str = Field(description='RFC 3339 time, or an offset from the start like "+2h"')
    stage: StageNumber

    _check_at = field_validator("at")(_time_ref_text)


class _PricePoint(StrictModel):
    at: str = Field(description='RFC 3339 time, or an offset from the start like "+2h"')
    price: float = Field(ge=0, description="carbon price per tCO2e, in the model's money unit")

    _check_at = field_validator("at")(_time_ref_text)


class _BudgetFile(StrictModel):
    amount: float = Field(ge=0, description="subsidy the government may pay per `per`")
    per: Duration = Field(gt=0, description="pacing window of `amount`")
    total: float | None = Field(default=None, ge=0, description="cap over the whole run")


class _SharingFile(StrictModel):
    level: SharingLevel
    every: Duration | Literal["period"] = Field(
        default="period", description="window of each report; `period`: every coordinator step"
    )
    delay: Duration = Field(default=0.0, description="time from a window's end to its report")
    plants: tuple[str, ...] | None = Field(
        default=None, description="plants sharing at `level` (others: self-reported totals)"
    )

    @field_validator("level")
    @classmethod
    def _something_shared(cls, level: SharingLevel) -> SharingLevel:
        if level is SharingLevel.NONE:
            raise ValueError("a stage must report something: self_reported at the least")
        return level

    @field_validator("every")
    @classmethod
    def _positive(cls, every: float | str) -> float | str:
        if isinstance(every, float) and every <= 0:
            raise ValueError("must be > 0")
        return every


class _ReferenceFile(StrictModel):
    start: str = Field(description="start of the baseline's reference period")
    end: str = Field(description="end of the baseline's reference period")

    _check = field_validator("start", "end")(_time_ref_text)


class _EnergyPriceFile(StrictModel):
    price: float = Field(gt=0, description="money per `unit` of the activity")
    unit: str
    source: str = Field(min_length=1, description="where the price comes from")


class _ValuationFile(StrictModel):
    energy_prices: dict[str, _EnergyPriceFile] = Field(
        min_length=1, description="per emission-library activity id"
    )
    green_premium: float = Field(default=0.0, ge=0, description="v_D per tCO2e")
    platform_fee: float = Field(default=0.0, ge=0, description="tau per tCO2e")
    platform_value: float = Field(default=0.0, ge=0, description="v_P per tCO2e")


class _DynamicsFile(StrictModel):
    forgetting: float = Field(default=0.98, gt=0, le=1)
    prior_weight: float = Field(
        default=10.0, gt=0, description="the prior is worth this many periods of data"
    )
    min_updates: int = Field(default=4, ge=1, description="updates before estimates are used")


class _EstimationFile(StrictModel):
    reference: _ReferenceFile
    smoothing: float = Field(default=1.0, gt=0, le=1, description="EWM weight of X_obs")
    functional_availability: bool = Field(default=True, description="F from the stream")
    dynamics: _DynamicsFile = _DynamicsFile()
    valuation: _ValuationFile | None = None


class _RatesFile(StrictModel):
    M: float = Field(ge=0, lt=1, description="the firm's subsidy rate theta_M")
    P: float = Field(ge=0, lt=1, description="the platform's subsidy rate theta_P")


class _DifferentiationFile(StrictModel):
    params: dict[str, float] = Field(
        default_factory=dict, description="parameters that differ here (any of the model's)"
    )
    subsidy_cap: float | None = Field(default=None, ge=0, lt=1, description="theta_max here")
    subsidy_rates: _RatesFile | None = Field(
        default=None, description="stage 2: fixed rates instead of the government's optimum"
    )


class _PolicyFile(StrictModel):
    """The YAML as written; :class:`Policy` is what the services use."""

    name: str = Field(min_length=1)
    description: str = ""
    params: str | ParameterFile
    money: MoneyUnit | None = Field(
        default=None, description="currency and scale; must match the parameter file's"
    )
    stage: StageNumber | None = None
    schedule: tuple[_ScheduleEntry, ...] | None = Field(default=None, min_length=1)
    carbon_price: float | tuple[_PricePoint, ...] = Field(
        default=0.0, description="per tCO2e, added to m_M: a number or a path over time"
    )
    subsidy_cap: float | None = Field(default=None, ge=0, lt=1, description="replaces theta_max")
    government: GovernmentObjective = "welfare"
    budget: _BudgetFile | None = None
    sharing: dict[StageNumber, _SharingFile] | None = None
    estimation: _EstimationFile | None = None
    sectors: dict[str, _DifferentiationFile] = Field(
        default_factory=dict, description="terms per sector (a plant's archetype)"
    )
    plants: dict[str, _DifferentiationFile] = Field(
        default_factory=dict, description="terms per plant id; they win over the sector's"
    )

    @model_validator(mode="after")
    def _one_stage_source(self) -> _PolicyFile:
        if (self.stage is None) == (self.schedule is None):
            raise ValueError("give exactly one of `stage` and `schedule`")
        return self

    @field_validator("carbon_price")
    @classmethod
    def _price_path(cls, value: float | tuple[_PricePoint, ...]) -> float | tuple[_PricePoint, ...]:
        if isinstance(value, float) and value < 0:
            raise ValueError("must be >= 0")
        if isinstance(value, tuple) and not value:
            raise ValueError("give at least one {at, price} point, or a number")
        return value


@dataclass(frozen=True)
class PolicySwitch:
    """From ``at`` on (absolute, or an offset from the run's start), ``stage`` applies."""

    stage: StageNumber
    at: TimeRef = field(default_factory=TimeRef)

    def starts_ms(self, run_start_ms: int) -> int:
        return self.at.resolve(run_start_ms)


@dataclass(frozen=True)
class Budget:
    """At most ``amount`` of subsidy per ``per_s`` seconds, paced evenly, and at most
    ``total`` over the run."""

    amount: float
    per_s: float
    total: float | None = None

    def allowance(self, step_s: float, spent: float) -> float:
        """What a step of ``step_s`` seconds may spend, given ``spent`` so far."""
        paced = self.amount * step_s / self.per_s
        if self.total is None:
            return paced
        return max(0.0, min(paced, self.total - spent))


@dataclass(frozen=True)
class EnergyPrice:
    price: float
    unit: str
    source: str


@dataclass(frozen=True)
class Valuation:
    """m_M = p_c + v_E + v_D - tau and m_P = tau + v_P (coordination-model.md, Flow
    payoffs), with v_E = energy price / emission factor, from the stream."""

    energy_prices: Mapping[str, EnergyPrice]
    green_premium: float = 0.0
    platform_fee: float = 0.0
    platform_value: float = 0.0


@dataclass(frozen=True)
class Estimation:
    """How the coordinator feeds the model from the stream (docs/coordination.md)."""

    reference_start: TimeRef
    reference_end: TimeRef
    smoothing: float = 1.0
    functional_availability: bool = True
    forgetting: float = 0.98
    prior_weight: float = 10.0
    min_updates: int = 4
    valuation: Valuation | None = None


@dataclass(frozen=True)
class Differentiation:
    """Terms that differ for one plant or sector: parameters (by name), a subsidy cap
    (theta_max), and fixed stage-2 subsidy rates (theta_M, theta_P)."""

    params: Mapping[str, float] = field(default_factory=dict)
    subsidy_cap: float | None = None
    subsidy_rates: tuple[float, float] | None = None

    def then(self, more: Differentiation) -> Differentiation:
        """These terms with ``more`` on top (a plant's over its sector's)."""
        return Differentiation(
            {**self.params, **more.params},
            more.subsidy_cap if more.subsidy_cap is not None else self.subsidy_cap,
            more.subsidy_rates if more.subsidy_rates is not None else self.subsidy_rates,
        )

    def apply(self, params: CoordinationParams) -> CoordinationParams:
        """``params`` with these terms, validated (a bad value fails here, with its key)."""
        if not self.params and self.subsidy_cap is None:
            return params
        cap = {} if self.subsidy_cap is None else {"theta_max": self.subsidy_cap}
        return CoordinationParams.model_validate(params.model_dump() | dict(self.params) | cap)


NO_DIFFERENCE: Final = Differentiation()


@dataclass(frozen=True)
class Policy:
    name: str
    params: CoordinationParams
    switches: tuple[PolicySwitch, ...]
    carbon_prices: tuple[tuple[TimeRef, float], ...] = field(
        default_factory=lambda: ((TimeRef(), 0.0),)
    )
    government: GovernmentObjective = "welfare"
    budget: Budget | None = None
    sharing: Mapping[int, SharingRule] = field(default_factory=lambda: dict(DEFAULT_SHARING))
    #: True when the file has a ``sharing`` block: R then comes from the rules.
    sharing_sets_r: bool = False
    estimation: Estimation | None = None
    description: str = ""
    source: Path | None = None
    money: MoneyUnit = field(default_factory=MoneyUnit)
    sectors: Mapping[str, Differentiation] = field(default_factory=dict)
    plants: Mapping[str, Differentiation] = field(default_factory=dict)

    def terms_for(self, plant: PlantConfig) -> Differentiation:
        """What differs for ``plant``: its sector's terms, then its own on top."""
        sector = self.sectors.get(plant.archetype, NO_DIFFERENCE)
        return sector.then(self.plants.get(plant.id, NO_DIFFERENCE))

    def params_for(self, plant: PlantConfig) -> CoordinationParams:
        """The parameters the parties decide on at ``plant``: the policy's, with the
        plant's own dynamics and size (``for_plant``), then the policy's terms for its
        sector and for the plant itself."""
        return self.terms_for(plant).apply(for_plant(self.params, plant))

    def subsidy_rates_for(self, plant: PlantConfig) -> tuple[float, float] | None:
        """Fixed stage-2 rates (theta_M, theta_P) at ``plant``, or None: the government's."""
        return self.terms_for(plant).subsidy_rates

    def check_plants(self, plants: Mapping[str, PlantConfig]) -> None:
        """Every plant and sector the policy names must exist (a typo would do nothing)."""
        for plant_id in self.plants:
            if plant_id not in plants:
                known = ", ".join(sorted(plants))
                raise ConfigError(self.source, f"plants.{plant_id}", f"no such plant ({known})")
        sectors = {p.archetype for p in plants.values()}
        for sector in self.sectors:
            if sector not in sectors:
                known = ", ".join(sorted(sectors))
                raise ConfigError(
                    self.source, f"sectors.{sector}", f"no plant of this sector ({known})"
                )

    def stage_at(self, now_ms: int, run_start_ms: int) -> StageNumber:
        """The last switch already started wins; before the first one, the first applies."""
        return _latest(
            [(s.at, s.stage) for s in self.switches], now_ms, run_start_ms, self.switches[0].stage
        )

    def carbon_price_at(self, now_ms: int, run_start_ms: int) -> float:
        return _latest(list(self.carbon_prices), now_ms, run_start_ms, self.carbon_prices[0][1])

    @property
    def carbon_price(self) -> float:
        """The first carbon price of the path (the only one for a constant price)."""
        return self.carbon_prices[0][1]

    def params_at(
        self, base: CoordinationParams, now_ms: int, run_start_ms: int
    ) -> CoordinationParams:
        """``base`` under the carbon price in force (``with_carbon_price``)."""
        return with_carbon_price(base, self.carbon_price_at(now_ms, run_start_ms))

    def switch_times_ms(self, run_start_ms: int) -> list[int]:
        """Every instant at which the stage or the carbon price may change."""
        times = {s.starts_ms(run_start_ms) for s in self.switches}
        times |= {at.resolve(run_start_ms) for at, _ in self.carbon_prices}
        return sorted(times)

    def solve_stage(
        self, stage: StageNumber, params: CoordinationParams | None = None
    ) -> StageResult:
        """The stage's closed-form solution without a budget (``decide`` handles one)."""
        p = self.params if params is None else params
        if stage == 1:
            return stage1_nash(p)
        if stage == 2:
            return stage2_government(p, self.government)
        return stage3_joint(p)


def _latest(points: list[tuple[TimeRef, _T]], now_ms: int, run_start_ms: int, first: _T) -> _T:
    active = first
    for at, value in sorted(points, key=lambda p: p[0].resolve(run_start_ms)):
        if at.resolve(run_start_ms) <= now_ms:
            active = value
    return active


def _sharing_rules(rules: Mapping[StageNumber, _SharingFile] | None) -> dict[int, SharingRule]:
    merged: dict[int, SharingRule] = dict(DEFAULT_SHARING)
    for stage, rule in (rules or {}).items():
        merged[stage] = SharingRule(
            level=rule.level,
            every_s=None if rule.every == "period" else float(rule.every),
            delay_s=rule.delay,
            plants=None if rule.plants is None else frozenset(rule.plants),
        )
    return merged


def _estimation(spec: _EstimationFile | None) -> Estimation | None:
    if spec is None:
        return None
    valuation = None
    if spec.valuation is not None:
        v = spec.valuation
        valuation = Valuation(
            energy_prices={
                activity: EnergyPrice(price.price, price.unit, price.source)
                for activity, price in v.energy_prices.items()
            },
            green_premium=v.green_premium,
            platform_fee=v.platform_fee,
            platform_value=v.platform_value,
        )
    return Estimation(
        reference_start=parse_time_ref(spec.reference.start),
        reference_end=parse_time_ref(spec.reference.end),
        smoothing=spec.smoothing,
        functional_availability=spec.functional_availability,
        forgetting=spec.dynamics.forgetting,
        prior_weight=spec.dynamics.prior_weight,
        min_updates=spec.dynamics.min_updates,
        valuation=valuation,
    )


def _differentiation(
    path: Path, key: str, entry: _DifferentiationFile, base: CoordinationParams
) -> Differentiation:
    unknown = sorted(set(entry.params) - set(CoordinationParams.model_fields))
    if unknown:
        raise ConfigError(path, f"{key}.params.{unknown[0]}", "not a parameter of the model")
    rates = None if entry.subsidy_rates is None else (entry.subsidy_rates.M, entry.subsidy_rates.P)
    terms = Differentiation(dict(entry.params), entry.subsidy_cap, rates)
    try:
        checked = terms.apply(base)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ConfigError(path, f"{key}.params.{where}", error["msg"]) from exc
    if rates is not None and max(rates) > checked.theta_max:
        raise ConfigError(
            path, f"{key}.subsidy_rates", f"above the subsidy cap {checked.theta_max:g}"
        )
    return terms


def load_policy(path: str | Path) -> Policy:
    """Read a policy file; ``params`` as a string is a parameter file beside it."""
    path = Path(path)
    policy = load_yaml_model(path, _PolicyFile)
    if isinstance(policy.params, str):
        params_path = path.parent / policy.params
        if not params_path.is_file():
            raise ConfigError(path, "params", f"no parameter file {params_path}")
        params, money = load_parameter_file(params_path)
    else:
        params, money = policy.params.split()
    if policy.money is not None:
        if money.currency is not None and policy.money != money:
            raise ConfigError(
                path, "money", f"{policy.money.long}, but its parameters are in {money.long}"
            )
        money = policy.money
    if policy.subsidy_cap is not None:
        # Re-validate rather than model_copy: the copy would skip the field checks.
        params = CoordinationParams.model_validate(
            params.model_dump() | {"theta_max": policy.subsidy_cap}
        )
    if policy.schedule is not None:
        switches = tuple(PolicySwitch(e.stage, parse_time_ref(e.at)) for e in policy.schedule)
    else:
        assert policy.stage is not None  # the validator demands one of the two
        switches = (PolicySwitch(policy.stage),)
    if isinstance(policy.carbon_price, tuple):
        prices = tuple((parse_time_ref(p.at), p.price) for p in policy.carbon_price)
    else:
        prices = ((TimeRef(), float(policy.carbon_price)),)
    budget = None
    if policy.budget is not None:
        budget = Budget(policy.budget.amount, policy.budget.per, policy.budget.total)
    estimation = _estimation(policy.estimation)
    if estimation is not None:
        start, end = estimation.reference_start, estimation.reference_end
        # Only like can be compared: two offsets, or two absolute times.
        if start.is_offset == end.is_offset and end.resolve(0) <= start.resolve(0):
            raise ConfigError(path, "estimation.reference", "end must come after start")
    sectors = {
        name: _differentiation(path, f"sectors.{name}", entry, params)
        for name, entry in policy.sectors.items()
    }
    plants = {
        name: _differentiation(path, f"plants.{name}", entry, params)
        for name, entry in policy.plants.items()
    }
    return Policy(
        name=policy.name,
        params=params,
        switches=switches,
        carbon_prices=prices,
        government=policy.government,
        budget=budget,
        sharing=_sharing_rules(policy.sharing),
        sharing_sets_r=policy.sharing is not None,
        estimation=estimation,
        description=policy.description,
        source=path,
        money=money,
        sectors=sectors,
        plants=plants,
    )
