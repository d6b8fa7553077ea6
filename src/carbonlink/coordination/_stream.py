"""What the coordinator learns of one plant from the stream (coordination-model.md,
"Feeding the model from the stream"), period by period.

- Baseline: CO2e per period regressed on output over the policy's reference period
  (IPMVP style, ``fit_baseline``), fitted once that period has passed.
- Observed abatement: X_obs = (baseline - actual) per model period, smoothed.
- F: metered share x completeness x on-time share. The on-time share is measured by
  counting a period's readings when the coordinator first reads it and again one step
  later: what arrived in between was late.
- v_E: energy price / emission factor of each priced activity the plant meters,
  weighted by that activity's share of the plant's abatable emissions in the period.
- a_M, a_P*F and delta: recursive least squares on X_obs with the policy's values as
  priors (``DynamicsEstimator``), used once it has ``min_updates`` updates.
The estimates replace the policy's values in what the parties decide on; every period
row in the journal records which values were used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import numpy as np
import pandas as pd

from carbonlink.config import PlantConfig
from carbonlink.coordination._estimation import (
    Baseline,
    DynamicsEstimator,
    FunctionalAvailability,
    fit_baseline,
    functional_availability,
)
from carbonlink.coordination._journal import timestamp_runs
from carbonlink.coordination._policy import Estimation, Valuation
from carbonlink.coordination.model import CoordinationParams
from carbonlink.emissions import FactorLibrary, FactorSet
from carbonlink.errors import CarbonlinkError, ConfigError
from carbonlink.storage.windows import meter_factors, step_index

__all__ = ["PeriodData", "PlantStream", "emission_weights"]

log = logging.getLogger(__name__)

KG_PER_T: Final = 1000.0
MS_PER_S: Final = 1000.0
# Estimates further than this factor from the policy's value are taken as noise, not
# news: the prior stays (and a warning says so). A real change of that size calls for a
# new parameter file, not a drifting estimate.
MAX_PRIOR_RATIO: Final = 5.0
# Only periods this complete feed the estimator: a period with readings missing looks
# like abatement, and one such period can throw the estimates far off.
MIN_COMPLETENESS: Final = 0.9
# The regression on period means, X[k+1] = phi*X[k] + b*E, is exact only when the inflow
# was the same in both periods (otherwise X[k+1] also depends on the earlier efforts,
# with weights that depend on delta itself). Periods after a change do not feed it.
STEADY_RELATIVE: Final = 1e-3


@dataclass(frozen=True)
class PeriodData:
    """One plant's stored data for one coordinator period (readings ending in it)."""

    start_ms: int
    end_ms: int
    emissions: pd.DataFrame
    activity: pd.DataFrame
    recount: int | None = None  # readings of the previous period, counted again now

    @property
    def tco2e(self) -> float:
        return math.fsum(self.emissions["co2e_kg"]) / KG_PER_T if len(self.emissions) else 0.0

    @property
    def readings(self) -> int:
        return len(self.activity)

    @property
    def counted(self) -> dict[str, list[list[int]]]:
        """Exactly which emission readings were read, per meter as runs of timestamps
        (ms): what a report counted, so that readings stored later are told apart."""
        if not len(self.emissions):
            return {}
        times = self.emissions["time"].dt.as_unit("ms").astype("int64")
        return {
            str(meter): timestamp_runs(group.tolist())
            for meter, group in times.groupby(self.emissions["meter"])
        }


def emission_weights(plant: PlantConfig, factor_set: FactorSet) -> dict[str, float]:
    """Each emission-source meter's CO2e at nominal draw: the weights of "metered share"."""
    return {
        meter.id: meter.nominal_per_hour * factor.co2e_kg_per_unit
        for meter, factor in meter_factors(plant, factor_set)
    }


def _energy_values(
    plant: PlantConfig, valuation: Valuation, factor_set: FactorSet, source: str
) -> dict[str, float]:
    """v_E per priced activity the plant meters: money per tCO2e avoided."""
    library = FactorLibrary.builtin()
    metered = {m.activity for m in plant.meters if m.activity is not None and not m.output}
    values = {}
    for activity, price in valuation.energy_prices.items():
        if activity not in metered:
            continue
        try:
            factor = factor_set.resolve(library, activity, price.unit, region=plant.grid_region)
        except CarbonlinkError as exc:
            key = f"estimation.valuation.energy_prices.{activity}"
            raise ConfigError(source, key, f"{plant.id}: {exc}") from exc
        if factor.co2e_kg_per_unit > 0:
            values[activity] = price.price / (factor.co2e_kg_per_unit / KG_PER_T)
    return values


