"""Closed forms against a numerical optimiser on random parameter draws.

The payoffs are re-stated here from coordination-model.md ("Flow payoffs", "Value of a
constant-effort stream") rather than imported, so the optimiser checks the package's
closed forms against the spec, not against themselves.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

from carbonlink.coordination import (
    CoordinationParams,
    best_response_efforts,
    stage1_nash,
    stage2_government,
    stage3_joint,
)
from tests.coordination.conftest import DRAW_IDS, draws

REL = 1e-5


def value(
    p: CoordinationParams, m: float, e_m: float, e_p: float, sigma: float, cost: float
) -> float:
    inflow = sigma * (p.a_M * e_m + p.a_P * p.F * e_p)
    return m * p.X0 / (p.r + p.delta) + (m * inflow / (p.r + p.delta) - cost) / p.r


def firm_value(p: CoordinationParams, who: str, e_m: float, e_p: float, theta: float) -> float:
    if who == "M":
        return value(p, p.m_M, e_m, e_p, 1.0, (1 - theta) * p.k_M * e_m**2 / 2)
    return value(p, p.m_P, e_m, e_p, 1.0, (1 - theta) * p.k_P * e_p**2 / 2)


def subsidised_welfare(
    p: CoordinationParams, theta_m: float, theta_p: float, budget_only: bool
) -> float:
    """W (or U_G) when firms best-respond to (theta_m, theta_p), stage 2."""
    e_m, e_p = best_response_efforts(p, theta_m, theta_p)
    c_m, c_p = p.k_M * e_m**2 / 2, p.k_P * e_p**2 / 2
    u_g = value(p, p.g, e_m, e_p, 1.0, (1 + p.mu) * (theta_m * c_m + theta_p * c_p))
    if budget_only:
        return u_g
    return (
        u_g
        + value(p, p.m_M, e_m, e_p, 1.0, (1 - theta_m) * c_m)
        + value(p, p.m_P, e_m, e_p, 1.0, (1 - theta_p) * c_p)
    )


def argmax_scalar(f: Callable[[float], float], upper: float) -> float:
    result = minimize_scalar(
        lambda x: -f(x),
        bounds=(0.0, upper),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(result.x)


@pytest.mark.parametrize("p", draws(), ids=DRAW_IDS)
def test_stage1_efforts_are_mutual_best_responses(p: CoordinationParams) -> None:
    s1 = stage1_nash(p)
    best_m = argmax_scalar(lambda e: firm_value(p, "M", e, s1.E_P, 0.0), 10 * s1.E_M + 1)
    best_p = argmax_scalar(lambda e: firm_value(p, "P", s1.E_M, e, 0.0), 10 * s1.E_P + 1)
    assert best_m == pytest.approx(s1.E_M, rel=REL, abs=1e-7)
    assert best_p == pytest.approx(s1.E_P, rel=REL, abs=1e-7)


@pytest.mark.parametrize("p", draws(), ids=DRAW_IDS)
def test_stage2_firm_response_to_any_subsidy(p: CoordinationParams) -> None:
    theta_m, theta_p = 0.3 * p.theta_max, 0.9 * p.theta_max
    e_m, e_p = best_response_efforts(p, theta_m, theta_p)
    assert argmax_scalar(lambda e: firm_value(p, "M", e, e_p, theta_m), 10 * e_m + 1) == (
        pytest.approx(e_m, rel=REL, abs=1e-7)
    )
    assert argmax_scalar(lambda e: firm_value(p, "P", e_m, e, theta_p), 10 * e_p + 1) == (
        pytest.approx(e_p, rel=REL, abs=1e-7)
    )


@pytest.mark.parametrize("objective", ["welfare", "budget"])
@pytest.mark.parametrize("p", draws(), ids=DRAW_IDS)
def test_stage2_subsidy_maximises_government_objective(
    p: CoordinationParams, objective: str
) -> None:
    budget_only = objective == "budget"
    s2 = stage2_government(p, "budget" if budget_only else "welfare")
    closed = subsidised_welfare(p, s2.theta_M, s2.theta_P, budget_only)
    # Each rate is optimal given the other (the optimiser lands on the closed form) ...
    best_m = argmax_scalar(lambda t: subsidised_welfare(p, t, s2.theta_P, budget_only), p.theta_max)
    best_p = argmax_scalar(lambda t: subsidised_welfare(p, s2.theta_M, t, budget_only), p.theta_max)
    assert [best_m, best_p] == pytest.approx([s2.theta_M, s2.theta_P], abs=1e-4)
    # ... and no feasible pair of rates does better.
    rng = np.random.default_rng(7)
    for theta_m, theta_p in rng.uniform(0.0, p.theta_max, size=(100, 2)):
        assert closed >= subsidised_welfare(p, theta_m, theta_p, budget_only) - 1e-9 * abs(closed)


@pytest.mark.parametrize("p", draws(), ids=DRAW_IDS)
def test_stage3_efforts_maximise_joint_welfare(p: CoordinationParams) -> None:
    s3 = stage3_joint(p)
    sigma = 1 + p.eta * p.R

    def welfare(e: np.ndarray) -> float:
        cost = p.k_M * e[0] ** 2 / 2 + p.k_P * e[1] ** 2 / 2
        return value(p, p.gs, e[0], e[1], sigma, cost)

    res = minimize(
        lambda e: -welfare(e),
        [1.0, 1.0],
        bounds=[(0, None)] * 2,
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-10},
    )
    assert res.x == pytest.approx([s3.E_M, s3.E_P], rel=1e-4)
    assert s3.total == pytest.approx(welfare(np.array([s3.E_M, s3.E_P])), rel=1e-12)
    assert s3.total >= -res.fun - 1e-9 * abs(res.fun)
