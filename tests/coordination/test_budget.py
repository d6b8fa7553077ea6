"""Stage 2 under a government budget: closed form per multiplier + bisection, checked
against the spec's unconstrained rates and against a numerical optimiser."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import NonlinearConstraint, minimize

from carbonlink.coordination import (
    CoordinationParams,
    GovernmentObjective,
    budget_rates,
    spending,
    subsidy_rate,
)
from carbonlink.coordination.model._stages import subsidised_stage
from tests.coordination.conftest import SEED, random_params

OBJECTIVES: tuple[GovernmentObjective, ...] = ("welfare", "budget")
PLANTS = 3
DRAWS = 25


def _value(p: CoordinationParams, theta_m: float, theta_p: float, objective: str) -> float:
    """What the government maximises, from first principles: the stage values."""
    result = subsidised_stage(p, 2, theta_m, theta_p)
    return result.total if objective == "welfare" else result.V_G


def _draw(rng: np.random.Generator) -> tuple[list[CoordinationParams], list[float]]:
    params = [random_params(rng) for _ in range(PLANTS)]
    weights = list(rng.uniform(0.5, 2.0, PLANTS))
    return params, weights


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_no_budget_is_the_closed_form(reference: CoordinationParams, objective: str) -> None:
    rates = budget_rates([reference], objective)  # type: ignore[arg-type]
    assert rates.theta_M[0] == subsidy_rate(reference, reference.m_M, objective)  # type: ignore[arg-type]
    assert rates.theta_P[0] == subsidy_rate(reference, reference.m_P, objective)  # type: ignore[arg-type]
    assert not rates.binding
    # The reference table's stage 2 rates (coordination-model.md).
    if objective == "welfare":
        assert (round(rates.theta_M[0], 3), round(rates.theta_P[0], 3)) == (0.478, 0.786)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_slack_budget_changes_nothing(reference: CoordinationParams, objective: str) -> None:
    free = budget_rates([reference], objective)  # type: ignore[arg-type]
    slack = budget_rates([reference], objective, budget=free.spending * 1.01)  # type: ignore[arg-type]
    assert slack.multiplier == 0
    assert slack.theta_M == pytest.approx(free.theta_M, rel=1e-12)
    assert slack.theta_P == pytest.approx(free.theta_P, rel=1e-12)


def test_zero_budget_means_no_subsidy(reference: CoordinationParams) -> None:
    rates = budget_rates([reference, reference], budget=0.0)
    assert rates.theta_M == (0.0, 0.0)
    assert rates.theta_P == (0.0, 0.0)
    assert rates.spending == 0.0


def test_binding_budget_spends_exactly_the_budget(reference: CoordinationParams) -> None:
    free = budget_rates([reference])
    for share in (0.1, 0.5, 0.9):
        rates = budget_rates([reference], budget=share * free.spending)
        assert rates.binding
        assert rates.spending == pytest.approx(share * free.spending, rel=1e-8)
        assert rates.spending <= share * free.spending  # never over
        assert rates.theta_M[0] <= free.theta_M[0]
        assert rates.theta_P[0] <= free.theta_P[0]
        direct = spending(reference, rates.theta_M[0], rates.theta_P[0])
        assert direct == pytest.approx(rates.spending, rel=1e-12)


def test_more_budget_never_lowers_welfare(reference: CoordinationParams) -> None:
    free = budget_rates([reference]).spending
    values = []
    for share in np.linspace(0.0, 1.2, 13):
        rates = budget_rates([reference], budget=float(share * free))
        values.append(_value(reference, rates.theta_M[0], rates.theta_P[0], "welfare"))
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("draw", range(DRAWS))
def test_budget_rates_match_a_numerical_optimiser(objective: str, draw: int) -> None:
    """Several plants share one budget: SLSQP over all rates finds nothing better."""
    rng = np.random.default_rng([SEED, draw, OBJECTIVES.index(objective)])  # type: ignore[arg-type]
    params, weights = _draw(rng)
    free = budget_rates(params, objective, weights=weights)  # type: ignore[arg-type]
    if free.spending <= 0:
        pytest.skip("nobody is subsidised in this draw")
    budget = float(rng.uniform(0.1, 0.9)) * free.spending
    ours = budget_rates(params, objective, budget=budget, weights=weights)  # type: ignore[arg-type]

    def total(thetas: np.ndarray) -> float:
        return sum(
            w * _value(p, thetas[i], thetas[PLANTS + i], objective)
            for i, (p, w) in enumerate(zip(params, weights, strict=True))
        )

    def spent(thetas: np.ndarray) -> float:
        return sum(
            w * spending(p, thetas[i], thetas[PLANTS + i])
            for i, (p, w) in enumerate(zip(params, weights, strict=True))
        )

    bounds = [(0.0, p.theta_max) for p in params] * 2
    starts = [
        np.zeros(2 * PLANTS),
        np.array(ours.theta_M + ours.theta_P) * 0.5,
        rng.uniform(0.0, 0.3, 2 * PLANTS),
    ]
    best = None
    # SLSQP is fast but now and then ends infeasible; trust-constr is the slow fallback.
    for method in ("SLSQP", "trust-constr"):
        if best is not None:
            break
        for start in starts:
            found = minimize(
                lambda t: -total(t),
                start,
                method=method,
                bounds=bounds,
                constraints=[NonlinearConstraint(spent, -np.inf, budget)],
                options={"maxiter": 2000},
            )
            if spent(found.x) <= budget * (1 + 1e-6) and (best is None or -found.fun > best):
                best = -found.fun
    assert best is not None, "the optimiser found no feasible point"
    mine = total(np.array(ours.theta_M + ours.theta_P))
    assert ours.spending <= budget * (1 + 1e-12)
    assert mine >= best - 1e-6 * max(1.0, abs(best))