@dataclass
class PlantStream:
    """The coordinator's running picture of one plant."""

    plant: PlantConfig
    prior: CoordinationParams
    estimation: Estimation
    period_s: float
    weights: Mapping[str, float]
    energy_values: Mapping[str, float] = field(default_factory=dict)
    baseline: Baseline | None = None
    x_obs: float | None = None
    availability: FunctionalAvailability | None = None
    on_time: float = 1.0
    energy_value: float | None = None
    estimator: DynamicsEstimator | None = None
    _first_count: tuple[int, int, int] | None = None  # (start, end, readings at first read)
    _previous_in_force: tuple[float, float, float] | None = None

    @classmethod
    def create(
        cls,
        plant: PlantConfig,
        prior: CoordinationParams,
        estimation: Estimation,
        period_s: float,
        factor_set: FactorSet,
        policy_source: str = "policy",
    ) -> PlantStream:
        values = {}
        if estimation.valuation is not None:
            values = _energy_values(plant, estimation.valuation, factor_set, policy_source)
        return cls(
            plant,
            prior,
            estimation,
            period_s,
            emission_weights(plant, factor_set),
            values,
            estimator=DynamicsEstimator(
                prior,
                h=period_s / plant.simulation.abatement.period_s,
                forgetting=estimation.forgetting,
                prior_weight=estimation.prior_weight,
            ),
        )

    @property
    def model_periods(self) -> float:
        """The coordinator period in the plant's model periods (X is per model period)."""
        return self.period_s / self.plant.simulation.abatement.period_s

    # --- the reference period ----------------------------------------------------------

    def fit(self, reference: PeriodData) -> Baseline | None:
        """Fit the baseline on the reference period, cut into coordinator periods."""
        step_ms = round(self.period_s * MS_PER_S)
        co2e = _per_step(reference.emissions, "co2e_kg", reference.start_ms, step_ms)
        output_rows = reference.activity[
            reference.activity["meter"].isin({m.id for m in self.plant.meters if m.output})
        ]
        output = _per_step(output_rows, "value", reference.start_ms, step_ms)
        frame = pd.concat([co2e.rename("co2e_kg"), output.rename("output")], axis=1)
        steps = (reference.end_ms - reference.start_ms) // step_ms
        frame = frame[(frame.index >= 0) & (frame.index < steps)]
        try:
            baseline = fit_baseline(frame.dropna())
        except ValueError as exc:
            log.warning("coordinator: %s: no baseline yet (%s)", self.plant.id, exc)
            return None
        if not baseline.acceptable:
            log.warning(
                "coordinator: %s: baseline CV(RMSE) %.1f%% is above the limit; observed "
                "abatement is reported but not used to estimate the dynamics",
                self.plant.id,
                100 * baseline.cv_rmse,
            )
        self.baseline = baseline
        return baseline

    # --- every period --------------------------------------------------------------------

    def observe(
        self, data: PeriodData, in_force: tuple[float, float, float] | None
    ) -> float | None:
        """Fold in one period; ``in_force`` = (E_M, E_P, sigma) during it. Returns X_obs."""
        if data.recount is not None and self._first_count is not None:
            first = self._first_count[2]
            self.on_time = first / data.recount if data.recount > 0 else 1.0
        self._first_count = (data.start_ms, data.end_ms, data.readings)
        self.availability = functional_availability(
            self.plant,
            data.activity,
            data.start_ms,
            data.end_ms + 1,
            lateness=timedelta(0),  # unused: there is no arrival column; see on_time
            weights=self.weights,
        )
        self.availability = FunctionalAvailability(
            self.availability.metered_share, self.availability.completeness, self.on_time
        )
        self._energy_value(data)
        if self.baseline is None:
            return None
        x_raw = self._observed_x(self.baseline, data)
        if x_raw is None:
            return None
        alpha = self.estimation.smoothing
        previous = self.x_obs
        self.x_obs = x_raw if previous is None else alpha * x_raw + (1 - alpha) * previous
        nominal = round(self.period_s * MS_PER_S) == data.end_ms - data.start_ms
        complete = self.availability.completeness >= MIN_COMPLETENESS
        steady = (
            in_force is not None
            and self._previous_in_force is not None
            and all(
                math.isclose(a, b, rel_tol=STEADY_RELATIVE, abs_tol=1e-12)
                for a, b in zip(in_force, self._previous_in_force, strict=True)
            )
        )
        self._previous_in_force = in_force
        if (
            previous is not None
            and in_force is not None
            and nominal  # the estimator's step h is one nominal period
            and complete
            and steady
            and self.baseline.acceptable
            and self.estimator is not None
        ):
            self.estimator.update(previous, self.x_obs, *in_force)
        return self.x_obs

    @property
    def previous_window(self) -> tuple[int, int] | None:
        """The period to count again at the next step (timeliness)."""
        return None if self._first_count is None else self._first_count[:2]

    def _observed_x(self, baseline: Baseline, data: PeriodData) -> float | None:
        outputs = {m.id for m in self.plant.meters if m.output}
        produced = data.activity[data.activity["meter"].isin(outputs)]["value"].sum()
        if not len(data.emissions):
            return None
        predicted_kg = float(baseline.predict(pd.DataFrame({"output": [produced]})).iloc[0])
        avoided_t = (predicted_kg - data.tco2e * KG_PER_T) / KG_PER_T
        scale = self.plant.simulation.abatement.scale
        return avoided_t / (scale * self.model_periods)

    def _energy_value(self, data: PeriodData) -> None:
        if not self.energy_values or not len(data.emissions):
            return
        by_activity = data.emissions.groupby("activity")["co2e_kg"].sum()
        priced = {a: float(by_activity.get(a, 0.0)) for a in self.energy_values}
        total = sum(priced.values())
        if total > 0:
            self.energy_value = sum(self.energy_values[a] * w / total for a, w in priced.items())

    # --- what the parties decide on ------------------------------------------------------

    def params(self) -> tuple[CoordinationParams, dict[str, str]]:
        """The prior with every available estimate in place, and where each came from."""
        updates: dict[str, float] = {}
        sources: dict[str, str] = {}
        if self.estimation.functional_availability and self.availability is not None:
            updates["F"] = self.availability.value
            sources["F"] = "stream"
        valuation = self.estimation.valuation
        if valuation is not None and self.energy_value is not None:
            updates["m_M"] = self.energy_value + valuation.green_premium - valuation.platform_fee
            updates["m_P"] = valuation.platform_fee + valuation.platform_value
            sources["m_M"] = sources["m_P"] = "valuation"
        estimator = self.estimator
        if estimator is not None and estimator.updates >= self.estimation.min_updates:
            f_value = updates.get("F", self.prior.F)
            estimates = {"delta": estimator.delta, "a_M": estimator.a_M}
            if f_value > 0:
                estimates["a_P"] = estimator.a_P_F / f_value
            for name, value in estimates.items():
                prior = float(getattr(self.prior, name))
                if not math.isfinite(value) or not (
                    prior / MAX_PRIOR_RATIO <= value <= prior * MAX_PRIOR_RATIO
                ):
                    log.debug("coordinator: %s: %s estimate %g refused", self.plant.id, name, value)
                    continue
                updates[name] = value
                sources[name] = "rls"
        if not updates:
            return self.prior, sources
        try:
            merged = CoordinationParams.model_validate(self.prior.model_dump() | updates)
        except ValueError as exc:
            log.warning("coordinator: %s: estimates refused (%s)", self.plant.id, exc)
            return self.prior, {}
        return merged, sources

    # --- persistence -----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        baseline = None
        if self.baseline is not None:
            b = self.baseline
            baseline = {
                "drivers": list(b.drivers),
                "intercept": b.intercept,
                "coefficients": list(b.coefficients),
                "r2": b.r2,
                "cv_rmse": b.cv_rmse,
                "n": b.n,
            }
        availability = None
        if self.availability is not None:
            a = self.availability
            availability = [a.metered_share, a.completeness, a.on_time]
        return {
            "baseline": baseline,
            "x_obs": self.x_obs,
            "availability": availability,
            "on_time": self.on_time,
            "energy_value": self.energy_value,
            "estimator": None if self.estimator is None else self.estimator.state(),
            "first_count": None if self._first_count is None else list(self._first_count),
            "previous_in_force": self._previous_in_force,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        b = state.get("baseline")
        self.baseline = (
            None
            if b is None
            else Baseline(
                tuple(b["drivers"]),
                float(b["intercept"]),
                tuple(b["coefficients"]),
                float(b["r2"]),
                float(b["cv_rmse"]),
                int(b["n"]),
            )
        )
        self.x_obs = state.get("x_obs")
        a = state.get("availability")
        self.availability = None if a is None else FunctionalAvailability(*a)
        self.on_time = float(state.get("on_time", 1.0))
        self.energy_value = state.get("energy_value")
        if state.get("estimator") is not None:
            self.estimator = DynamicsEstimator.from_state(state["estimator"])
        previous = state.get("previous_in_force")
        self._previous_in_force = (
            None
            if previous is None
            else (float(previous[0]), float(previous[1]), float(previous[2]))
        )
        first = state.get("first_count")
        self._first_count = None if first is None else (int(first[0]), int(first[1]), int(first[2]))


def _per_step(frame: pd.DataFrame, column: str, start_ms: int, step_ms: int) -> pd.Series:
    if not len(frame):
        return pd.Series(dtype=np.float64)
    index = step_index(frame["time"], start_ms, step_ms)
    return frame[column].groupby(index).sum()
