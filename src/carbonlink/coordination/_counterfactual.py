"""Counterfactual replay: what a policy would have done to a recorded (or live) stream.

Given each step's *baseline* emissions of every plant (what it would have emitted with
no abatement, split into abatable energy emissions and fixed process emissions), a
:class:`PolicyEvaluator` runs the policy through the plant dynamics the simulators use:
the stage in force decides the efforts (``decide``), X follows dX/dt = I - delta*X
exactly over the step, a plant abates X*scale tCO2e per model period but at most
``max_reduction`` of its abatable emissions, and every party's flows, the subsidies
and the settlement transfers follow. ``policy backtest`` feeds it recorded windows;
the coordinator feeds its shadow policies the live stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pandas as pd

from carbonlink.config import PlantConfig
from carbonlink.coordination._cooperative import Split, shapley
from carbonlink.coordination._decide import decide
from carbonlink.coordination._flows import period_transfers, relational_params
from carbonlink.coordination._params import PARTIES, CoordinationParams, for_plant
from carbonlink.coordination._policy import Policy
from carbonlink.coordination._stages import StageResult

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

#: One row per plant and step, in this order (CSV of ``policy backtest``).
STEP_COLUMNS: Final = (
    "policy", "plant", "start_ms", "end_ms", "stage", "stage_name", "effort_firm",
    "effort_platform", "sigma", "theta_M", "theta_P", "carbon_price", "x", "baseline_t",
    "emissions_t", "abatement_t", "cost_M", "cost_P", "subsidy", "resource_cost",
    "payoff_M", "payoff_P", "payoff_G", "transfer_M", "transfer_P", "transfer_G",
)  # fmt: skip
SUMMARY_COLUMNS: Final = (
    "policy", "plants", "hours", "baseline_t", "emissions_t", "abatement_t",
    "abatement_share", "efficiency", "payoff_M", "payoff_P", "payoff_G", "payoff_total",
    "subsidy", "public_cost_per_t", "transfers_balance",
)  # fmt: skip


@dataclass(frozen=True)
class PlantModel:
    """One plant: the parameters its parties decide on, and how the plant responds.

    ``params`` is the model the decisions use (the policy's, or estimates). The plant
    itself turns efforts into abatement with its own productivities and decay
    (``a_m``, ``a_p_f`` = a_P*F, ``delta``: the simulator's, from its plant file),
    which need not match what the parties believe, exactly as in the closed loop.
    """

    plant: str
    params: CoordinationParams
    a_m: float
    a_p_f: float
    delta: float
    scale: float = 1.0  # tCO2e per model period for one unit of X
    period_s: float = 3600.0  # the model period
    max_reduction: float = 0.6  # ceiling on the abated share of abatable emissions

    @classmethod
    def believed(cls, plant: str, params: CoordinationParams, **kwargs: float) -> PlantModel:
        """A plant that responds exactly as the parameters say."""
        return cls(plant, params, params.a_M, params.a_P * params.F, params.delta, **kwargs)

    @classmethod
    def from_config(cls, plant: PlantConfig, params: CoordinationParams) -> PlantModel:
        """A configured plant: its parties decide on the policy's parameters for this
        plant (``for_plant``: its dynamics and size), and it responds as its simulator
        does."""
        abate = plant.simulation.abatement
        return cls(
            plant.id,
            for_plant(params, plant),
            abate.a_m,
            abate.a_p * abate.functional_availability,
            abate.delta,
            abate.scale,
            abate.period_s,
            abate.max_reduction,
        )

    def inflow(self, result: StageResult) -> float:
        """I = sigma*(a_m*E_M + a_P*F*E_P) of the plant itself (the simulator's formula)."""
        return result.sigma * (self.a_m * result.E_M + self.a_p_f * result.E_P)


@dataclass(frozen=True)
class StepInput:
    """A plant's baseline over one step: tCO2e it would emit with no abatement."""

    abatable_t: float
    fixed_t: float = 0.0


@dataclass
class PolicyEvaluator:
    """Runs ``policy`` forward step by step from ``run_start_ms`` for ``plants``."""

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
    _splits: dict[tuple[str, int, float], Split] = field(default_factory=dict)
    _decisions: dict[tuple[int, float, float | None], dict[str, StageResult]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        for model in self.plants:
            self.x.setdefault(model.plant, model.params.X0)

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
        params = relational_params(self.policy, model.params, model.plant, stage)
        return params if price == 0 else params.model_copy(update={"m_M": params.m_M + price})

    def _decide(
        self, stage: int, price: float, budget_per_s: float | None
    ) -> dict[str, StageResult]:
        # Decisions change only with the stage, the carbon price and the budget: cached,
        # a year of 15-minute steps solves a handful of times, not 35,000.
        key = (stage, price, None if budget_per_s is None else round(budget_per_s, 12))
        if key not in self._decisions:
            self._decisions[key] = decide(
                stage,
                {m.plant: self._params(m, stage, price) for m in self.plants},
                objective=self.policy.government,
                budget_per_s=budget_per_s,
                period_s={m.plant: m.period_s for m in self.plants},
            )
        return self._decisions[key]

    def _split(self, model: PlantModel, params: CoordinationParams, stage: int) -> Split:
        key = (model.plant, stage, params.m_M)
        if key not in self._splits:
            self._splits[key] = shapley(params)
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
        x0 = self.x[model.plant]
        x_mean, self.x[model.plant] = exact_step(x0, model.inflow(result), model.delta, h)
        potential_t = x_mean * model.scale * h
        abatement_t = min(potential_t, model.max_reduction * base.abatable_t)
        # The model values tonnes actually avoided: X as realised, after the ceiling.
        x_real = abatement_t / (model.scale * h)
        baseline_t = base.abatable_t + base.fixed_t
        cost_m = params.k_M * result.E_M**2 / 2.0
        cost_p = params.k_P * result.E_P**2 / 2.0
        split = self._split(model, params, stage) if stage == 3 else None
        transfers = period_transfers(params, result, split, x_real, h)
        subsidy = (result.theta_M * cost_m + result.theta_P * cost_p) * h
        self.spent += subsidy
        own = {
            "M": (params.m_M * x_real - cost_m) * h,
            "P": (params.m_P * x_real - cost_p) * h,
            "G": params.g * x_real * h - params.mu * subsidy,
        }
        payoff = {party: own[party] + transfers[party] for party in PARTIES}
        resource = (cost_m + cost_p) * h + params.mu * subsidy
        return (
            self.policy.name, model.plant, start_ms, end_ms, stage, result.name,
            result.E_M, result.E_P, result.sigma, result.theta_M, result.theta_P, price,
            x_mean, baseline_t, baseline_t - abatement_t, abatement_t, cost_m * h, cost_p * h,
            subsidy, resource, payoff["M"], payoff["P"], payoff["G"],
            transfers["M"], transfers["P"], transfers["G"],
        )  # fmt: skip


def exact_step(x0: float, inflow: float, delta: float, h: float) -> tuple[float, float]:
    """(mean of X over the step, X at its end) for dX/dt = I - delta*X, exact for any h.

    A step of no length (h <= 0) leaves X where it is: its mean is X itself.
    """
    if h <= 0:
        return x0, x0
    if delta <= 0:  # no decay: X grows linearly
        return x0 + inflow * h / 2.0, x0 + inflow * h
    decay = math.exp(-delta * h)
    target = inflow / delta
    return target + (x0 - target) * (1.0 - decay) / (delta * h), target + (x0 - target) * decay


_SUMMED: Final = (
    "baseline_t", "emissions_t", "abatement_t", "cost_M", "cost_P", "subsidy", "resource_cost",
    "payoff_M", "payoff_P", "payoff_G", "transfer_M", "transfer_P", "transfer_G",
)  # fmt: skip


@dataclass
class RunningSummary:
    """One policy's comparison figures, accumulated row by row (``STEP_COLUMNS`` rows).

    Amounts are undiscounted sums (auditable against the rows); ``efficiency`` is tCO2e
    abated per unit of resource cost (docs/coordination.md, "Carbon emission
    efficiency"); ``public_cost_per_t`` is (1 + mu) x subsidy per tCO2e abated, NaN when
    nothing was abated.
    """

    policy: str
    plants: set[str] = field(default_factory=set)
    start_ms: int | None = None
    end_ms: int | None = None
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_SUMMED, 0.0))

    def add(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            record = dict(zip(STEP_COLUMNS, row, strict=True))
            self.plants.add(record["plant"])
            start, end = int(record["start_ms"]), int(record["end_ms"])
            self.start_ms = start if self.start_ms is None else min(self.start_ms, start)
            self.end_ms = end if self.end_ms is None else max(self.end_ms, end)
            for name in _SUMMED:
                self.sums[name] += float(record[name])

    def record(self) -> dict[str, Any]:
        total = self.sums
        abated, baseline = total["abatement_t"], total["baseline_t"]
        resource = total["resource_cost"]
        # resource cost = effort costs + mu x subsidy, so (1 + mu) x subsidy is this (the
        # difference is exactly 0 without subsidies, but for float residue):
        public = total["subsidy"] + max(0.0, resource - total["cost_M"] - total["cost_P"])
        span_ms = 0 if self.start_ms is None or self.end_ms is None else self.end_ms - self.start_ms
        hours = span_ms / 3.6e6
        payoffs = {p: total[f"payoff_{p}"] for p in PARTIES}
        return {
            "policy": self.policy,
            "plants": len(self.plants),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "hours": hours,
            "baseline_t": baseline,
            "emissions_t": total["emissions_t"],
            "abatement_t": abated,
            "abatement_share": abated / baseline if baseline > 0 else math.nan,
            "efficiency": abated / resource if resource > 0 else math.nan,
            "payoff_M": payoffs["M"],
            "payoff_P": payoffs["P"],
            "payoff_G": payoffs["G"],
            "payoff_total": sum(payoffs.values()),
            "subsidy": total["subsidy"],
            "public_cost_per_t": public / abated if abated > 0 else math.nan,
            "transfers_balance": total["transfer_M"] + total["transfer_P"] + total["transfer_G"],
        }

    def state(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "plants": sorted(self.plants),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "sums": self.sums,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RunningSummary:
        return cls(
            state["policy"],
            set(state["plants"]),
            state["start_ms"],
            state["end_ms"],
            dict(state["sums"]),
        )


def summarise(steps: pd.DataFrame) -> pd.DataFrame:
    """Per policy, the :class:`RunningSummary` of its rows (in order of appearance)."""
    records = []
    for policy, rows in steps.groupby("policy", sort=False):
        running = RunningSummary(str(policy))
        running.add(rows[list(STEP_COLUMNS)].itertuples(index=False))
        records.append(running.record())
    return pd.DataFrame(records, columns=list(SUMMARY_COLUMNS))
