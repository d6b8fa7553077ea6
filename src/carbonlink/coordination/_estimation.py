"""Model parameters estimated from the telemetry stream (coordination-model.md,
"Feeding the model from the stream").

Everything here is a pure function or a small value/estimator class over pandas and
numpy, so the coordination service can call it on whatever window it has just read
from the store (``EMISSION_COLUMNS`` / ``ACTIVITY_COLUMNS`` frames).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from carbonlink.config import PlantConfig
from carbonlink.coordination.model import CoordinationParams

__all__ = [
    "ARRIVAL_COLUMN",
    "CO2E_COLUMN",
    "CVRMSE_LIMIT",
    "OUTPUT_COLUMN",
    "Baseline",
    "DynamicsEstimator",
    "FunctionalAvailability",
    "calibrate_cost",
    "energy_value_per_tco2e",
    "fit_baseline",
    "functional_availability",
    "observed_abatement",
    "per_window",
]

#: Per-window frame columns used by the baseline: emissions (kg CO2e) and production output.
CO2E_COLUMN: Final = "co2e_kg"
OUTPUT_COLUMN: Final = "output"
#: Optional drivers picked up automatically when the frame carries them.
OPTIONAL_DRIVERS: Final[tuple[str, ...]] = ("ambient",)
#: Optional column of an activity frame: when the platform stored the reading (UTC).
ARRIVAL_COLUMN: Final = "arrival"
#: Acceptance threshold on CV(RMSE) of an hourly baseline.  ASHRAE Guideline 14 allows
#: 30% for hourly calibrated models; we use the stricter 20% commonly required of
#: IPMVP option-C regression baselines, since the savings we measure are small.
CVRMSE_LIMIT: Final = 0.20
KG_PER_TONNE: Final = 1000.0
MS_PER_S: Final = 1000.0


# --------------------------------------------------------------------------- baseline


@dataclass(frozen=True, slots=True)
class Baseline:
    """A linear IPMVP-style baseline ``co2e = b0 + sum_j b_j * driver_j``
    (coordination-model.md, "Feeding the model from the stream": observed abatement).

    ``r2`` and ``cv_rmse`` describe the fit on the reference period; ``cv_rmse`` follows
    ASHRAE Guideline 14: sqrt(SSE / (n - p)) / mean(y), p counting the intercept.
    """

    drivers: tuple[str, ...]
    intercept: float
    coefficients: tuple[float, ...]
    r2: float
    cv_rmse: float
    n: int

    @property
    def acceptable(self) -> bool:
        """True when CV(RMSE) meets ``CVRMSE_LIMIT`` (our acceptance rule, see there)."""
        return self.cv_rmse < CVRMSE_LIMIT

    def predict(self, frame: pd.DataFrame) -> pd.Series:
        """Expected kg CO2e per window for ``frame``'s driver values, on its index."""
        missing = [d for d in self.drivers if d not in frame.columns]
        if missing:
            raise KeyError(f"frame lacks baseline drivers {missing}")
        x = frame[list(self.drivers)].to_numpy(dtype=np.float64)
        values = self.intercept + x @ np.asarray(self.coefficients, dtype=np.float64)
        return pd.Series(values, index=frame.index, name="baseline_co2e_kg")


def fit_baseline(reference: pd.DataFrame, drivers: tuple[str, ...] | None = None) -> Baseline:
    """Least-squares baseline of per-window CO2e on output (plus ``ambient`` when present).

    ``reference`` is a per-window frame (see ``per_window``) over a reference period with
    no abatement effort.  Windows with a missing value are dropped rather than imputed:
    a baseline fitted on guessed data would bias every abatement figure after it.
    """
    if drivers is None:
        drivers = (OUTPUT_COLUMN, *(d for d in OPTIONAL_DRIVERS if d in reference.columns))
    clean = reference[[CO2E_COLUMN, *drivers]].dropna()
    n, p = len(clean), len(drivers) + 1
    if n <= p:
        raise ValueError(f"need more than {p} complete windows to fit a baseline, got {n}")
    y = clean[CO2E_COLUMN].to_numpy(dtype=np.float64)
    design = np.column_stack([np.ones(n), clean[list(drivers)].to_numpy(dtype=np.float64)])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ beta
    sse = float(residuals @ residuals)
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - sse / sst if sst > 0 else 1.0
    mean = float(y.mean())
    cv = math.sqrt(sse / (n - p)) / mean if mean > 0 else math.inf
    return Baseline(
        drivers=tuple(drivers),
        intercept=float(beta[0]),
        coefficients=tuple(float(b) for b in beta[1:]),
        r2=r2,
        cv_rmse=cv,
        n=n,
    )


