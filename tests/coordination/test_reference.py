"""The spec's reference table (coordination-model.md, "Reference case").

Each figure must match to the precision the spec prints it (half a unit of its last
digit), which is at least 3 significant figures. All figures follow from the stated
formulas as written: V_G counts g*X in every stage (stage 1 included, no subsidy paid),
and the stage-3 total is W with Gs and no mu loss on internal transfers.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest

from carbonlink.coordination import (
    PARTIES,
    CoordinationParams,
    Party,
    coalition_value,
    load_params,
    nash_bargaining,
    shapley,
    solve,
    stage1_nash,
    stage2_government,
    stage3_joint,
)
from carbonlink.errors import ConfigError


def matches_printed(actual: float, printed: str) -> bool:
    """True when ``actual`` rounds to ``printed`` at the digits the spec prints."""
    exponent = Decimal(printed).as_tuple().exponent
    assert isinstance(exponent, int)
    half_unit = 0.5 * 10.0**exponent
    return abs(actual - float(printed)) <= half_unit + 1e-12


def within_three_sf(actual: float, printed: str) -> bool:
    """|actual - printed| within half a unit of the 3rd significant figure of ``printed``.

    (Re-rounding ``printed`` itself would double-round: 37.4458 prints as 37.45, which
    rounds to 37.5 while 37.4458 rounds to 37.4.)
    """
    value = float(printed)
    if value == 0:
        return actual == 0
    return abs(actual - value) <= 0.5 * 10.0 ** (math.floor(math.log10(abs(value))) - 2)


STAGE_TABLE = {
    1: {"theta_M": "0", "theta_P": "0", "E_M": "1.667", "E_P": "0.427", "X_ss": "9.36",
        "V_M": "34.6", "V_P": "23.6", "V_G": "49.9", "total": "108.1"},
    2: {"theta_M": "0.478", "theta_P": "0.786", "E_M": "3.19", "E_P": "1.99", "X_ss": "20.75",
        "V_M": "85.1", "V_P": "49.0", "V_G": "24.1", "total": "158.1"},
    3: {"E_M": "4.58", "E_P": "2.93", "X_ss": "37.45", "total": "274.6"},
}  # fmt: skip


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_reference_table(reference: CoordinationParams, stage: int) -> None:
    result = {1: stage1_nash, 2: stage2_government, 3: stage3_joint}[stage](reference)
    for field, printed in STAGE_TABLE[stage].items():
        actual = getattr(result, field)
        assert matches_printed(actual, printed), (stage, field, actual, printed)
        assert within_three_sf(actual, printed), (stage, field)


def test_reference_shapley_split(reference: CoordinationParams) -> None:
    split = shapley(reference)
    printed_split: dict[Party, str] = {"M": "100.1", "P": "82.9", "G": "91.6"}
    for party, printed in printed_split.items():
        assert matches_printed(split.value(party), printed), (party, split.value(party))
    assert matches_printed(split.total, "274.6")


def test_reference_coalition_values(reference: CoordinationParams) -> None:
    # Singletons are the stage-1 values; the grand coalition is stage 3.
    s1 = stage1_nash(reference)
    assert coalition_value(reference, ["M"]) == pytest.approx(s1.V_M)
    assert coalition_value(reference, ["P"]) == pytest.approx(s1.V_P)
    assert coalition_value(reference, ["G"]) == pytest.approx(s1.V_G)
    assert coalition_value(reference, ["M", "P", "G"]) == pytest.approx(
        stage3_joint(reference).total
    )
    assert coalition_value(reference, []) == 0.0


def test_reference_every_party_gains_under_both_splits(reference: CoordinationParams) -> None:
    s = solve(reference)
    for split in (s.shapley, s.nash):
        for party in PARTIES:
            before = f"V_{party}"
            assert split.value(party) > getattr(s.stage1, before), (split.method, party)
            assert split.value(party) > getattr(s.stage2, before), (split.method, party)


def test_reference_nash_bargaining_equal_surplus(reference: CoordinationParams) -> None:
    nash = nash_bargaining(reference)
    s2 = stage2_government(reference)
    surplus = stage3_joint(reference).total - s2.total
    assert surplus == pytest.approx(116.47, abs=0.01)
    assert nash.value("M") == pytest.approx(s2.V_M + surplus / 3)
    assert nash.value("G") == pytest.approx(s2.V_G + surplus / 3)
    weighted = nash_bargaining(reference, {"M": 1.0, "P": 1.0, "G": 2.0})
    assert weighted.value("G") == pytest.approx(s2.V_G + surplus / 2)
    assert weighted.total == pytest.approx(nash.total)


def test_nash_bargaining_rejects_bad_weights(reference: CoordinationParams) -> None:
    with pytest.raises(ValueError, match="weights"):
        nash_bargaining(reference, {"M": 1.0, "P": -1.0, "G": 1.0})


def test_budget_only_government_reference(reference: CoordinationParams) -> None:
    budget = stage2_government(reference, "budget")
    # (2g - (1+mu) m_i) / (2g + (1+mu) m_i) with g=0.8, mu=0.2: 0.4/2.8 and 1.12/2.08.
    assert budget.theta_M == pytest.approx(0.4 / 2.8)
    assert budget.theta_P == pytest.approx(1.12 / 2.08)
    assert budget.V_G >= stage2_government(reference, "welfare").V_G


def test_bad_parameter_file_names_file_key_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = Path(__file__).resolve().parents[2].joinpath("config/policies/reference.yaml")
    bad.write_text(text.read_text().replace("F: 0.6", "F: 1.6"))
    with pytest.raises(ConfigError) as caught:
        load_params(bad)
    assert caught.value.path == str(bad)
    assert caught.value.key == "F"
    assert "less than or equal to 1" in caught.value.problem


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [("r", 0.0, "r"), ("theta_max", 1.0, "theta_max"), ("k_P", -1.0, "k_P"), ("typo", 1, "typo")],
)
def test_parameter_validation(
    reference: CoordinationParams, tmp_path: Path, field: str, value: float, key: str
) -> None:
    data = reference.model_dump() | {field: value}
    path = tmp_path / "p.yaml"
    path.write_text("\n".join(f"{k}: {v}" for k, v in data.items()))
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert caught.value.key == key


def test_nobody_values_abatement_is_rejected(reference: CoordinationParams) -> None:
    with pytest.raises(ValueError, match="nobody values abatement"):
        CoordinationParams(**(reference.model_dump() | {"m_M": 0.0, "m_P": 0.0, "g": 0.0}))
