"""Policy files: the repository's policies load, schedules switch, bad files are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbonlink.coordination import CoordinationParams, load_policy, period_transfers, shapley
from carbonlink.errors import ConfigError
from tests.coordination.conftest import REFERENCE_YAML

POLICIES = REFERENCE_YAML.parent
HOUR = 3_600_000
RUN_START = 1_795_420_800_000


@pytest.mark.parametrize(
    ("name", "stage", "e_m"), [("stage1", 1, 1.67), ("stage2", 2, 3.19), ("stage3", 3, 4.58)]
)
def test_fixed_stage_policies_solve_the_reference_case(name: str, stage: int, e_m: float) -> None:
    """Efforts of coordination-model.md's reference table, to its 3 significant figures."""
    policy = load_policy(POLICIES / f"{name}.yaml")
    assert policy.stage_at(RUN_START + 10 * HOUR, RUN_START) == stage
    solved = policy.solve_stage(policy.stage_at(RUN_START, RUN_START))
    assert float(f"{solved.E_M:.3g}") == e_m


def test_switch_policy_changes_stage_at_its_offset() -> None:
    policy = load_policy(POLICIES / "switch-1-to-3.yaml")
    assert policy.stage_at(RUN_START, RUN_START) == 1
    assert policy.stage_at(RUN_START + 2 * HOUR - 1, RUN_START) == 1
    assert policy.stage_at(RUN_START + 2 * HOUR, RUN_START) == 3


def test_inline_params_absolute_times_and_levers(
    tmp_path: Path, reference: CoordinationParams
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: lab\n"
        f"params: {reference.model_dump()}\n"
        "schedule:\n"
        "  - {at: '2026-11-23T08:00:00Z', stage: 2}\n"
        "  - {at: '2026-11-23T10:00:00Z', stage: 3}\n"
        "subsidy_cap: 0.5\ngovernment: budget\ncarbon_price: 60\n"
    )
    policy = load_policy(path)
    assert policy.params.theta_max == 0.5
    assert policy.carbon_price == 60
    assert policy.stage_at(RUN_START - HOUR, 0) == 2  # before the first switch: the first
    assert policy.stage_at(RUN_START + 2 * HOUR, 0) == 3
    stage2 = policy.solve_stage(2)
    assert max(stage2.theta_M, stage2.theta_P) <= 0.5
    assert "budget" in stage2.name


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name: x\nparams: reference.yaml\n", "<document>"),  # neither stage nor schedule
        ("name: x\nparams: nope.yaml\nstage: 1\n", "params"),
        ("name: x\nparams: reference.yaml\nstage: 4\n", "stage"),
        ("name: x\nparams: reference.yaml\nschedule: [{at: soon, stage: 1}]\n", "schedule[0].at"),
        ("name: x\nparams: reference.yaml\nstage: 1\nsubsidy_cap: 1.5\n", "subsidy_cap"),
        ("name: x\nparams: reference.yaml\nstage: 1\ngovernment: king\n", "government"),
    ],
)
def test_bad_policy_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    (tmp_path / "reference.yaml").write_text(REFERENCE_YAML.read_text())
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert caught.value.path == str(path)
    assert caught.value.key == key


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_period_transfers_sum_to_zero(stage: int, reference: CoordinationParams) -> None:
    policy = load_policy(POLICIES / "stage3.yaml")
    result = policy.solve_stage(stage)  # type: ignore[arg-type]
    transfers = period_transfers(reference, result, shapley(reference), x=12.0, periods=0.25)
    assert sum(transfers.values()) == pytest.approx(0.0, abs=1e-9)
    if stage == 1:
        assert transfers == {"M": 0.0, "P": 0.0, "G": 0.0}
    else:
        assert transfers["G"] != 0.0


SHIPPED = sorted(p for p in POLICIES.glob("*.yaml") if p.name != "reference.yaml")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_policy_loads_and_runs(path: Path, reference: CoordinationParams) -> None:
    """config/policies/*.yaml: each loads, names itself after its file, and replays."""
    from carbonlink.coordination import PlantModel, PolicyEvaluator, StepInput

    policy = load_policy(path)
    assert policy.name == path.stem
    assert policy.description or path.stem in {"stage1", "stage2", "stage3", "switch-1-to-3"}
    plants = [PlantModel.believed("cement-01", reference), PlantModel.believed("x", reference)]
    evaluator = PolicyEvaluator(policy, plants, RUN_START)
    for k in range(16 * 4):  # 16 hours of quarter hours: every switch in the files
        start = RUN_START + k * HOUR // 4
        evaluator.step(start, start + HOUR // 4, {p.plant: StepInput(100.0) for p in plants})
    frame = evaluator.frame()
    assert frame[["transfer_M", "transfer_P", "transfer_G"]].sum(axis=1).abs().max() < 1e-9
    assert (frame["abatement_t"] > 0).any()


def test_valuation_builds_the_firms_value_from_prices(tmp_path: Path) -> None:
    """v_E = price / emission factor, here for the cement line's grid electricity."""
    from carbonlink.config import load_config
    from carbonlink.coordination import PlantStream
    from carbonlink.emissions import FactorLibrary, FactorSet
    from tests.configs import REPO_CONFIG

    settings = load_config(REPO_CONFIG / "carbonlink.yaml")
    policy = load_policy(POLICIES / "stream-valuation.yaml")
    assert policy.estimation is not None
    plant = settings.plant("cement-01")
    stream = PlantStream.create(
        plant, policy.params, policy.estimation, 900.0, settings.factor_set(plant.id)
    )
    factor = FactorSet.load(settings.factor_sets_dir / "ipcc2006-cn2023.yaml").resolve(
        FactorLibrary.builtin(), "electricity", "kWh", region=plant.grid_region
    )
    expected = 0.000638 / (factor.co2e_kg_per_unit / 1000)
    assert stream.energy_values == pytest.approx({"electricity": expected})
    assert 1.0 < expected < 1.3  # ~CNY 1,160 per tCO2e avoided on the East China grid
    assert policy.money.label == "kCNY"  # inherited from reference.yaml
