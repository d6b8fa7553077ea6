"""Value and trajectory of a constant-effort stream (coordination-model.md, Dynamics and
"Value of a constant-effort stream from X0")."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from carbonlink.abatement import x_at

__all__ = ["abatement_per_cost", "discounted_step", "stream_value", "trajectory"]


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
    return np.asarray(x_at(x0, inflow_rate, delta, times), dtype=np.float64)


def abatement_per_cost(abatement: float, resource_cost: float) -> float:
    """Abatement per unit cost: tCO2e avoided per period per money unit spent per period.

    The model's ratio (docs/coordination.md): steady-state abatement X* divided by the
    per-period effort cost society bears, including the shadow cost mu on subsidies paid
    from public funds. It is not carbon emission efficiency in the literature's sense
    (output or value added per tCO2e): with quadratic effort costs it falls as effort
    rises, so it falls from stage 1 to 3 by construction. Zero cost gives ``inf`` when
    there is abatement (it came for free) and 0 when there is none.
    """
    if resource_cost <= 0:
        return math.inf if abatement > 0 else 0.0
    return abatement / resource_cost


def discounted_step(
    x0: float, inflow: float, delta: float, h: float, r: float, t0: float
) -> tuple[float, float]:
    """(D, discounted mean of X) over a step [t0, t0 + h] (model periods) from X = x0.

    D = integral of exp(-r t) dt over the step, and the discounted mean is
    (integral of exp(-r t) X(t) dt) / D. Any flow linear in X, a X + b per period, then
    has the exact discounted integral D * (a * mean + b): what makes cash over a window
    plus the discounted value of the state reached equal the value at its start.
    """
    if h <= 0:
        return 0.0, x0
    weight = math.exp(-r * t0) * -math.expm1(-r * h) / r
    target = inflow / delta if delta > 0 else 0.0
    if delta <= 0:  # X = x0 + I t: integral of t exp(-r t) over the step
        tail = (1.0 - math.exp(-r * h) * (1.0 + r * h)) / (r * r)
        integral = math.exp(-r * t0) * (x0 * -math.expm1(-r * h) / r + inflow * tail)
        return weight, integral / weight
    transient = -math.expm1(-(r + delta) * h) / (r + delta)
    integral = math.exp(-r * t0) * (target * -math.expm1(-r * h) / r + (x0 - target) * transient)
    return weight, integral / weight
