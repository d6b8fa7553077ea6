"""``carbonlink policy solve`` through click's CliRunner (the lead registers the group)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from carbonlink.cli.policy import policy
from tests.coordination.conftest import REFERENCE_YAML


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(policy, ["solve", *args])
    return result.exit_code, result.stdout, result.stderr


def test_text_output_has_the_reference_figures() -> None:
    code, out, _ = run("--params", str(REFERENCE_YAML))
    assert code == 0
    lines = out.splitlines()
    stage1 = next(line for line in lines if line.startswith("1 primary neutrality"))
    stage2 = next(line for line in lines if line.startswith("2 intermediate dependence "))
    stage3 = next(line for line in lines if line.startswith("3 advanced symbiosis"))
    shap = next(line for line in lines if line.startswith("shapley"))
    for figure in ("1.667", "0.427", "9.36", "34.60", "23.59", "49.91", "108.10"):
        assert figure in stage1.split()
    for figure in ("0.478", "0.786", "3.194", "1.991", "20.75", "85.10", "48.96", "24.07"):
        assert figure in stage2.split()
    for figure in ("4.583", "2.933", "37.45", "274.60"):
        assert figure in stage3.split()
    assert shap.split()[1:] == ["100.08", "82.91", "91.61", "274.60"]
    assert "in the spirit of Qin et al. (2026)" in out


def test_default_params_is_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REFERENCE_YAML.parents[2])
    code, out, _ = run()
    assert code == 0
    assert "config/policies/reference.yaml" in out


def test_json_output() -> None:
    code, out, _ = run("--params", str(REFERENCE_YAML), "--json")
    assert code == 0
    data = json.loads(out)
    stages = {s["stage"]: s for s in data["stages"]}
    assert stages[1]["E_M"] == pytest.approx(1.667, abs=5e-4)
    assert stages[2]["theta_P"] == pytest.approx(0.786, abs=5e-4)
    assert stages[2]["V_G"] == pytest.approx(24.1, abs=0.05)
    assert stages[3]["total"] == pytest.approx(274.6, abs=0.05)
    shap = data["splits"]["shapley"]["values"]
    assert [round(shap[i], 1) for i in "MPG"] == [100.1, 82.9, 91.6]
    nash = data["splits"]["nash"]
    assert nash["total"] == pytest.approx(274.6, abs=0.05)
    assert nash["shares"]["G"]["slope"] == pytest.approx(0.8 / 0.3)
    assert data["stage2_budget"]["theta_M"] == pytest.approx(1 / 7)
    assert data["params"]["F"] == 0.6
    assert data["money"]["label"] == "kCNY"
    assert data["money"]["long"] == "thousand CNY"
    core = data["splits"]["core"]
    assert [round(core["values"][i], 1) for i in "MPG"] == [115.3, 79.2, 80.1]
    assert [round(core["floors"][i], 1) for i in "MPG"] == [85.1, 49.0, 49.9]
    assert data["settlement"]["split"] == "core"
    assert stages[1]["abatement_per_cost"] == pytest.approx(3.211, abs=5e-4)


def test_infeasible_core_split_settles_on_shapley(tmp_path: Path) -> None:
    """A draw where the welfare government's subsidies push the floors above the stage-3
    total: no split meets them; the JSON says why and by how much, and Shapley settles."""
    params = tmp_path / "params.yaml"
    params.write_text(
        "r: 0.06\ndelta: 0.26\na_M: 1.42\na_P: 1.25\nF: 0.82\nR: 0.96\neta: 0.09\n"
        "k_M: 0.9\nk_P: 2.39\nm_M: 0.74\nm_P: 1.32\ng: 0.2\nmu: 0.07\ntheta_max: 0.9\n"
        "money: {currency: CNY, scale: 1000}\n"
    )
    code, out, _ = run("--params", str(params), "--json")
    assert code == 0
    data = json.loads(out)
    core = data["splits"]["core"]
    assert core["values"] is None
    assert core["shortfall"] == pytest.approx(290.5, abs=0.05)
    assert "short by" in core["infeasible"]
    assert sum(core["floors"].values()) > core["total"]
    assert data["settlement"]["split"] == "shapley"
    code, text, _ = run("--params", str(params))
    assert code == 0
    assert "settlement: Shapley settles" in text
    assert "no core split" in text


def test_bad_params_file_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(REFERENCE_YAML.read_text().replace("theta_max: 0.8", "theta_max: 1.5"))
    code, out, err = run("--params", str(bad))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"carbonlink: error: {bad}: theta_max: ")
    assert "Traceback" not in err


def test_missing_params_file(tmp_path: Path) -> None:
    code, _, err = run("--params", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml: <file>: cannot read" in err
