"""Settlement flows, trajectory and stream value (coordination-model.md, Stage 3
settlement, Dynamics, "Value of a constant-effort stream from X0")."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from carbonlink.coordination import (
    PARTIES,
    CoordinationParams,
    Party,
    Split,
    abatement_per_cost,
    nash_bargaining,
    settle,
    shapley,
    stage1_nash,
    stage3_joint,
    stream_value,
    trajectory,
)
from tests.coordination.conftest import DRAW_IDS, draws


def cooperative_path(p: CoordinationParams, t: float) -> tuple[float, float, dict[Party, float]]:
    """X(t), dX/dt and each party's own realised flow on the stage-3 path."""
    s3 = stage3_joint(p)
    x = s3.X_ss + (p.X0 - s3.X_ss) * math.exp(-p.delta * t)
    dx = s3.inflow - p.delta * x
    own: dict[Party, float] = {
        "M": p.m_M * x - p.k_M * s3.E_M**2 / 2,
        "P": p.m_P * x - p.k_P * s3.E_P**2 / 2,
        "G": p.g * x,
    }
    return x, dx, own


@pytest.mark.parametrize("p", draws(), ids=DRAW_IDS)
@pytest.mark.parametrize("method", ["shapley", "nash"])
def test_betas_add_up_to_joint_flow_and_transfers_to_zero(
    p: CoordinationParams, method: str
) -> None:
    split = shapley(p) if method == "shapley" else nash_bargaining(p)
    s3 = stage3_joint(p)
    for t in (0.0, 1.0, 7.5, 40.0):
        x, dx, own = cooperative_path(p, t)
        result = settle(split, p.r, x, dx, own)
        joint_flow = p.gs * x - p.k_M * s3.E_M**2 / 2 - p.k_P * s3.E_P**2 / 2
        assert sum(result.beta.values()) == pytest.approx(joint_flow, rel=1e-9, abs=1e-9)
        assert sum(result.transfer.values()) == pytest.approx(0.0, abs=1e-9)
        assert result.imbalance == pytest.approx(0.0, abs=1e-8)
        for i in PARTIES:
            assert result.transfer[i] == pytest.approx(result.beta[i] - own[i], abs=1e-8)


@pytest.mark.parametrize("method", ["shapley", "nash"])
def test_discounted_betas_deliver_the_split(reference: CoordinationParams, method: str) -> None:
    # Time consistency: paying beta_i forever from X0 is worth exactly phi_i(X0).
    p = reference.model_copy(update={"X0": 5.0})
    split: Split = shapley(p) if method == "shapley" else nash_bargaining(p)
    for i in PARTIES:

        def discounted_beta(t: float, party: Party = i) -> float:
            x, dx, own = cooperative_path(p, t)
            return math.exp(-p.r * t) * settle(split, p.r, x, dx, own).beta[party]

        worth, _ = quad(discounted_beta, 0.0, math.inf, limit=200)
        assert worth == pytest.approx(split.value(i), rel=1e-7)


def test_noisy_stream_still_balances(reference: CoordinationParams) -> None:
    split = shapley(reference)
    x, dx, own = cooperative_path(reference, 3.0)
    result = settle(split, reference.r, x, dx + 0.7, own | {"G": own["G"] - 1.3})
    assert result.imbalance != pytest.approx(0.0)
    assert sum(result.transfer.values()) == pytest.approx(0.0, abs=1e-12)


def test_settle_requires_every_party(reference: CoordinationParams) -> None:
    with pytest.raises(ValueError, match="missing for G"):
        settle(shapley(reference), reference.r, 1.0, 0.0, {"M": 0.0, "P": 0.0})


def test_trajectory_is_the_exact_discrete_recursion(reference: CoordinationParams) -> None:
    s3 = stage3_joint(reference)
    h, steps, x0 = 0.25, 200, 3.0
    path = trajectory(x0, s3.inflow, reference.delta, h, steps)
    decay = math.exp(-reference.delta * h)
    expected = [x0]
    for _ in range(steps):
        expected.append(decay * expected[-1] + (1 - decay) * s3.inflow / reference.delta)
    assert path == pytest.approx(np.array(expected), rel=1e-12)
    assert path[-1] == pytest.approx(s3.X_ss, rel=1e-4)  # 50 periods, e^-10 left
    flat = trajectory(s3.X_ss, s3.inflow, reference.delta, 1.0, 5)
    assert flat == pytest.approx(np.full(6, s3.X_ss))
    with pytest.raises(ValueError, match="step"):
        trajectory(0.0, 1.0, 0.2, 0.0, 3)


def test_stream_value_is_the_discounted_flow(reference: CoordinationParams) -> None:
    p, s1 = reference, stage1_nash(reference)
    x0, cost = 4.0, p.k_M * s1.E_M**2 / 2

    def flow(t: float) -> float:
        x = s1.X_ss + (x0 - s1.X_ss) * math.exp(-p.delta * t)
        return math.exp(-p.r * t) * (p.m_M * x - cost)

    integral, _ = quad(flow, 0.0, math.inf, limit=200)
    assert stream_value(p.m_M, x0, s1.inflow, cost, p.r, p.delta) == pytest.approx(integral)


def test_abatement_per_unit_cost_falls_with_the_stage(reference: CoordinationParams) -> None:
    s1, s3 = stage1_nash(reference), stage3_joint(reference)
    assert s1.abatement_per_cost == pytest.approx(s1.X_ss / (s1.E_M**2 + 0.75 * s1.E_P**2))
    # Stage 3 abates most but at rising marginal cost, so per unit of cost it is lower.
    assert s3.abatement_per_cost == pytest.approx(1.364, abs=5e-4)
    assert s3.X_ss > s1.X_ss
    assert s3.abatement_per_cost < s1.abatement_per_cost
    assert abatement_per_cost(0.0, 0.0) == 0.0
    assert abatement_per_cost(1.0, 0.0) == math.inf