def observed_abatement(baseline: Baseline, actual: pd.DataFrame, smoothing: float) -> pd.Series:
    """X_obs = baseline - actual, exponentially smoothed (kg CO2e per window).

    coordination-model.md, "Feeding the model from the stream".  ``smoothing`` is the
    EWM weight of the newest window in (0, 1]; 1 means no smoothing.  The recursive
    (``adjust=False``) form is used because it is what a stream can update in O(1).
    """
    if not 0 < smoothing <= 1:
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
    raw = baseline.predict(actual) - actual[CO2E_COLUMN].astype(np.float64)
    return raw.ewm(alpha=smoothing, adjust=False).mean().rename("abatement_co2e_kg")


def per_window(
    plant: PlantConfig, emissions: pd.DataFrame, activity: pd.DataFrame, freq: str = "1h"
) -> pd.DataFrame:
    """Per-window ``co2e_kg`` and ``output`` from store frames, indexed by window start.

    Output is the sum of the plant's ``output: true`` meters, so those meters should
    share a unit; windows with no emissions or no output reading are left NaN, which
    ``fit_baseline`` drops.
    """
    output_ids = {m.id for m in plant.meters if m.output}
    co2e = emissions.groupby(emissions["time"].dt.floor(freq))[CO2E_COLUMN].sum()
    out_rows = activity[activity["meter"].isin(output_ids)]
    output = out_rows.groupby(out_rows["time"].dt.floor(freq))["value"].sum()
    frame = pd.concat([co2e.rename(CO2E_COLUMN), output.rename(OUTPUT_COLUMN)], axis=1)
    frame.index.name = "time"
    return frame.sort_index()


# ---------------------------------------------------------------------- availability


@dataclass(frozen=True, slots=True)
class FunctionalAvailability:
    """F = metered share x completeness x on-time share, each in [0, 1]
    (coordination-model.md, "Feeding the model from the stream")."""

    metered_share: float
    completeness: float
    on_time: float

    @property
    def value(self) -> float:
        product = self.metered_share * self.completeness * self.on_time
        return min(1.0, max(0.0, product))


def functional_availability(
    plant: PlantConfig,
    activity: pd.DataFrame,
    start_ms: int,
    end_ms: int,
    *,
    lateness: timedelta,
    weights: Mapping[str, float] | None = None,
) -> FunctionalAvailability:
    """F of ``plant`` over [start_ms, end_ms) from its stored activity readings.

    - metered share: weight of the emission-source meters that reported at least once,
      over the weight of all of them.  ``weights`` (e.g. each meter's expected CO2e) is
      our proxy for "share of energy"; meters have different units so, without it,
      every source counts equally.
    - completeness: per meter, received / expected readings (window / sample_period_s),
      capped at 1, averaged over all meters (output meters feed the baseline too).
    - on-time share: readings whose ``arrival`` is within ``lateness`` of their ``time``.
      ``ACTIVITY_COLUMNS`` has no arrival column, so without one it is 1: the store only
      holds what arrived, and lateness then shows up as missing readings instead.
    """
    if end_ms <= start_ms:
        raise ValueError(f"empty window [{start_ms}, {end_ms})")
    # Compare as timestamps, not raw integers: frames may carry ms or ns resolution.
    times = pd.to_datetime(activity["time"], utc=True)
    start, end = (pd.Timestamp(t, unit="ms", tz="UTC") for t in (start_ms, end_ms))
    rows = activity[(times >= start) & (times < end)]
    if "plant" in rows.columns:
        rows = rows[rows["plant"] == plant.id]
    counts = rows["meter"].value_counts()

    sources = [m for m in plant.meters if m.activity is not None]
    total = sum(_weight(weights, m.id) for m in sources)
    reported = sum(_weight(weights, m.id) for m in sources if counts.get(m.id, 0) > 0)
    metered = reported / total if total > 0 else 0.0

    window_s = (end_ms - start_ms) / MS_PER_S
    ratios = [
        min(1.0, counts.get(m.id, 0) / max(1.0, window_s / m.sample_period_s)) for m in plant.meters
    ]
    completeness = float(np.mean(ratios))

    on_time = 1.0
    if ARRIVAL_COLUMN in rows.columns and len(rows):
        delay = pd.to_datetime(rows[ARRIVAL_COLUMN], utc=True) - pd.to_datetime(
            rows["time"], utc=True
        )
        on_time = float((delay <= pd.Timedelta(lateness)).mean())
    return FunctionalAvailability(metered, completeness, on_time)


def _weight(weights: Mapping[str, float] | None, meter_id: str) -> float:
    return 1.0 if weights is None else float(weights.get(meter_id, 0.0))


# ------------------------------------------------------------------- values and costs


def energy_value_per_tco2e(energy_price_per_unit: float, kg_co2e_per_unit: float) -> float:
    """v_E = price / emission factor: money saved per tCO2e avoided by using less energy.

    ``energy_price_per_unit`` in money per energy unit (e.g. CNY/kWh) and
    ``kg_co2e_per_unit`` in kg CO2e per that unit give money per tCO2e
    (coordination-model.md, Flow payoffs and "Feeding the model from the stream").
    """
    if kg_co2e_per_unit <= 0:
        raise ValueError(f"emission factor must be > 0 kg/unit, got {kg_co2e_per_unit}")
    return energy_price_per_unit / (kg_co2e_per_unit / KG_PER_TONNE)


