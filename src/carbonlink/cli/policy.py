"""``carbonlink policy``: solve the coordination model for a parameter file.

The model is a differential-game model in the spirit of Qin et al. (2026), our own
formulation (docs/coordination.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import click

from carbonlink.cli._common import user_errors
from carbonlink.coordination import PARTIES, Solution, StageResult, load_params, solve

__all__ = ["policy"]

DEFAULT_PARAMS: Final = Path("config/policies/reference.yaml")
_HEADER: Final = (
    f"{'stage':<52} {'theta_M':>7} {'theta_P':>7} {'E_M':>7} {'E_P':>7} {'sigma':>5}"
    f" {'X_ss':>8} {'V_M':>8} {'V_P':>8} {'V_G':>8} {'total':>8} {'eff':>6}"
)


@click.group()
def policy() -> None:
    """Coordination model: firm, platform and government in three stages."""


@policy.command()
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_PARAMS,
    show_default=True,
    help="Policy parameter file (YAML).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the solution as JSON.")
@user_errors
def solve_command(params_path: Path, as_json: bool) -> None:
    """Solve every stage: subsidies, efforts, steady-state X, values, stage-3 splits."""
    solution = solve(load_params(params_path))
    if as_json:
        click.echo(json.dumps(solution.to_dict(), indent=2))
    else:
        click.echo(render_text(solution, params_path))


solve_command.name = "solve"


def _stage_row(label: str, s: StageResult, subsidised: bool) -> str:
    theta_m = f"{s.theta_M:7.3f}" if subsidised else f"{'-':>7}"
    theta_p = f"{s.theta_P:7.3f}" if subsidised else f"{'-':>7}"
    return (
        f"{label:<52} {theta_m} {theta_p} {s.E_M:7.3f} {s.E_P:7.3f} {s.sigma:5.2f}"
        f" {s.X_ss:8.2f} {s.V_M:8.2f} {s.V_P:8.2f} {s.V_G:8.2f} {s.total:8.2f}"
        f" {s.efficiency:6.3f}"
    )


def render_text(solution: Solution, params_path: Path) -> str:
    """The human-readable table printed by ``policy solve``."""
    lines = [
        "Coordination model, a differential-game model in the spirit of Qin et al. (2026)",
        f"params: {params_path}",
        "",
        _HEADER,
        _stage_row(f"1 {solution.stage1.name}", solution.stage1, True),
        _stage_row(f"2 {solution.stage2.name}", solution.stage2, True),
        _stage_row(f"2 {solution.stage2_budget.name}", solution.stage2_budget, True),
        _stage_row(f"3 {solution.stage3.name}", solution.stage3, False),
        "",
        "stage 3: V_* before transfers; each party bears its own effort cost,",
        "the split below settles it. eff = X_ss per unit of resource cost.",
        "",
        f"{'stage 3 split':<52} {'M':>8} {'P':>8} {'G':>8} {'total':>8}",
    ]
    for label, split in (
        ("shapley", solution.shapley),
        ("nash bargaining (stage 2 threat, equal weights)", solution.nash),
    ):
        values = split.values
        cells = " ".join(f"{values[i]:8.2f}" for i in PARTIES)
        lines.append(f"{label:<52} {cells} {split.total:8.2f}")
    return "\n".join(lines)
