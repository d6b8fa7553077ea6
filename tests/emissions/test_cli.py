"""`carbonlink factors` through click's runner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from carbonlink.cli.factors import factors


def test_list_shows_activities_with_kind_unit_source() -> None:
    result = CliRunner().invoke(factors, ["list"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["ACTIVITY", "KIND", "UNIT", "SOURCE"]
    gas = next(line for line in lines if line.startswith("natural_gas "))
    assert gas.split()[1:3] == ["fuel", "TJ"]
    assert "IPCC" in gas


def test_compute_json() -> None:
    result = CliRunner().invoke(
        factors, ["compute", "electricity", "1000", "kWh", "--region", "CN", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["co2_kg"] == pytest.approx(1000 * 0.5306)
    assert payload["co2e_kg"] == pytest.approx(1000 * 0.5306)
    assert payload["ch4_kg"] == 0
    assert payload["n2o_kg"] == 0
    assert payload["factor_year"] == 2023


def test_compute_text_with_options() -> None:
    result = CliRunner().invoke(
        factors, ["compute", "anthracite", "1", "t", "--gwp", "AR4", "--sector", "energy"]
    )
    assert result.exit_code == 0
    assert "1.A.1" in result.output
    assert "CO2e (AR4)" in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["compute", "unobtainium", "1", "t"], "unknown activity"),
        (["compute", "natural_gas", "1", "furlongz"], "not a known unit"),
        (["compute", "natural_gas", "1", "furlong"], "[length]"),
        (["compute", "electricity", "1", "kWh"], "region is required"),
    ],
)
def test_errors_are_one_line_on_stderr(args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(factors, args)
    assert result.exit_code != 0
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