def calibrate_cost(cost: float, effort: float) -> float:
    """k_i = 2*cost/E_i^2: the coefficient that makes k*E^2/2 equal the observed cost
    of effort E over a reference window (coordination-model.md, "Feeding the model")."""
    if effort == 0:
        raise ValueError("effort must be non-zero to calibrate a cost coefficient")
    return 2.0 * cost / effort**2


# ------------------------------------------------------------------ online dynamics

#: Bounds on phi = exp(-delta*h) when mapping back to delta: outside (0, 1) the decay
#: rate is undefined, so a noisy early estimate is clipped rather than raising.
PHI_MIN: Final = 1e-6
PHI_MAX: Final = 1.0 - 1e-9


class DynamicsEstimator:
    """Recursive least squares with forgetting on the discrete dynamics
    (coordination-model.md, Dynamics and "Feeding the model from the stream").

    X[k+1] = phi*X[k] + b_M*sigma*E_M + b_P*sigma*E_P with phi = exp(-delta*h),
    b_M = a_M*(1-phi)/delta, b_P = a_P*F*(1-phi)/delta.  The prior parameters give the
    initial estimate; ``prior_weight`` is how many unit-regressor observations the prior
    is worth (initial covariance I/prior_weight), so a small weight lets data dominate.
    ``forgetting`` in (0, 1] discounts old data geometrically (memory ~ 1/(1-forgetting)).
    """

    def __init__(
        self,
        prior: CoordinationParams,
        h: float,
        forgetting: float = 0.99,
        prior_weight: float = 1.0,
    ) -> None:
        if h <= 0:
            raise ValueError(f"h must be > 0, got {h}")
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        if prior_weight <= 0:
            raise ValueError(f"prior_weight must be > 0, got {prior_weight}")
        self._h = h
        self._lambda = forgetting
        phi = math.exp(-prior.delta * h)
        gain = (1.0 - phi) / prior.delta
        self._theta: npt.NDArray[np.float64] = np.array(
            [phi, prior.a_M * gain, prior.a_P * prior.F * gain], dtype=np.float64
        )
        self._cov: npt.NDArray[np.float64] = np.eye(3, dtype=np.float64) / prior_weight
        self._updates = 0

    @property
    def updates(self) -> int:
        return self._updates

    def state(self) -> dict[str, Any]:
        """JSON-ready state, so a restarted coordinator keeps what it has learnt."""
        return {
            "h": self._h,
            "forgetting": self._lambda,
            "theta": self._theta.tolist(),
            "cov": self._cov.tolist(),
            "updates": self._updates,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DynamicsEstimator:
        estimator = cls.__new__(cls)
        estimator._h = float(state["h"])
        estimator._lambda = float(state["forgetting"])
        estimator._theta = np.asarray(state["theta"], dtype=np.float64)
        estimator._cov = np.asarray(state["cov"], dtype=np.float64)
        estimator._updates = int(state["updates"])
        return estimator

    @property
    def coefficients(self) -> tuple[float, float, float]:
        """(phi, b_M, b_P) as currently estimated."""
        phi, b_m, b_p = self._theta
        return float(phi), float(b_m), float(b_p)

    def update(self, x_k: float, x_next: float, e_m: float, e_p: float, sigma: float = 1.0) -> None:
        """Fold in one observed step X[k] -> X[k+1] under efforts (E_M, E_P) and sigma."""
        z = np.array([x_k, sigma * e_m, sigma * e_p], dtype=np.float64)
        pz = self._cov @ z
        gain = pz / (self._lambda + float(z @ pz))
        self._theta = self._theta + gain * (x_next - float(z @ self._theta))
        cov = (self._cov - np.outer(gain, pz)) / self._lambda
        # Symmetrise: rounding in the rank-one downdate otherwise drifts P off symmetry.
        self._cov = (cov + cov.T) / 2.0
        self._updates += 1

    def _phi(self) -> float:
        return min(PHI_MAX, max(PHI_MIN, float(self._theta[0])))

    def _scale(self) -> float:
        """delta/(1-phi): turns an inflow coefficient b back into a productivity."""
        phi = self._phi()
        return (-math.log(phi) / self._h) / (1.0 - phi)

    @property
    def delta(self) -> float:
        return -math.log(self._phi()) / self._h

    @property
    def a_M(self) -> float:  # noqa: N802 - spec name
        return float(self._theta[1]) * self._scale()

    @property
    def a_P_F(self) -> float:  # noqa: N802 - spec name
        """a_P*F: the two are only identified as a product from X alone."""
        return float(self._theta[2]) * self._scale()
