"""Counterfactual replay: what a policy would have done to a recorded (or live) stream.

Given each step's *baseline* emissions of every plant (what it would have emitted with
no abatement, split into abatable energy emissions and fixed process emissions), a
:class:`PolicyEvaluator` runs the policy through the plant dynamics the simulators use:
the stage in force decides the efforts (``decide``), X follows dX/dt = I - delta*X
exactly over the step, a plant abates X*scale tCO2e per model period but at most
``max_reduction`` of its abatable emissions, and every party's flows, the subsidies
and the settlement transfers follow. ``policy backtest`` feeds it recorded windows;
the coordinator feeds its shadow policies the live stream.

Each step is valued twice (coordination-model.md, "Valuing a policy over a window"):
as undiscounted amounts (auditable sums: tonnes, subsidies, payoffs) and as cash
discounted to the run's start at the policy's rate r. Each row also carries the
discounted value of the state reached, e^(-r t) phi_i(X(t)): phi_i is party i's value
from state X if the decision in force went on (the stage's values, or its share of the
split that settles stage 3). Cash so far plus the last row's continuation is the
policy's value with continuation, what ``policy solve`` reports at X0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pandas as pd

from carbonlink.config import PlantConfig
from carbonlink.coordination._flows import period_transfers, relational_params
from carbonlink.coordination._policy import Policy
from carbonlink.coordination.model import (
    PARTIES,
    CoordinationParams,
    MoneyUnit,
    Party,
    Split,
    StageResult,
    decide,
    discounted_step,
    effort_cost,
    exact_step,
    settling_split,
    with_carbon_price,
)

__all__ = [
    "STEP_COLUMNS",
    "SUMMARY_COLUMNS",
    "PlantModel",
    "PolicyEvaluator",
    "RunningSummary",
    "StepInput",
    "exact_step",
    "summarise",
]

MS_PER_S: Final = 1000.0
S_PER_HOUR: Final = 3600.0
#: A window shorter than this many 1/delta is still building abatement capability: its
#: cash is mostly costs paid ahead of the abatement they buy (X reaches 1 - e^-2 = 86%
#: of its steady state after 2/delta).
BUILD_UP_DECAYS: Final = 2.0

#: One row per plant and step, in this order (CSV of ``policy backtest``).
STEP_COLUMNS: Final = (
    "policy", "plant", "start_ms", "end_ms", "stage", "stage_name", "effort_firm",
    "effort_platform", "sigma", "theta_M", "theta_P", "carbon_price", "x", "baseline_t",
    "emissions_t", "abatement_t", "cost_M", "cost_P", "subsidy", "resource_cost",
    "payoff_M", "payoff_P", "payoff_G", "transfer_M", "transfer_P", "transfer_G",
    "x_end", "split", "carbon_payment", "public_cost", "output", "value_added", "discount",
    "cash_M", "cash_P", "cash_G", "continuation_M", "continuation_P", "continuation_G",
    "build_up_h", "money",
)  # fmt: skip
SUMMARY_COLUMNS: Final = (
    "policy", "money", "plants", "hours", "baseline_t", "emissions_t", "abatement_t",
    "abatement_share", "abatement_per_cost", "payoff_M", "payoff_P", "payoff_G",
    "payoff_total", "cash_M", "cash_P", "cash_G", "cash_total", "value_M", "value_P",
    "value_G", "value_total", "x_end", "subsidy", "carbon_payment", "public_cost",
    "public_cost_per_t", "value_added", "cep", "cep_welfare", "transfers_balance",
    "build_up_h", "short_window", "settled_by",
)  # fmt: skip


@dataclass(frozen=True)
class PlantModel:
    """One plant: the parameters its parties decide on, and how the plant responds.

    ``params`` is the model the decisions use (the policy's, or estimates). The plant
    itself turns efforts into abatement with its own productivities and decay
    (``a_m``, ``a_p_f`` = a_P*F, ``delta``: the simulator's, from its plant file),
    which need not match what the parties believe, exactly as in the closed loop.
    ``fixed_rates`` are stage-2 subsidy rates a differentiated policy sets for it;
    ``value_added_per_unit`` is the value added by one unit of its output, in the
    policy's money (None when the plant file has no prices in the policy's currency).
    """

    plant: str
    params: CoordinationParams
    a_m: float
    a_p_f: float
    delta: float
    scale: float = 1.0  # tCO2e per model period for one unit of X
    period_s: float = 3600.0  # the model period
    max_reduction: float = 0.6  # ceiling on the abated share of abatable emissions
    fixed_rates: tuple[float, float] | None = None
    value_added_per_unit: float | None = None

    @classmethod
    def believed(cls, plant: str, params: CoordinationParams, **kwargs: Any) -> PlantModel:
        """A plant that responds exactly as the parameters say."""
        return cls(plant, params, params.a_M, params.a_P * params.F, params.delta, **kwargs)

    @classmethod
    def from_config(cls, plant: PlantConfig, policy: Policy) -> PlantModel:
        """A configured plant: its parties decide on the policy's parameters for this
        plant (``Policy.params_for``: its dynamics and size, and the policy's terms for
        its sector and for it), and it responds as its simulator does."""
        abate = plant.simulation.abatement
        return cls(
            plant.id,
            policy.params_for(plant),
            abate.a_m,
            abate.a_p * abate.functional_availability,
            abate.delta,
            abate.scale,
            abate.period_s,
            abate.max_reduction,
            policy.subsidy_rates_for(plant),
            value_added_per_unit(plant, policy.money),
        )

    def inflow(self, result: StageResult) -> float:
        """I = sigma*(a_m*E_M + a_P*F*E_P) of the plant itself (the simulator's formula)."""
        return result.sigma * (self.a_m * result.E_M + self.a_p_f * result.E_P)

    @property
    def build_up_h(self) -> float:
        """2/delta model periods, in hours: how long X takes to build up."""
        if self.delta <= 0:
            return math.inf
        return BUILD_UP_DECAYS / self.delta * self.period_s / S_PER_HOUR


def value_added_per_unit(plant: PlantConfig, money: MoneyUnit) -> float | None:
    """Value added by one unit of the plant's output, in ``money`` (its plant file's
    output price x value-added share), or None without prices in that currency."""
    economics = plant.economics
    if economics is None or economics.currency != money.currency:
        return None
    return economics.value_added_per_unit / money.scale


@dataclass(frozen=True)
class StepInput:
    """A plant's baseline over one step: tCO2e it would emit with no abatement, and the
    output it produced (in its output meters' unit)."""

    abatable_t: float
    fixed_t: float = 0.0
    output: float = 0.0


@dataclass
class PolicyEvaluator:
    """Runs ``policy`` forward step by step from ``run_start_ms`` for ``plants``.

    Discounting starts at ``run_start_ms``: cash and continuation are valued there.
    """

    policy: Policy
    plants: Sequence[PlantModel]
    run_start_ms: int
    x: dict[str, float] = field(default_factory=dict)
    spent: float = 0.0
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    keep_rows: bool = True
    #: The stage in force at (time, run start); default the policy's schedule. The live
    #: replay of the active policy follows the operators' switches too.
    stage_of: Callable[[int, int], int] | None = None
    #: Per plant, baseline tCO2e and model periods seen: the mean baseline rate on
    #: which the firm keeps paying a carbon price after the window.
    baseline_seen: dict[str, list[float]] = field(default_factory=dict)
    _splits: dict[tuple[str, int, float, float, float], Split] = field(default_factory=dict)
    _linear: dict[tuple[Any, ...], _LinearFlows] = field(default_factory=dict)
    _decisions: dict[tuple[int, float, float | None], dict[str, StageResult]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        for model in self.plants:
            self.x.setdefault(model.plant, model.params.X0)
            self.baseline_seen.setdefault(model.plant, [0.0, 0.0])

    def step(
        self, start_ms: int, end_ms: int, baseline: Mapping[str, StepInput]
    ) -> list[tuple[Any, ...]]:
        """Advance every plant over [start_ms, end_ms); returns this step's rows."""
        step_s = (end_ms - start_ms) / MS_PER_S
        if step_s <= 0:
            return []
        policy = self.policy
        stage = (
            policy.stage_at(start_ms, self.run_start_ms)
            if self.stage_of is None
            else self.stage_of(start_ms, self.run_start_ms)
        )
        price = policy.carbon_price_at(start_ms, self.run_start_ms)
        budget_per_s = None
        if stage == 2 and policy.budget is not None:
            budget_per_s = policy.budget.allowance(step_s, self.spent) / step_s
        decisions = self._decide(stage, price, budget_per_s)
        rows = []
        for model in self.plants:
            base = baseline.get(model.plant, StepInput(0.0))
            result = decisions[model.plant]
            params = self._params(model, stage, price)
            rows.append(self._advance(model, params, result, start_ms, end_ms, base, price, stage))
        if self.keep_rows:
            self.rows.extend(rows)
        return rows

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(STEP_COLUMNS))

    # --- internals -------------------------------------------------------------------

    def _params(self, model: PlantModel, stage: int, price: float) -> CoordinationParams:
        return with_carbon_price(
            relational_params(self.policy, model.params, model.plant, stage), price
        )

    def _decide(
        self, stage: int, price: float, budget_per_s: float | None
    ) -> dict[str, StageResult]:
        # Decisions change only with the stage, the carbon price and the budget: cached,
        # a year of 15-minute steps solves a handful of times, not 35,000.
        key = (stage, price, None if budget_per_s is None else round(budget_per_s, 12))
        if key not in self._decisions:
            fixed = {m.plant: m.fixed_rates for m in self.plants if m.fixed_rates is not None}
            self._decisions[key] = decide(
                stage,
                {m.plant: self._params(m, stage, price) for m in self.plants},
                objective=self.policy.government,
                budget_per_s=budget_per_s,
                period_s={m.plant: m.period_s for m in self.plants},
                fixed_rates=fixed,
            )
        return self._decisions[key]

    def _flows(
        self, plant: str, params: CoordinationParams, result: StageResult, split: Split | None
    ) -> _LinearFlows:
        # Transfers are linear in X (subsidies do not depend on it; the settlement's
        # beta_i and own flows are linear): two evaluations per decision, then a
        # multiply-add per step.
        key = (plant, result, None if split is None else split.shares)
        if key not in self._linear:
            at_zero = period_transfers(params, result, split, 0.0, 1.0)
            at_one = period_transfers(params, result, split, 1.0, 1.0)
            self._linear[key] = _LinearFlows(at_zero, {i: at_one[i] - at_zero[i] for i in PARTIES})
        return self._linear[key]

    def _split(self, model: PlantModel, params: CoordinationParams, stage: int) -> Split:
        key = (model.plant, stage, params.m_M, params.g, params.R)
        if key not in self._splits:
            self._splits[key] = settling_split(params)
        return self._splits[key]

    def _advance(
        self,
        model: PlantModel,
        params: CoordinationParams,
        result: StageResult,
        start_ms: int,
        end_ms: int,
        base: StepInput,
        price: float,
        stage: int,
    ) -> tuple[Any, ...]:
        h = (end_ms - start_ms) / MS_PER_S / model.period_s  # model periods in the step
        t0 = (start_ms - self.run_start_ms) / MS_PER_S / model.period_s
        x0 = self.x[model.plant]
        plant_inflow = model.inflow(result)
        x_mean, x_end = exact_step(x0, plant_inflow, model.delta, h)
        weight, x_discounted = discounted_step(x0, plant_inflow, model.delta, h, params.r, t0)
        self.x[model.plant] = x_end
        potential_t = x_mean * model.scale * h
        abatement_t = min(potential_t, model.max_reduction * base.abatable_t)
        # The model values tonnes actually avoided: X as realised, after the ceiling.
        realised = abatement_t / potential_t if potential_t > 0 else 1.0
        x_real = x_mean * realised
        baseline_t = base.abatable_t + base.fixed_t
        emissions_t = baseline_t - abatement_t
        seen = self.baseline_seen[model.plant]
        seen[0] += baseline_t
        seen[1] += h
        cost_m = effort_cost(params.k_M, result.E_M)
        cost_p = effort_cost(params.k_P, result.E_P)
        split = self._split(model, params, stage) if stage == 3 else None
        subsidy = (result.theta_M * cost_m + result.theta_P * cost_p) * h
        self.spent += subsidy
        # Undiscounted amounts over the step, then the same flows discounted: every flow
        # is linear in X, so the discounted X mean and weight value it exactly.
        flows = self._flows(model.plant, params, result, split)
        transfers = flows.over(x_real, h)
        payoff = _payoffs(params, cost_m, cost_p, x_real, h, subsidy, transfers)
        cash_transfers = flows.over(x_discounted * realised, weight)
        cash = _payoffs(
            params, cost_m, cost_p, x_discounted * realised, weight,
            subsidy * weight / h, cash_transfers,
        )  # fmt: skip
        # The carbon price is paid on what is still emitted (with_carbon_price): the
        # payoffs above count abated tonnes at it; the rest of the bill goes here.
        carbon_payment = price * emissions_t
        on_baseline = price * (emissions_t + x_real * h)
        payoff["M"] -= on_baseline
        payoff["G"] += on_baseline
        cash["M"] -= on_baseline * weight / h
        cash["G"] += on_baseline * weight / h
        continuation = self._continuation(model, params, result, split, x_end, t0 + h, price)
        resource = (cost_m + cost_p) * h + params.mu * subsidy
        value_added = (
            base.output * model.value_added_per_unit
            if model.value_added_per_unit is not None
            else math.nan
        )
        return (
            self.policy.name, model.plant, start_ms, end_ms, stage, result.name,
            result.E_M, result.E_P, result.sigma, result.theta_M, result.theta_P, price,
            x_mean, baseline_t, emissions_t, abatement_t, cost_m * h, cost_p * h,
            subsidy, resource, payoff["M"], payoff["P"], payoff["G"],
            transfers["M"], transfers["P"], transfers["G"],
            x_end, "" if split is None else split.method, carbon_payment, -transfers["G"],
            base.output, value_added, weight, cash["M"], cash["P"], cash["G"],
            continuation["M"], continuation["P"], continuation["G"], model.build_up_h,
            self.policy.money.label,
        )  # fmt: skip

    def _continuation(
        self,
        model: PlantModel,
        params: CoordinationParams,
        result: StageResult,
        split: Split | None,
        x: float,
        t: float,
        price: float,
    ) -> dict[Party, float]:
        """e^(-r t) phi_i(X): each party's value from state X if the decision in force
        went on, discounted to the run's start. The firm goes on paying the carbon price
        on its baseline, at the mean rate seen so far (a transfer to the government)."""
        discount = math.exp(-params.r * t)
        if split is not None:
            phi = {party: split.share(party).at(x) for party in PARTIES}
        else:
            phi = {
                party: result.value(party)
                + params.value_of(party) * (x - params.X0) / params.r_delta
                for party in PARTIES
            }
        baseline_t, periods = self.baseline_seen[model.plant]
        if price and periods > 0:
            bill = price * baseline_t / periods / params.r
            phi["M"] -= bill
            phi["G"] += bill
        return {party: discount * phi[party] for party in PARTIES}


@dataclass(frozen=True)
class _LinearFlows:
    """Per-period transfers a + b X of one decision (``period_transfers`` is linear in X)."""

    intercept: Mapping[Party, float]
    slope: Mapping[Party, float]

    def over(self, x: float, periods: float) -> dict[Party, float]:
        return {i: (self.intercept[i] + self.slope[i] * x) * periods for i in PARTIES}


def _payoffs(
    params: CoordinationParams,
    cost_m: float,
    cost_p: float,
    x: float,
    periods: float,
    subsidy: float,
    transfers: Mapping[Party, float],
) -> dict[Party, float]:
    """Each party's flow over ``periods`` at abatement ``x``, after ``transfers``: its
    value of abatement less its own effort cost; the government's also less the shadow
    cost mu of the ``subsidy`` it paid (the subsidy itself is in the transfers)."""
    own = {
        "M": (params.m_M * x - cost_m) * periods,
        "P": (params.m_P * x - cost_p) * periods,
        "G": params.g * x * periods - params.mu * subsidy,
    }
    return {party: own[party] + transfers[party] for party in PARTIES}


_SUMMED: Final = (
    "baseline_t", "emissions_t", "abatement_t", "cost_M", "cost_P", "subsidy", "resource_cost",
    "payoff_M", "payoff_P", "payoff_G", "transfer_M", "transfer_P", "transfer_G",
    "carbon_payment", "public_cost", "value_added", "cash_M", "cash_P", "cash_G",
)  # fmt: skip
_LAST: Final = ("x_end", "continuation_M", "continuation_P", "continuation_G", "build_up_h")


@dataclass
class RunningSummary:
    """One policy's comparison figures, accumulated row by row (``STEP_COLUMNS`` rows).

    Amounts are undiscounted sums (auditable against the rows); ``cash_*`` are the same
    flows discounted to the run's start; ``value_*`` add each plant's last continuation
    (the discounted value of the state reached). ``abatement_per_cost`` is tCO2e abated
    per unit of resource cost; ``public_cost`` is what the government paid (subsidies
    and settlement transfers, net), ``public_cost_per_t`` that per tCO2e abated, NaN
    when nothing was abated; ``cep`` is value added per tCO2e emitted and
    ``cep_welfare`` value added plus every party's payoff per tCO2e emitted, NaN
    without prices in the policy's currency.
    """

    policy: str
    plants: set[str] = field(default_factory=set)
    start_ms: int | None = None
    end_ms: int | None = None
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_SUMMED, 0.0))
    #: Per plant, the last row's state: X, continuation values, build-up time.
    last: dict[str, dict[str, float]] = field(default_factory=dict)
    splits: set[str] = field(default_factory=set)
    money: str = ""

    def add(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            record = dict(zip(STEP_COLUMNS, row, strict=True))
            plant = str(record["plant"])
            self.plants.add(plant)
            start, end = int(record["start_ms"]), int(record["end_ms"])
            self.start_ms = start if self.start_ms is None else min(self.start_ms, start)
            self.end_ms = end if self.end_ms is None else max(self.end_ms, end)
            for name in _SUMMED:
                self.sums[name] = self.sums.get(name, 0.0) + float(record[name])
            self.last[plant] = {name: float(record[name]) for name in _LAST}
            if record["split"]:
                self.splits.add(str(record["split"]))

    def record(self) -> dict[str, Any]:
        total = self.sums
        abated, baseline = total["abatement_t"], total["baseline_t"]
        emitted = total["emissions_t"]
        resource = total["resource_cost"]
        span_ms = 0 if self.start_ms is None or self.end_ms is None else self.end_ms - self.start_ms
        hours = span_ms / 3.6e6
        payoffs = {p: total[f"payoff_{p}"] for p in PARTIES}
        cash = {p: total[f"cash_{p}"] for p in PARTIES}
        values = {
            p: cash[p] + math.fsum(last[f"continuation_{p}"] for last in self.last.values())
            for p in PARTIES
        }
        build_up = max((last["build_up_h"] for last in self.last.values()), default=0.0)
        value_added = total["value_added"]
        payoff_total = sum(payoffs.values())
        return {
            "policy": self.policy,
            "money": self.money,
            "plants": len(self.plants),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "hours": hours,
            "baseline_t": baseline,
            "emissions_t": emitted,
            "abatement_t": abated,
            "abatement_share": abated / baseline if baseline > 0 else math.nan,
            "abatement_per_cost": abated / resource if resource > 0 else math.nan,
            "payoff_M": payoffs["M"],
            "payoff_P": payoffs["P"],
            "payoff_G": payoffs["G"],
            "payoff_total": payoff_total,
            "cash_M": cash["M"],
            "cash_P": cash["P"],
            "cash_G": cash["G"],
            "cash_total": sum(cash.values()),
            "value_M": values["M"],
            "value_P": values["P"],
            "value_G": values["G"],
            "value_total": sum(values.values()),
            "x_end": math.fsum(last["x_end"] for last in self.last.values()),
            "subsidy": total["subsidy"],
            "carbon_payment": total["carbon_payment"],
            "public_cost": total["public_cost"],
            "public_cost_per_t": total["public_cost"] / abated if abated > 0 else math.nan,
            "value_added": value_added,
            "cep": value_added / emitted if emitted > 0 else math.nan,
            "cep_welfare": (value_added + payoff_total) / emitted if emitted > 0 else math.nan,
            "transfers_balance": total["transfer_M"] + total["transfer_P"] + total["transfer_G"],
            "build_up_h": build_up,
            "short_window": bool(hours < build_up),
            "settled_by": ", ".join(sorted(self.splits)),
        }

    def state(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "plants": sorted(self.plants),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "sums": self.sums,
            "last": self.last,
            "splits": sorted(self.splits),
            "money": self.money,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RunningSummary:
        """Back from :meth:`state`; a state saved before valuation existed starts its
        new sums at zero."""
        return cls(
            state["policy"],
            set(state["plants"]),
            state["start_ms"],
            state["end_ms"],
            dict.fromkeys(_SUMMED, 0.0) | dict(state["sums"]),
            {plant: dict(last) for plant, last in state.get("last", {}).items()},
            set(state.get("splits", [])),
            str(state.get("money", "")),
        )


def summarise(steps: pd.DataFrame, money: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per policy, what its :class:`RunningSummary` would give over its rows (in order of
    appearance), summed column-wise; ``money`` names each policy's money unit."""
    records = []
    for policy, rows in steps.groupby("policy", sort=False):
        running = RunningSummary(str(policy), money=(money or {}).get(str(policy), ""))
        if len(rows):
            running.plants = set(rows["plant"].astype(str))
            running.start_ms = int(rows["start_ms"].min())
            running.end_ms = int(rows["end_ms"].max())
            sums = rows[list(_SUMMED)].sum()
            running.sums = {name: float(sums[name]) for name in _SUMMED}
            last = rows.groupby("plant", sort=False)[list(_LAST)].last()
            running.last = {
                str(plant): {name: float(values[name]) for name in _LAST}
                for plant, values in last.iterrows()
            }
            running.splits = {str(m) for m in rows["split"].unique() if isinstance(m, str) and m}
        records.append(running.record())
    return pd.DataFrame(records, columns=list(SUMMARY_COLUMNS))
