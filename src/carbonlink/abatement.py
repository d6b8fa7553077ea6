"""Abatement capability X: its dynamics, written once for the simulated plants and the
coordination model alike (coordination-model.md, Dynamics):

    dX/dt = I - delta * X,    I = sigma * (a_M * E_M + a_P * F * E_P)

With constant efforts over a step of h periods the solution is exact:

    X(t) = X* + (X0 - X*) * exp(-delta * t),    X* = I / delta

so no step size makes a simulation, a projection or a replay drift from the continuous
path. Functions take floats or numpy arrays alike (the simulators step every plant at
once); delta = 0 (no decay) is X0 + I t.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["effort_cost", "exact_step", "inflow", "steady_state", "x_at"]

FloatArray = npt.NDArray[np.float64]
X = TypeVar("X", float, FloatArray)


def inflow(sigma: X, a_M: X, a_P: X, F: X, E_M: X, E_P: X) -> X:  # noqa: N803
    """I = sigma * (a_M*E_M + a_P*F*E_P), the capability built per period."""
    return sigma * (a_M * E_M + a_P * F * E_P)


def steady_state(inflow_rate: float, delta: float) -> float:
    """X* = I / delta, where dX/dt = I - delta*X vanishes."""
    return inflow_rate / delta


def effort_cost(k: X, effort: X) -> X:
    """k E^2 / 2: the cost per period of effort E with cost coefficient k (Flow payoffs)."""
    return k * effort * effort / 2.0


def x_at(
    x0: float | FloatArray,
    inflow_rate: float | FloatArray,
    delta: float | FloatArray,
    t: float | FloatArray,
) -> FloatArray:
    """X after t periods from x0 under a constant inflow: exact for any t (a 0-d array
    for scalars: ``float()`` it)."""
    delta = np.asarray(delta, dtype=np.float64)
    decay = np.exp(-delta * np.asarray(t, dtype=np.float64))
    safe = np.where(delta > 0, delta, 1.0)
    grown = np.where(delta > 0, (1.0 - decay) * inflow_rate / safe, np.multiply(inflow_rate, t))
    value: FloatArray = decay * x0 + grown
    return value


def exact_step(x0: float, inflow_rate: float, delta: float, h: float) -> tuple[float, float]:
    """(mean of X over the step, X at its end), exact for any h.

    A step of no length (h <= 0) leaves X where it is: its mean is X itself.
    """
    if h <= 0:
        return x0, x0
    end = float(x_at(x0, inflow_rate, delta, h))
    if delta <= 0:  # no decay: X grows linearly
        return x0 + inflow_rate * h / 2.0, end
    target = inflow_rate / delta
    return target + (x0 - target) * -np.expm1(-delta * h) / (delta * h), end
