"""``carbonlink policy``: solve the coordination model for a parameter file, and
backtest policies against a recorded window.

The model is a differential-game model in the spirit of Qin et al. (2026), our own
formulation (docs/coordination.md; writing and backtesting policies: docs/policies.md).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Final

import click
import pandas as pd

from carbonlink._exceptions import ConfigError
from carbonlink.cli._common import (
    config_option,
    parse_duration_s,
    required_time,
    settings_from,
    store_option,
    store_url,
    user_errors,
)
from carbonlink.config import PlantConfig
from carbonlink.coordination import (
    PARTIES,
    Journal,
    Solution,
    StageResult,
    load_params,
    load_policy,
    solve,
)
from carbonlink.coordination._backtest import (
    abatement_from_journal,
    abatement_from_reference,
    backtest,
    load_window,
    write_outputs,
)
from carbonlink.platform import Store, open_store
from carbonlink.platform._recompute import factor_set_for
from carbonlink.wire import format_timestamp

__all__ = ["policy"]

DEFAULT_PARAMS: Final = Path("config/policies/reference.yaml")
DEFAULT_BACKTEST_POLICIES: Final = tuple(
    Path(f"config/policies/{name}.yaml") for name in ("stage1", "stage2", "stage3")
)
DEFAULT_BACKTEST_OUT: Final = "../var/backtest"  # beside the config, like every other file
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


_TABLE_COLUMNS: Final = (
    ("policy", "policy", "{:<24}"),
    ("emissions_t", "emitted t", "{:>11,.1f}"),
    ("abatement_t", "abated t", "{:>10,.1f}"),
    ("abatement_share", "abated", "{:>7.1%}"),
    ("efficiency", "t/cost", "{:>7.3f}"),
    ("payoff_M", "firm", "{:>9,.1f}"),
    ("payoff_P", "platform", "{:>9,.1f}"),
    ("payoff_G", "govt", "{:>9,.1f}"),
    ("subsidy", "subsidy", "{:>9,.1f}"),
    ("public_cost_per_t", "public/t", "{:>8.3f}"),
)


def render_backtest(summary: pd.DataFrame) -> str:
    """The comparison table: one row per policy, then the recorded stream."""

    def cell(spec: str, value: object) -> str:
        if isinstance(value, float) and math.isnan(value):
            return f"{'-':>{len(spec.format(0.0))}}"
        return spec.format(value)

    header = " ".join(
        f"{title:<24}" if key == "policy" else f"{title:>{len(spec.format(0.0))}}"
        for key, title, spec in _TABLE_COLUMNS
    )
    lines = [header]
    for record in summary.to_dict("records"):
        lines.append(" ".join(cell(spec, record[key]) for key, _, spec in _TABLE_COLUMNS))
    return "\n".join(lines)


@policy.command("backtest")
@config_option
@store_option
@click.option(
    "--policy",
    "policy_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A policy file; repeat to compare [default: stage1, stage2 and stage3].",
)
@click.option(
    "--from",
    "start",
    default=None,
    help="Window start: RFC 3339 or epoch ms [default: the data's].",
)
@click.option(
    "--to", "end", default=None, help="Window end: RFC 3339 or epoch ms [default: the data's]."
)
@click.option("--step", default="15m", help="Replay step (1m ... 1d).")
@click.option("--plants", default=None, help="Comma-separated plant ids [default: all].")
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Coordinator journal: the abatement already in the recording is taken from it.",
)
@click.option(
    "--reference",
    default=None,
    help="FROM/TO (RFC 3339): fit a baseline there instead, to find the recorded abatement.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where steps.csv, summary.csv and the PNG plots go [default: {DEFAULT_BACKTEST_OUT}"
    ", relative to the config file].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def backtest_command(
    config_path: Path | None,
    store_override: str | None,
    policy_paths: tuple[Path, ...],
    start: str | None,
    end: str | None,
    step: str,
    plants: str | None,
    journal_path: Path | None,
    reference: str | None,
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """Replay policies against the same recorded window: emissions, abatement, payoffs."""
    settings = settings_from(config_path)
    policies = [load_policy(p) for p in (policy_paths or DEFAULT_BACKTEST_POLICIES)]
    if journal_path is not None and reference is not None:
        raise ConfigError(None, "--reference", "give --journal or --reference, not both")
    chosen = (
        [settings.plant(p) for p in plants.split(",")] if plants else list(settings.plants.values())
    )
    versions = {}
    for plant in chosen:
        factor_set = factor_set_for(settings, plant.id)
        versions[plant.id] = (factor_set.name, factor_set.version)
    step_s = parse_duration_s(step)
    store = open_store(store_url(settings, store_override), read_only=True)
    try:
        start_ms, end_ms = _window_bounds(store, chosen, start, end, step_s)
        if end_ms <= start_ms:
            raise ConfigError(None, "--to", "must come after --from")
        window = load_window(store, chosen, versions, start_ms, end_ms, step_s)
    finally:
        store.close()
    if not any(n.sum() for n in window.readings.values()):
        raise ConfigError(None, "--from", "the store holds no emissions in that window")
    if window.trimmed:
        click.echo(
            f"note: the store has data only from {format_timestamp(window.start_ms)} to "
            f"{format_timestamp(window.end_ms)}; the window is cut to that",
            err=True,
        )
    for plant_id, gaps in window.gaps().items():
        click.echo(f"note: {plant_id} has no readings in {gaps} of {window.steps} steps", err=True)
    added, source = None, "none"
    if journal_path is not None:
        with Journal.open_readonly(journal_path) as journal:
            added, source = abatement_from_journal(window, journal, chosen), "journal"
    elif reference is not None:
        ref_from, _, ref_to = reference.partition("/")
        ref_start = required_time(ref_from, "--reference")
        ref_end = required_time(ref_to, "--reference")
        if ref_end <= ref_start:
            raise ConfigError(None, "--reference", "expected FROM/TO with TO after FROM")
        added, source = abatement_from_reference(window, ref_start, ref_end), "reference"
    total = len(policies) * len(chosen) * window.steps
    with click.progressbar(
        length=window.steps,
        label=f"replaying {len(policies)} policies x {len(chosen)} plants",
        file=sys.stderr,
    ) as bar:
        seen = [0]

        def advance(done: int) -> None:
            bar.update(done - seen[0])
            seen[0] = done

        result = backtest(
            policies, window, chosen, recorded_abatement=added, abatement_source=source,
            progress=advance,
        )  # fmt: skip
    paths = write_outputs(result, out_dir or settings.beside_config(DEFAULT_BACKTEST_OUT))
    if as_json:
        click.echo(result.summary.to_json(orient="records", indent=2))
    else:
        hours = (window.end_ms - window.start_ms) / 3.6e6
        click.echo(
            f"backtest of {len(policies)} policies on {len(chosen)} plants over {hours:g} h "
            f"({total:,} plant-steps); recorded abatement: {_SOURCES[source]}"
        )
        click.echo(render_backtest(result.summary))
    for path in paths:
        click.echo(f"wrote {path}", err=True)


def _window_bounds(
    store: Store, plants: list[PlantConfig], start: str | None, end: str | None, step_s: float
) -> tuple[int, int]:
    """The window asked for; where a bound is left out, the stored data's, rounded inward to
    the step grid, so that no step is only partly covered (it would replay as a dip)."""
    if start is not None and end is not None:
        return required_time(start, "--from"), required_time(end, "--to")
    ranges = [r for r in (store.time_range(p.id) for p in plants) if r is not None]
    if not ranges:
        raise ConfigError(None, "--store", f"{store.url} holds no readings of these plants")
    step_ms = round(step_s * 1000)
    # A reading's interval ends at its time: one stamped on a boundary belongs before it.
    first = -(-min(r[0] for r in ranges) // step_ms) * step_ms
    last = max(r[1] for r in ranges) // step_ms * step_ms
    if last <= first:  # less than one whole step of data: take what there is
        first = (min(r[0] for r in ranges) - 1) // step_ms * step_ms
        last = -(-max(r[1] for r in ranges) // step_ms) * step_ms
    return (
        required_time(start, "--from") if start is not None else first,
        required_time(end, "--to") if end is not None else last,
    )


_SOURCES: Final = {
    "journal": "from the coordinator's journal, added back to the baseline",
    "reference": "observed against a baseline fitted on the reference period",
    "none": "none (the window is taken as unabated)",
}
