"""Value and trajectory of a constant-effort stream (coordination-model.md, Dynamics and
"Value of a constant-effort stream from X0")."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "carbon_emission_efficiency",
    "inflow",
    "steady_state",
    "stream_value",
    "trajectory",
]


def inflow(sigma: float, a_M: float, a_P: float, F: float, E_M: float, E_P: float) -> float:  # noqa: N803
    """I = sigma * (a_M*E_M + a_P*F*E_P), the capability built per period (Dynamics)."""
    return sigma * (a_M * E_M + a_P * F * E_P)


def steady_state(inflow_rate: float, delta: float) -> float:
    """X* = I / delta, where dX/dt = I - delta*X vanishes (Dynamics)."""
    return inflow_rate / delta


def stream_value(
    m: float, x0: float, inflow_rate: float, cost: float, r: float, delta: float
) -> float:
    """V = m*X0/(r+delta) + (1/r)*(m*I/(r+delta) - cost).

    The discounted value of the flow ``m*X(t) - cost`` when X starts at ``x0`` and
    efforts (hence I and the cost flow) stay constant (coordination-model.md, "Value of
    a constant-effort stream from X0").
    """
    return m * x0 / (r + delta) + (m * inflow_rate / (r + delta) - cost) / r


def trajectory(
    x0: float, inflow_rate: float, delta: float, step: float, steps: int
) -> npt.NDArray[np.float64]:
    """X[0..steps] under constant inflow, exact at the sample times (Dynamics, discrete form).

    X[k+1] = exp(-delta*h)*X[k] + (1 - exp(-delta*h))*I/delta is the exact solution of
    the linear ODE over a step, so no step size makes it drift from the continuous path.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    # Closed form of the recursion: evaluating it directly avoids accumulated rounding.
    times = step * np.arange(steps + 1, dtype=np.float64)
    x_ss = steady_state(inflow_rate, delta)
    return x_ss + (x0 - x_ss) * np.exp(-delta * times)


def carbon_emission_efficiency(abatement: float, resource_cost: float) -> float:
    """Abatement per unit of resource cost: tCO2e avoided per period per money unit spent.

    Our choice of "carbon emission efficiency" (docs/coordination.md): steady-state
    abatement X* divided by the per-period effort cost society bears, including the
    shadow cost mu on subsidies paid from public funds. Zero cost gives ``inf`` when
    there is abatement (it came for free) and 0 when there is none.
    """
    if resource_cost <= 0:
        return math.inf if abatement > 0 else 0.0
    return abatement / resource_cost
