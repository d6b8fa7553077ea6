"""Stage-2 subsidy rates when the government has a budget (our extension of
coordination-model.md, Stage 2).

The spec's stage 2 has no budget: the government pays theta_i of each effort cost, and
theta_i* has a closed form. With a budget B per model period across several plants, the
government maximises its objective subject to sum of subsidies <= B. Write each firm's
answer as E_i = c_i * u_i, with c_i its stage-1 effort and u_i = 1/(1 - theta_i). Then,
per party and per period (A_i = a_i' c_i / (r + delta), a_i' = a_M or a_P*F):

    subsidy  S_i(u)  = k_i c_i^2 (u^2 - u) / 2
    welfare  W_i(u)  = Gs A_i u - k_i c_i^2 ((1 + mu) u^2 - mu u) / 2
    budget   G_i(u)  = g  A_i u - (1 + mu) k_i c_i^2 (u^2 - u) / 2

(``W_i``/``G_i`` are the terms of W or U_G that depend on theta_i, times r: the
government maximises discounted values W_i/r against a per-period budget.) Both
objectives are concave quadratics in u and S_i is convex, so for a multiplier lambda >= 0
the maximiser of W_i/r - lambda * S_i, with l = lambda * r, is the clipped root of a
linear equation:

    welfare  u*(l) = (Gs A + k c^2 (mu + l) / 2) / (k c^2 (1 + mu + l))
    budget   u*(l) = 1/2 + g A / ((1 + mu + l) k c^2)

clipped to [1, 1/(1 - theta_max)]. With lambda = 0 these are the spec's closed forms.
Spending falls as lambda grows, so bisection on lambda finds the budget-meeting rates;
the tests check the result against a numerical optimiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from carbonlink.abatement import effort_cost
from carbonlink.coordination.model._params import CoordinationParams
from carbonlink.coordination.model._stages import (
    GovernmentObjective,
    best_response_efforts,
    subsidy_rate,
)

__all__ = ["SubsidyRates", "budget_rates", "spending"]

FloatArray = npt.NDArray[np.float64]

# Bisection on the multiplier: relative spending tolerance and iteration cap. 200 halvings
# reach float resolution on any lambda range we can start from.
BUDGET_RELATIVE_TOLERANCE: Final = 1e-10
MAX_BISECTIONS: Final = 200


@dataclass(frozen=True)
class SubsidyRates:
    """theta_M and theta_P per plant (in the order given), and what they cost per period."""

    theta_M: tuple[float, ...]  # noqa: N815 (spec names)
    theta_P: tuple[float, ...]  # noqa: N815
    spending: float
    multiplier: float  # lambda: 0 when the budget does not bind

    @property
    def binding(self) -> bool:
        return self.multiplier > 0


@dataclass(frozen=True)
class _Terms:
    """Per (plant, party) coefficients, flattened: M of every plant, then P of every plant."""

    kc2: FloatArray  # k_i c_i^2
    value_a: FloatArray  # Gs*A_i (welfare) or g*A_i (budget)
    mu: FloatArray
    u_max: FloatArray
    r: FloatArray  # each plant's discount rate: the multiplier acts on W/r


def _terms(params: Sequence[CoordinationParams], objective: GovernmentObjective) -> _Terms:
    kc2, value_a, mu, u_max, rate = [], [], [], [], []
    for party in ("M", "P"):
        for p in params:
            e_m, e_p = best_response_efforts(p)
            c, k, a = (e_m, p.k_M, p.a_M) if party == "M" else (e_p, p.k_P, p.a_P * p.F)
            kc2.append(k * c * c)
            weight = p.gs if objective == "welfare" else p.g
            value_a.append(weight * a * c / p.r_delta)
            mu.append(p.mu)
            u_max.append(1.0 / (1.0 - p.theta_max))
            rate.append(p.r)
    as_array = np.asarray
    return _Terms(as_array(kc2), as_array(value_a), as_array(mu), as_array(u_max), as_array(rate))


def _best_u(terms: _Terms, objective: GovernmentObjective, lam: float) -> FloatArray:
    # A party with no effort (c = 0) gets no subsidy: u = 1 whatever lambda is.
    active = terms.kc2 > 0
    kc2 = np.where(active, terms.kc2, 1.0)
    scaled = lam * terms.r
    if objective == "welfare":
        u = (terms.value_a + kc2 * (terms.mu + scaled) / 2.0) / (kc2 * (1.0 + terms.mu + scaled))
    else:
        u = 0.5 + terms.value_a / ((1.0 + terms.mu + scaled) * kc2)
    result: FloatArray = np.where(active, np.clip(u, 1.0, terms.u_max), 1.0)
    return result


def _spend(terms: _Terms, u: FloatArray, weights: FloatArray) -> float:
    return float(np.sum(weights * terms.kc2 * (u * u - u) / 2.0))


def spending(params: CoordinationParams, theta_m: float, theta_p: float) -> float:
    """Subsidy paid per model period at rates theta: theta_i * k_i * E_i^2 / 2."""
    e_m, e_p = best_response_efforts(params, theta_m, theta_p)
    return theta_m * effort_cost(params.k_M, e_m) + theta_p * effort_cost(params.k_P, e_p)


def budget_rates(
    params: Sequence[CoordinationParams],
    objective: GovernmentObjective = "welfare",
    budget: float | None = None,
    weights: Sequence[float] | None = None,
) -> SubsidyRates:
    """The government's stage-2 rates for several plants sharing a budget.

    The constraint is sum_j w_j * (S_M,j + S_P,j) <= ``budget`` with S per model period of
    plant j; ``weights`` (default 1) convert each plant's model period to a common unit
    (1/period_s gives spending per second when plants' periods differ). Weighting each
    plant's objective the same way leaves the per-party optimum unchanged, so one
    multiplier serves all. ``budget=None`` is the spec's unconstrained stage 2.
    ``spending`` in the result is in the budget's unit.
    """
    if not params:
        return SubsidyRates((), (), 0.0, 0.0)
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    n = len(params)
    w = np.tile(np.asarray(weights if weights is not None else [1.0] * n, dtype=np.float64), 2)
    if w.shape != (2 * n,) or np.any(w <= 0):
        raise ValueError("weights must be positive, one per plant")
    if budget is None:
        rates_m = tuple(subsidy_rate(p, p.m_M, objective) for p in params)
        rates_p = tuple(subsidy_rate(p, p.m_P, objective) for p in params)
        per_plant = [
            spending(p, tm, tp) for p, tm, tp in zip(params, rates_m, rates_p, strict=True)
        ]
        return SubsidyRates(rates_m, rates_p, float(np.dot(w[:n], per_plant)), 0.0)
    terms = _terms(params, objective)
    u = _best_u(terms, objective, 0.0)
    lam = 0.0
    if _spend(terms, u, w) > budget:
        low, high = 0.0, 1.0
        while _spend(terms, _best_u(terms, objective, high), w) > budget:
            high *= 2.0
        for _ in range(MAX_BISECTIONS):
            lam = (low + high) / 2.0
            spent = _spend(terms, _best_u(terms, objective, lam), w)
            if spent > budget:
                low = lam
            else:
                high = lam
            if high - low <= BUDGET_RELATIVE_TOLERANCE * max(high, 1.0):
                break
        # The upper end always meets the budget; report it so spending never exceeds B.
        lam = high
        u = _best_u(terms, objective, lam)
    theta = 1.0 - 1.0 / u
    return SubsidyRates(
        tuple(float(t) for t in theta[:n]),
        tuple(float(t) for t in theta[n:]),
        _spend(terms, u, w),
        lam,
    )
