"""Stream-fed parameter estimation (coordination-model.md, "Feeding the model from the stream")."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from carbonlink.config import PlantConfig
from carbonlink.coordination import CoordinationParams, SharingLevel, relational_availability
from carbonlink.coordination._estimation import (
    ARRIVAL_COLUMN,
    DynamicsEstimator,
    calibrate_cost,
    energy_value_per_tco2e,
    fit_baseline,
    functional_availability,
    observed_abatement,
    per_window,
)
from carbonlink.storage._base import ACTIVITY_COLUMNS, typed_frame

SEED = 20261123
HOUR_MS = 3_600_000
START = pd.Timestamp("2026-01-01", tz="UTC")


def _plant() -> PlantConfig:
    meter = {"unit": "kWh", "rated_per_hour": 100.0, "nominal_per_hour": 50.0}
    return PlantConfig.model_validate(
        {
            "id": "p1",
            "name": "Plant",
            "archetype": "cement",
            "grid_region": "cn",
            "factor_set": "fs",
            "meters": [
                {"id": "elec", "activity": "electricity", "sample_period_s": 60.0, **meter},
                {"id": "gas", "activity": "natural_gas", "sample_period_s": 60.0, **meter},
                {"id": "out", "output": True, "sample_period_s": 600.0, **meter},
            ],
        }
    )


def _readings(meter: str, count: int, period_s: float) -> pd.DataFrame:
    times = START + pd.to_timedelta(np.arange(count) * period_s, unit="s")
    return pd.DataFrame(
        {"time": times.astype("datetime64[ms, UTC]"), "plant": "p1", "meter": meter, "value": 1.0}
    )


# ------------------------------------------------------------------------ baseline


def test_baseline_recovers_exact_line() -> None:
    frame = pd.DataFrame({"output": [1.0, 2.0, 3.0, 4.0], "co2e_kg": [12.0, 14.0, 16.0, 18.0]})
    base = fit_baseline(frame)
    assert base.intercept == pytest.approx(10.0)
    assert base.coefficients == pytest.approx((2.0,))
    assert base.r2 == pytest.approx(1.0)
    assert base.cv_rmse == pytest.approx(0.0, abs=1e-9)
    assert base.acceptable


def test_baseline_cv_rmse_by_hand() -> None:
    # Fit of y=[1,3,2,4] on x=[1,2,3,4]: slope 0.8, intercept 0.5, residuals
    # [-0.3, 0.9, -0.9, 0.3] -> SSE 1.8, n-p = 2, mean 2.5: CV = sqrt(0.9)/2.5.
    frame = pd.DataFrame({"output": [1.0, 2.0, 3.0, 4.0], "co2e_kg": [1.0, 3.0, 2.0, 4.0]})
    base = fit_baseline(frame)
    assert base.coefficients[0] == pytest.approx(0.8)
    assert base.intercept == pytest.approx(0.5)
    assert base.r2 == pytest.approx(1 - 1.8 / 5.0)
    assert base.cv_rmse == pytest.approx(math.sqrt(0.9) / 2.5)
    assert not base.acceptable


def test_baseline_uses_ambient_when_present() -> None:
    rng = np.random.default_rng(SEED)
    output, ambient = rng.uniform(0, 10, 50), rng.uniform(-5, 30, 50)
    frame = pd.DataFrame(
        {"output": output, "ambient": ambient, "co2e_kg": 3 + 2 * output + 0.5 * ambient}
    )
    base = fit_baseline(frame)
    assert base.drivers == ("output", "ambient")
    assert base.coefficients == pytest.approx((2.0, 0.5))


def test_baseline_needs_enough_windows() -> None:
    with pytest.raises(ValueError, match="complete windows"):
        fit_baseline(pd.DataFrame({"output": [1.0, None], "co2e_kg": [1.0, 2.0]}))


def test_observed_abatement_smoothed() -> None:
    frame = pd.DataFrame({"output": [1.0, 2.0, 3.0, 4.0], "co2e_kg": [12.0, 14.0, 16.0, 18.0]})
    base = fit_baseline(frame)
    actual = pd.DataFrame({"output": [1.0, 1.0, 1.0], "co2e_kg": [12.0, 10.0, 10.0]})
    # raw = [0, 2, 2]; EWM alpha 0.5: 0, 1, 1.5
    assert observed_abatement(base, actual, 0.5).tolist() == pytest.approx([0.0, 1.0, 1.5])
    assert observed_abatement(base, actual, 1.0).tolist() == pytest.approx([0.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="smoothing"):
        observed_abatement(base, actual, 0.0)


def test_per_window_sums_emissions_and_output() -> None:
    plant = _plant()
    emissions = pd.DataFrame(
        {"time": [START, START + pd.Timedelta(minutes=30), START + pd.Timedelta(hours=1)]}
    ).assign(co2e_kg=[1.0, 2.0, 5.0])
    activity = pd.concat([_readings("out", 12, 600.0), _readings("elec", 3, 60.0)])
    frame = per_window(plant, emissions, activity)
    assert frame["co2e_kg"].tolist() == [3.0, 5.0]
    assert frame["output"].tolist() == [6.0, 6.0]  # elec is not an output meter


# -------------------------------------------------------------------- availability


def test_functional_availability_full_data() -> None:
    activity = pd.concat(
        [_readings("elec", 60, 60.0), _readings("gas", 60, 60.0), _readings("out", 6, 600.0)]
    )
    start = int(START.value // 1_000_000)
    f = functional_availability(
        _plant(), activity, start, start + HOUR_MS, lateness=timedelta(minutes=5)
    )
    assert (f.metered_share, f.completeness, f.on_time) == (1.0, 1.0, 1.0)
    assert f.value == 1.0


def test_functional_availability_on_store_frame() -> None:
    # The exact shape store.activity() returns: no arrival column, so on-time is 1.
    raw = pd.concat([_readings("elec", 45, 60.0), _readings("out", 6, 600.0)])
    raw["time"] = raw["time"].astype("datetime64[ns, UTC]")
    activity = typed_frame(ACTIVITY_COLUMNS, raw.assign(unit="kWh", duration_s=60.0, quality="ok"))
    start = int(START.value // 1_000_000)
    f = functional_availability(
        _plant(), activity, start, start + HOUR_MS, lateness=timedelta(minutes=5)
    )
    assert f.on_time == 1.0
    assert f.completeness == pytest.approx((0.75 + 0 + 1) / 3)
    assert f.value == pytest.approx(0.5 * (0.75 + 1) / 3)


def test_functional_availability_by_hand() -> None:
    # gas silent: metered 1/2; completeness (30/60 + 0 + 6/6)/3 = 0.5;
    # arrival: 9 of the 36 readings late by 10 min > 5 min lateness -> on time 0.75.
    activity = pd.concat([_readings("elec", 30, 60.0), _readings("out", 6, 600.0)])
    delays = [pd.Timedelta(minutes=10) if i % 4 == 0 else pd.Timedelta(0) for i in range(36)]
    activity[ARRIVAL_COLUMN] = activity["time"] + pd.to_timedelta(delays)
    start = int(START.value // 1_000_000)
    f = functional_availability(
        _plant(), activity, start, start + HOUR_MS, lateness=timedelta(minutes=5)
    )
    assert f.metered_share == pytest.approx(0.5)
    assert f.completeness == pytest.approx(0.5)
    assert f.on_time == pytest.approx(0.75)
    assert f.value == pytest.approx(0.1875)
    weighted = functional_availability(
        _plant(),
        activity,
        start,
        start + HOUR_MS,
        lateness=timedelta(minutes=5),
        weights={"elec": 3.0, "gas": 1.0},
    )
    assert weighted.metered_share == pytest.approx(0.75)


def test_functional_availability_ignores_out_of_window_and_empty() -> None:
    activity = _readings("elec", 60, 60.0)
    start = int(START.value // 1_000_000) + 10 * HOUR_MS
    f = functional_availability(
        _plant(), activity, start, start + HOUR_MS, lateness=timedelta(minutes=5)
    )
    assert f.value == 0.0


def test_relational_availability_rule() -> None:
    assert relational_availability(SharingLevel.NONE) == 0.0
    assert relational_availability(SharingLevel.VERIFIED) == 0.5
    assert relational_availability(SharingLevel.JOINT) == 1.0
    assert relational_availability(SharingLevel.LIVE, {"a"}, {"a", "b"}) == pytest.approx(0.375)


def test_energy_value_and_cost_calibration() -> None:
    # 0.6 CNY/kWh at 0.5 kg/kWh: 2000 kWh per tonne -> 1200 CNY/tCO2e
    assert energy_value_per_tco2e(0.6, 0.5) == pytest.approx(1200.0)
    assert calibrate_cost(9.0, 3.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="emission factor"):
        energy_value_per_tco2e(1.0, 0.0)
    with pytest.raises(ValueError, match="effort"):
        calibrate_cost(1.0, 0.0)


# ------------------------------------------------------------------ online dynamics

TOLERANCE = 0.05


def _simulate(
    est: DynamicsEstimator,
    rng: np.random.Generator,
    steps: int,
    delta: float,
    a_m: float,
    a_p_f: float,
    x0: float = 0.0,
    h: float = 1.0,
) -> float:
    """Feed ``steps`` noisy exact-discretisation steps to ``est``; return the last X."""
    phi = math.exp(-delta * h)
    x = x0
    for _ in range(steps):
        e_m, e_p = rng.uniform(0.0, 2.0, 2)
        x_next = phi * x + (1 - phi) * (a_m * e_m + a_p_f * e_p) / delta
        x_next += rng.normal(0.0, 0.01)
        est.update(x, x_next, e_m, e_p)
        x = x_next
    return x


def test_estimator_without_data_returns_priors(reference: CoordinationParams) -> None:
    est = DynamicsEstimator(reference, h=1.0)
    assert est.updates == 0
    assert est.delta == pytest.approx(reference.delta)
    assert est.a_M == pytest.approx(reference.a_M)
    assert est.a_P_F == pytest.approx(reference.a_P * reference.F)


def test_estimator_converges_to_truth(reference: CoordinationParams) -> None:
    rng = np.random.default_rng(SEED)
    truth = {"delta": 0.35, "a_m": 1.4, "a_p_f": 0.3}
    est = DynamicsEstimator(reference, h=1.0, forgetting=1.0, prior_weight=1e-3)
    _simulate(est, rng, 2000, **truth)
    assert est.delta == pytest.approx(truth["delta"], rel=TOLERANCE)
    assert est.a_M == pytest.approx(truth["a_m"], rel=TOLERANCE)
    assert est.a_P_F == pytest.approx(truth["a_p_f"], rel=TOLERANCE)


def test_estimator_tracks_step_change_in_delta(reference: CoordinationParams) -> None:
    rng = np.random.default_rng(SEED + 1)
    est = DynamicsEstimator(reference, h=1.0, forgetting=0.98, prior_weight=1e-3)
    x = _simulate(est, rng, 1000, delta=0.2, a_m=1.0, a_p_f=0.48)
    assert est.delta == pytest.approx(0.2, rel=TOLERANCE)
    _simulate(est, rng, 500, delta=0.4, a_m=1.0, a_p_f=0.48, x0=x)
    assert est.delta == pytest.approx(0.4, rel=TOLERANCE)
    assert est.a_M == pytest.approx(1.0, rel=TOLERANCE)


def test_estimator_with_sharing_multiplier(reference: CoordinationParams) -> None:
    # Stage 3: inflow scaled by sigma; the estimator must not mistake sigma for a_M.
    rng = np.random.default_rng(SEED + 2)
    est = DynamicsEstimator(reference, h=0.5, forgetting=1.0, prior_weight=1e-3)
    delta, a_m, a_p_f, sigma, h = 0.25, 0.9, 0.6, 1.25, 0.5
    phi, x = math.exp(-delta * h), 0.0
    for _ in range(2000):
        e_m, e_p = rng.uniform(0.0, 2.0, 2)
        x_next = phi * x + (1 - phi) * sigma * (a_m * e_m + a_p_f * e_p) / delta
        x_next += rng.normal(0.0, 0.01)
        est.update(x, x_next, e_m, e_p, sigma=sigma)
        x = x_next
    assert est.delta == pytest.approx(delta, rel=TOLERANCE)
    assert est.a_M == pytest.approx(a_m, rel=TOLERANCE)
    assert est.a_P_F == pytest.approx(a_p_f, rel=TOLERANCE)


def test_estimator_rejects_bad_settings(reference: CoordinationParams) -> None:
    with pytest.raises(ValueError, match="h must"):
        DynamicsEstimator(reference, h=0.0)
    with pytest.raises(ValueError, match="forgetting"):
        DynamicsEstimator(reference, h=1.0, forgetting=1.5)
