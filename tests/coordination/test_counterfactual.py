"""The counterfactual evaluator: dynamics exact against the closed form, flows balanced,
the abatement ceiling, budgets, carbon-price paths and the summary's arithmetic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from carbonlink.coordination import (
    CoordinationParams,
    PlantModel,
    Policy,
    PolicyEvaluator,
    StepInput,
    load_policy,
    stage1_nash,
    summarise,
    trajectory,
)
from tests.coordination.conftest import REFERENCE_YAML

HOUR = 3_600_000
START = 1_795_420_800_000
POLICIES = REFERENCE_YAML.parent


def _policy(tmp_path: Path, body: str) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(f"name: lab\nparams: {REFERENCE_YAML}\n{body}")
    return load_policy(path)


def _run(policy: Policy, models: list[PlantModel], steps: int, step_ms: int = HOUR,
         abatable: float = 1e6, fixed: float = 0.0) -> PolicyEvaluator:  # fmt: skip
    evaluator = PolicyEvaluator(policy, models, START)
    baseline = {m.plant: StepInput(abatable, fixed) for m in models}
    for k in range(steps):
        evaluator.step(START + k * step_ms, START + (k + 1) * step_ms, baseline)
    return evaluator


def test_x_follows_the_closed_form(reference: CoordinationParams) -> None:
    policy = load_policy(POLICIES / "stage1.yaml")
    model = PlantModel.believed("p", reference)
    evaluator = PolicyEvaluator(policy, [model], START)
    inflow = stage1_nash(reference).inflow
    ends = trajectory(0.0, inflow, reference.delta, 1.0, 24)
    for k in range(24):
        evaluator.step(START + k * HOUR, START + (k + 1) * HOUR, {"p": StepInput(1e6)})
        assert evaluator.x["p"] == pytest.approx(ends[k + 1], rel=1e-12)
    frame = evaluator.frame()
    # The step's abatement is the mean of X over it: (integral of X) / h.
    delta = reference.delta
    x_ss = inflow / delta
    k = np.arange(24)
    mean = x_ss - x_ss * np.exp(-delta * k) * (1 - math.exp(-delta)) / delta
    assert frame["abatement_t"].to_numpy() == pytest.approx(mean, rel=1e-12)
    assert (frame["emissions_t"] == 1e6 - frame["abatement_t"]).all()


def test_steady_flows_are_the_models_flow_payoffs(reference: CoordinationParams) -> None:
    policy = load_policy(POLICIES / "stage1.yaml")
    result = stage1_nash(reference)
    at_rest = reference.model_copy(update={"X0": result.X_ss})
    evaluator = _run(policy, [PlantModel.believed("p", at_rest)], steps=4)
    row = evaluator.frame().iloc[-1]
    cost_m = reference.k_M * result.E_M**2 / 2
    assert row["x"] == pytest.approx(result.X_ss)
    assert row["payoff_M"] == pytest.approx(reference.m_M * result.X_ss - cost_m)
    assert row["payoff_G"] == pytest.approx(reference.g * result.X_ss)
    assert row["subsidy"] == 0


@pytest.mark.parametrize("name", ["stage1", "stage2", "stage3"])
def test_transfers_balance_every_step(name: str, reference: CoordinationParams) -> None:
    evaluator = _run(load_policy(POLICIES / f"{name}.yaml"),
                     [PlantModel.believed("a", reference), PlantModel.believed("b", reference)],
                     steps=12, step_ms=HOUR // 4)  # fmt: skip
    frame = evaluator.frame()
    balance = frame[["transfer_M", "transfer_P", "transfer_G"]].sum(axis=1)
    assert balance.abs().max() < 1e-9
    if name == "stage1":
        assert (frame[["transfer_M", "transfer_P", "transfer_G"]] == 0).all().all()
    else:
        assert (frame["transfer_G"] != 0).all()


def test_stage_ordering_of_abatement_on_one_baseline(reference: CoordinationParams) -> None:
    """Efforts rise from stage 1 to 3 (docs/coordination.md), so emissions fall."""
    emitted = []
    for name in ("stage1", "stage2", "stage3"):
        frame = _run(load_policy(POLICIES / f"{name}.yaml"),
                     [PlantModel.believed("p", reference)], steps=48).frame()  # fmt: skip
        emitted.append(frame["emissions_t"].sum())
    assert emitted[0] > emitted[1] > emitted[2]


def test_abatement_ceiling(reference: CoordinationParams) -> None:
    policy = load_policy(POLICIES / "stage3.yaml")
    model = PlantModel.believed("p", reference, max_reduction=0.25)
    frame = _run(policy, [model], steps=24, abatable=10.0, fixed=5.0).frame()
    last = frame.iloc[-1]
    assert last["abatement_t"] == pytest.approx(2.5)  # 25% of the abatable 10 t only
    assert last["emissions_t"] == pytest.approx(12.5)
    assert last["baseline_t"] == pytest.approx(15.0)


def test_plant_responds_with_its_own_dynamics(reference: CoordinationParams) -> None:
    """Decisions on the believed model, abatement by the plant's own productivities."""
    policy = load_policy(POLICIES / "stage1.yaml")
    plant = PlantModel("p", reference, a_m=0.5, a_p_f=0.1, delta=0.4)
    evaluator = _run(policy, [plant], steps=200)
    believed = stage1_nash(reference)
    assert evaluator.frame().iloc[-1]["effort_firm"] == pytest.approx(believed.E_M)
    own_steady = (0.5 * believed.E_M + 0.1 * believed.E_P) / 0.4
    assert evaluator.x["p"] == pytest.approx(own_steady, rel=1e-9)


def test_total_budget_is_never_exceeded(tmp_path: Path, reference: CoordinationParams) -> None:
    # Unconstrained, the reference plant claims 7.2 per hour: the pace of 5 binds.
    policy = _policy(tmp_path, "stage: 2\nbudget: {amount: 5, per: 1h, total: 22}\n")
    evaluator = _run(policy, [PlantModel.believed("p", reference)], steps=12)
    frame = evaluator.frame()
    assert frame["subsidy"].sum() == pytest.approx(22.0)
    assert frame["subsidy"].cumsum().max() <= 22.0 + 1e-9
    assert list(frame["subsidy"].iloc[:6]) == pytest.approx([5, 5, 5, 5, 2, 0], abs=1e-8)
    assert (frame["theta_M"].iloc[-3:] == 0).all()  # exhausted: back to no subsidy
    assert frame["effort_firm"].iloc[-1] == pytest.approx(stage1_nash(reference).E_M)


def test_carbon_price_path_raises_the_firms_effort(
    tmp_path: Path, reference: CoordinationParams
) -> None:
    policy = _policy(tmp_path, "stage: 1\ncarbon_price: [{at: '+0s', price: 0}, "
                               "{at: '+3h', price: 0.5}]\n")  # fmt: skip
    frame = _run(policy, [PlantModel.believed("p", reference)], steps=6).frame()
    before, after = frame["effort_firm"].iloc[0], frame["effort_firm"].iloc[-1]
    priced = reference.model_copy(update={"m_M": reference.m_M + 0.5})
    assert before == pytest.approx(stage1_nash(reference).E_M)
    assert after == pytest.approx(stage1_nash(priced).E_M)
    assert list(frame["carbon_price"]) == [0, 0, 0, 0.5, 0.5, 0.5]


def test_sharing_rules_set_relational_availability(
    tmp_path: Path, reference: CoordinationParams
) -> None:
    """With a sharing block, stage 3's sigma follows the rule's level per plant."""
    policy = _policy(tmp_path, "stage: 3\nsharing:\n  3: {level: live, plants: [a]}\n")
    frame = _run(policy, [PlantModel.believed("a", reference),
                          PlantModel.believed("b", reference)], steps=1).frame()  # fmt: skip
    sigma = dict(zip(frame["plant"], frame["sigma"], strict=True))
    assert sigma["a"] == pytest.approx(1 + reference.eta * 0.75)  # live: R = 0.75
    assert sigma["b"] == pytest.approx(1 + reference.eta * 0.25)  # not sharing: totals only


def test_summary_is_the_sum_of_its_rows(reference: CoordinationParams) -> None:
    evaluator = _run(load_policy(POLICIES / "stage2.yaml"),
                     [PlantModel.believed("p", reference)], steps=24)  # fmt: skip
    frame = evaluator.frame()
    (row,) = summarise(frame).to_dict("records")
    assert row["emissions_t"] == pytest.approx(frame["emissions_t"].sum())
    assert row["abatement_t"] == pytest.approx(frame["abatement_t"].sum())
    assert row["subsidy"] == pytest.approx(frame["subsidy"].sum())
    assert row["public_cost"] == pytest.approx(-frame["transfer_G"].sum())
    assert row["public_cost"] == pytest.approx(frame["subsidy"].sum())  # stage 2: subsidies
    assert row["public_cost_per_t"] == pytest.approx(
        frame["subsidy"].sum() / frame["abatement_t"].sum()
    )
    assert row["cash_total"] == pytest.approx(frame[["cash_M", "cash_P", "cash_G"]].sum().sum())
    last = frame.iloc[-1]
    assert row["value_M"] == pytest.approx(frame["cash_M"].sum() + last["continuation_M"])
    assert row["x_end"] == pytest.approx(last["x_end"])
    assert row["payoff_total"] == pytest.approx(row["payoff_M"] + row["payoff_P"] + row["payoff_G"])
    assert row["hours"] == pytest.approx(24.0)
    assert abs(row["transfers_balance"]) < 1e-9


def test_a_plant_of_a_twentieth_the_size_abates_a_twentieth(reference: CoordinationParams) -> None:
    """for_plant: the plant's productivity is its size; effort costs scale with it, so
    efforts are comparable across plants and abatement, costs and payoffs scale."""
    from carbonlink.config import load_config
    from carbonlink.coordination import for_plant, stage3_joint
    from tests.configs import REPO_CONFIG

    settings = load_config(REPO_CONFIG / "carbonlink.yaml")
    mill = settings.plant("textiles-01")  # a_m 0.05, a_p 0.04: a twentieth of the reference
    small = for_plant(reference, mill)
    assert (small.a_M, small.a_P) == (0.05, 0.04)
    assert small.k_M == pytest.approx(reference.k_M / 20)
    big, little = stage3_joint(reference), stage3_joint(small)
    efforts_ratio = (little.E_M / big.E_M, little.E_P / big.E_P)
    assert efforts_ratio == pytest.approx((1.0, 1.0))  # the same effort...
    assert little.X_ss == pytest.approx(big.X_ss / 20)  # ...buys a twentieth
    assert little.total == pytest.approx(big.total / 20)
    assert for_plant(reference, settings.plant("cement-01")) == reference  # the reference line
