"""``carbonlink policy``: solve the coordination model for a parameter file, and
backtest policies against a recorded window.

The model is a differential-game model in the spirit of Qin et al. (2026), our own
formulation (docs/coordination.md; writing and backtesting policies: docs/policies.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import click
import pandas as pd

from carbonlink.cli._common import (
    DURATION,
    config_option,
    format_option,
    required_time,
    settings_from,
    store_option,
    store_url,
    user_errors,
)
from carbonlink.cli._progress import progress
from carbonlink.config import PlantConfig, Settings
from carbonlink.coordination import (
    ABATEMENT_SOURCE_TEXT,
    PARTIES,
    RECORDED_ROW,
    BacktestResult,
    Journal,
    Solution,
    StageResult,
    prepare_backtest,
    replay,
    solve,
    write_outputs,
)
from carbonlink.coordination.model import load_parameter_file
from carbonlink.errors import ConfigError
from carbonlink.platform import Store, open_store
from carbonlink.wire import format_timestamp

__all__ = ["policy"]

FC = TypeVar("FC", bound=Callable[..., object])

DEFAULT_PARAMS: Final = Path("config/policies/reference.yaml")
DEFAULT_BACKTEST_POLICIES: Final = tuple(
    Path(f"config/policies/{name}.yaml") for name in ("stage1", "stage2", "stage3")
)
DEFAULT_BACKTEST_OUT: Final = "../var/backtest"  # beside the config, like every other file
DEFAULT_SWEEP_OUT: Final = "../var/sweep"
DEFAULT_MEASURES_OUT: Final = "../var/measures"
_HEADER: Final = (
    f"{'stage':<52} {'theta_M':>7} {'theta_P':>7} {'E_M':>7} {'E_P':>7} {'sigma':>5}"
    f" {'X_ss':>8} {'V_M':>8} {'V_P':>8} {'V_G':>8} {'total':>8} {'t/cost':>6}"
)


def _out_option(what: str, default: str) -> Callable[[FC], FC]:
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Where {what} go [default: {default}, relative to the config file].",
    )


_params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_PARAMS,
    show_default=True,
    help="Policy parameter file (YAML).",
)


@click.group()
def policy() -> None:
    """Coordination model: firm, platform and government in three stages."""


@policy.command()
@_params_option
@format_option
@user_errors
def solve_command(params_path: Path, fmt: str) -> None:
    """Solve every stage: subsidies, efforts, steady-state X, values, stage-3 splits."""
    solution = solve(*load_parameter_file(params_path))
    if fmt == "json":
        click.echo(json.dumps(solution.to_dict(), indent=2))
    elif fmt == "csv":
        click.echo(stage_frame(solution).to_csv(index=False), nl=False)
    else:
        click.echo(render_text(solution, params_path))


solve_command.name = "solve"


def _stage_row(label: str, s: StageResult, subsidised: bool) -> str:
    theta_m = f"{s.theta_M:7.3f}" if subsidised else f"{'-':>7}"
    theta_p = f"{s.theta_P:7.3f}" if subsidised else f"{'-':>7}"
    return (
        f"{label:<52} {theta_m} {theta_p} {s.E_M:7.3f} {s.E_P:7.3f} {s.sigma:5.2f}"
        f" {s.X_ss:8.2f} {s.V_M:8.2f} {s.V_P:8.2f} {s.V_G:8.2f} {s.total:8.2f}"
        f" {s.abatement_per_cost:6.3f}"
    )


def stage_frame(solution: Solution) -> pd.DataFrame:
    """One row per stage, the columns of the text table, money in its own column."""
    rows = []
    for key in ("stage1", "stage2", "stage2_budget", "stage3"):
        s: StageResult = getattr(solution, key)
        rows.append({"stage": s.stage, "name": s.name, "theta_M": s.theta_M,
                     "theta_P": s.theta_P, "E_M": s.E_M, "E_P": s.E_P, "sigma": s.sigma,
                     "X_ss_tco2e_per_period": s.X_ss, "V_M": s.V_M, "V_P": s.V_P,
                     "V_G": s.V_G, "V_total": s.total,
                     "abatement_per_cost": s.abatement_per_cost,
                     "money": solution.money.label})  # fmt: skip
    return pd.DataFrame(rows)


def render_text(solution: Solution, params_path: Path) -> str:
    """The human-readable table printed by ``policy solve``."""
    p, money = solution.params, solution.money
    lines = [
        "Coordination model, a differential-game model in the spirit of Qin et al. (2026)",
        f"params: {params_path}; money: {money.long} ({money.label})",
        "",
        _HEADER,
        _stage_row(f"1 {solution.stage1.name}", solution.stage1, True),
        _stage_row(f"2 {solution.stage2.name}", solution.stage2, True),
        _stage_row(f"2 {solution.stage2_budget.name}", solution.stage2_budget, True),
        _stage_row(f"3 {solution.stage3.name}", solution.stage3, False),
        "",
        "theta: share of each party's effort cost the government pays. E: efforts. sigma:",
        "the gain from shared data (stage 3). X_ss: abatement reached, tCO2e per model period.",
        f"V_M, V_P, V_G: the value to the firm, the platform and the government, in {money.label},",
        f"discounted at r = {p.r:g} per period from X0 = {p.X0:g}: each party's flow for ever",
        "(policy backtest's value with continuation is the same quantity over a window).",
        "Stage 3: V_* before transfers; each party bears its own effort cost, the split below",
        f"settles it. t/cost: abatement per unit cost, tCO2e per {money.label} of effort cost.",
        "",
        f"{'stage 3 split, ' + money.label:<52} {'M':>8} {'P':>8} {'G':>8} {'total':>8}",
    ]
    core = solution.core
    floors = " ".join(f"{core.floors[i]:8.2f}" for i in PARTIES)
    lines.append(
        f"{'floors: best of stages 1 and 2':<52} {floors} {sum(core.floors.values()):8.2f}"
    )
    splits = [("shapley", solution.shapley)]
    splits.append(("nash bargaining (stage 2 threat, equal weights)", solution.nash))
    if core.split is not None:
        splits.insert(0, ("core (nucleolus within the core and the floors)", core.split))
    else:
        lines.append(f"{'core':<52} {'-':>8} {'-':>8} {'-':>8} {core.total:8.2f}")
    for label, split in splits:
        values = split.values
        cells = " ".join(f"{values[i]:8.2f}" for i in PARTIES)
        lines.append(f"{label:<52} {cells} {split.total:8.2f}")
    lines += ["", f"settlement: {solution.settlement}."]
    return "\n".join(lines)


#: (summary column, group, title, format): the backtest's table.
_TABLE_COLUMNS: Final = (
    ("policy", "", "policy", "{:<24}"),
    ("emissions_t", "", "emitted t", "{:>10,.1f}"),
    ("abatement_t", "", "abated t", "{:>9,.1f}"),
    ("abatement_share", "", "abated", "{:>6.1%}"),
    ("x_end", "", "X end", "{:>6,.1f}"),
    ("value_M", "value with continuation", "firm", "{:>8,.1f}"),
    ("value_P", "value with continuation", "platform", "{:>8,.1f}"),
    ("value_G", "value with continuation", "govt", "{:>8,.1f}"),
    ("value_total", "value with continuation", "total", "{:>8,.1f}"),
    ("cash_total", "", "cash", "{:>8,.1f}"),
    ("public_cost", "", "public", "{:>8,.1f}"),
    ("public_cost_per_t", "", "public/t", "{:>8.3f}"),
    ("cep", "", "CEP", "{:>6.2f}"),
)


def _width(spec: str) -> int:
    return len(spec.format(0.0))


def render_backtest(summary: pd.DataFrame) -> str:
    """The comparison table: one row per policy, then the recorded stream, and what the
    columns mean, with their units."""

    def cell(spec: str, value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{'-':>{_width(spec)}}"
        return spec.format(value)

    groups: list[tuple[str, int]] = []
    for _, group, _, spec in _TABLE_COLUMNS:
        width = _width(spec) + 1
        if groups and groups[-1][0] == group:
            groups[-1] = (group, groups[-1][1] + width)
        else:
            groups.append((group, width))
    money = next((str(m) for m in summary["money"] if isinstance(m, str) and m), "money units")
    top = "".join(
        (f"{name}, {money}".center(width - 1, "-") + " ") if name else " " * width
        for name, width in groups
    )
    header = " ".join(
        f"{title:<{_width(spec)}}" if key == "policy" else f"{title:>{_width(spec)}}"
        for key, _, title, spec in _TABLE_COLUMNS
    )
    lines = [top.rstrip(), header]
    for record in summary.to_dict("records"):
        lines.append(" ".join(cell(spec, record[key]) for key, _, _, spec in _TABLE_COLUMNS))
    lines += [
        "",
        f"Money in {money}; public/t and CEP in {money}/tCO2e. X end: abatement capability "
        "reached at the window's end, tCO2e/h over all plants.",
        "value: cash plus the discounted value of the abatement capability reached, each "
        "party's value from here on if the policy went on; on a long window it is what "
        "`policy solve` reports.",
        "cash: the window's flows after transfers, discounted to its start. public: what "
        "the government paid, subsidies and settlement transfers (net). CEP: carbon "
        "emission performance, value added per tCO2e emitted.",
    ]
    return "\n".join(lines)


def backtest_warnings(summary: pd.DataFrame) -> list[str]:
    """What the analyst must know before reading the table: a window too short to see
    abatement capability built, and which split settled stage 3."""
    notes = []
    rows = summary[summary["policy"] != RECORDED_ROW]
    short = rows[rows["short_window"].astype(bool)]
    if len(short):
        build_up = float(short["build_up_h"].max())
        hours = float(short["hours"].max())
        notes.append(
            f"warning: the window ({hours:g} h) is shorter than 2/delta ({build_up:.3g} h), "
            "the time abatement capability takes to build up: cash over it mostly shows "
            "costs paid ahead of the abatement they buy. Compare policies on value, which "
            "adds the discounted value of the capability reached, or backtest a longer "
            "window."
        )
    settled = {str(s) for s in rows["settled_by"] if isinstance(s, str) and s}
    if "shapley" in settled:
        notes.append(
            "note: for some plant no split leaves every party at least its best of stages 1 "
            "and 2; stage 3 settles on Shapley there (`policy solve` says why)."
        )
    return notes


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
@click.option("--step", type=DURATION, default="15m", help="Replay step (1m ... 1d).")
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
@_out_option("steps.csv, summary.csv and the PNG plots", DEFAULT_BACKTEST_OUT)
@format_option
@user_errors
def backtest_command(
    config_path: Path | None,
    store_override: str | None,
    policy_paths: tuple[Path, ...],
    start: str | None,
    end: str | None,
    step: float,
    plants: str | None,
    journal_path: Path | None,
    reference: str | None,
    out_dir: Path | None,
    fmt: str,
) -> None:
    """Replay policies against the same recorded window: emissions, abatement, payoffs."""
    settings = settings_from(config_path)
    if journal_path is not None and reference is not None:
        raise ConfigError(None, "--reference", "give --journal or --reference, not both")
    ran = run_backtest(
        settings,
        store_url(settings, store_override),
        policy_paths or DEFAULT_BACKTEST_POLICIES,
        BacktestWindow(start, end, step, plants),
        journal_path=journal_path,
        reference=reference,
        out_dir=out_dir or settings.beside_config(DEFAULT_BACKTEST_OUT),
    )
    for note in ran.notes:
        click.echo(note, err=True)
    if fmt == "json":
        click.echo(ran.result.summary.to_json(orient="records", indent=2))
    elif fmt == "csv":
        click.echo(ran.result.summary.to_csv(index=False), nl=False)
    else:
        click.echo(ran.headline)
        click.echo(render_backtest(ran.result.summary))
    for note in backtest_warnings(ran.result.summary):
        click.echo(note, err=True)
    for path in ran.paths:
        click.echo(f"wrote {path}", err=True)


@dataclass(frozen=True, slots=True)
class BacktestWindow:
    """What to replay: RFC 3339 / epoch-ms bounds (None: the data's), the step in
    seconds and the plants (comma-separated; None: all)."""

    start: str | None = None
    end: str | None = None
    step_s: float = 900.0
    plants: str | None = None


@dataclass(frozen=True, slots=True)
class BacktestOutput:
    result: BacktestResult
    paths: list[Path]
    headline: str  # what was replayed, over how long, and where the abatement came from
    notes: list[str]  # about the window: trimmed to the data, gaps


# The coordination functions name their arguments; the CLI names its options.
_OPTIONS: Final = {"start": "--from", "end": "--to", "reference": "--reference", "store": "--store"}


def run_backtest(
    settings: Settings,
    url: str,
    policy_paths: Sequence[Path],
    window_asked: BacktestWindow,
    *,
    journal_path: Path | None = None,
    reference: str | None = None,
    out_dir: Path,
) -> BacktestOutput:
    """`policy backtest` as a function (the demo's end-of-run comparison calls it too):
    load the window, replay each policy on it with a progress bar, write the outputs."""
    start = None if window_asked.start is None else required_time(window_asked.start, "--from")
    end = None if window_asked.end is None else required_time(window_asked.end, "--to")
    period = None
    if reference is not None:
        ref_from, _, ref_to = reference.partition("/")
        period = (required_time(ref_from, "--reference"), required_time(ref_to, "--reference"))
    plants = window_asked.plants.split(",") if window_asked.plants else None
    with open_store(url, read_only=True) as store:
        try:
            setup = prepare_backtest(
                settings, store, policy_paths, start=start, end=end, step=window_asked.step_s,
                plants=plants, journal=journal_path, reference=period,
            )  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(exc.path, _OPTIONS.get(exc.key, exc.key), exc.problem) from None
    policies, chosen, window = setup.policies, setup.plants, setup.window
    total = len(policies) * len(chosen) * window.steps
    label = f"replaying {len(policies)} policies x {len(chosen)} plants"
    with progress(window.steps, label, unit=" steps") as advance:
        result = replay(setup, advance)
    paths = write_outputs(result, out_dir)
    headline = (
        f"backtest of {len(policies)} policies on {len(chosen)} plants over {setup.hours:g} h "
        f"({total:,} plant-steps); recorded abatement: "
        f"{ABATEMENT_SOURCE_TEXT[setup.abatement_source]}"
    )
    return BacktestOutput(result, paths, headline, setup.notes())


def _plants_and_versions(
    settings: Settings, plants: str | None
) -> tuple[list[PlantConfig], dict[str, tuple[str, str]]]:
    """The plants chosen by ``--plants`` (all without it), and the (factor set, version)
    whose emissions count for each."""
    chosen = (
        [settings.plant(p) for p in plants.split(",")] if plants else list(settings.plants.values())
    )
    versions = {}
    for plant in chosen:
        factor_set = settings.factor_set(plant.id)
        versions[plant.id] = (factor_set.name, factor_set.version)
    return chosen, versions


@policy.command("sweep")
@config_option
@_params_option
@click.option(
    "--vary",
    "varied",
    multiple=True,
    required=True,
    help="NAME=v1,v2,... or NAME=START:STOP:N; once or twice (e.g. --vary F=0:1:6).",
)
@click.option(
    "--plant",
    "plant_id",
    default=None,
    help="A plant of the config: emissions and carbon emission performance at its "
    "nominal output [default: values only].",
)
@_out_option("sweep.csv and sweep.png", DEFAULT_SWEEP_OUT)
@format_option
@user_errors
def sweep_command(
    config_path: Path | None,
    params_path: Path,
    varied: tuple[str, ...],
    plant_id: str | None,
    out_dir: Path | None,
    fmt: str,
) -> None:
    """Solve every stage over a grid of parameters: emissions, carbon emission
    performance and each party's value, with the trend along each parameter."""
    from carbonlink.coordination import (
        PlantBasis,
        emission_weights,
        parse_vary,
        plot,
        sweep,
        trends,
    )

    params, money = load_parameter_file(params_path)
    grid = dict(parse_vary(text) for text in varied)
    if len(grid) != len(varied) or not 1 <= len(grid) <= 2:
        raise ConfigError(None, "--vary", "vary one or two different parameters")
    settings = settings_from(config_path)
    basis = None
    if plant_id is not None:
        plant = settings.plant(plant_id)
        basis = PlantBasis.of(plant, emission_weights(plant, settings.factor_set(plant.id)), money)
    points = math.prod(len(v) for v in grid.values())
    with progress(points, f"solving {points} points x 3 stages", unit=" points") as advance:
        frame = sweep(params, grid, basis, advance)
    names = list(grid)
    directory = out_dir or settings.beside_config(DEFAULT_SWEEP_OUT)
    directory.mkdir(parents=True, exist_ok=True)
    csv = directory / "sweep.csv"
    frame.assign(money=money.label).to_csv(csv, index=False)
    png = plot(frame, names, money, directory / "sweep.png")
    summary = trends(frame, names)
    if fmt == "json":
        click.echo(frame.assign(money=money.label).to_json(orient="records", indent=2))
    elif fmt == "csv":
        click.echo(frame.assign(money=money.label).to_csv(index=False), nl=False)
    else:
        click.echo(render_sweep(frame, summary, names, money.label, plant_id))
    for path in (csv, png):
        click.echo(f"wrote {path}", err=True)


def render_sweep(
    frame: pd.DataFrame, summary: pd.DataFrame, names: list[str], money: str, plant: str | None
) -> str:
    """Total value per stage over the grid, then the trend of every metric along each
    varied parameter."""
    where = f"plant {plant} at nominal output" if plant else "the parameter file (no plant)"
    lines = [
        f"sweep of {', '.join(names)}: steady state, {where}; values in {money}, "
        f"discounted (policy solve's V), stage 3 as settled",
        "",
    ]
    first = names[0]
    columns = ["stage", *names, "x_ss", "emissions_t_per_h", "cep", "value_M", "value_P",
               "value_G", "value_total"]  # fmt: skip
    titles = {"x_ss": "X*", "emissions_t_per_h": "tCO2e/h", "cep": f"CEP {money}/t",
              "value_M": "firm", "value_P": "platform", "value_G": "govt",
              "value_total": "total"}  # fmt: skip
    shown = frame.sort_values(["stage", *names])
    if len(shown) > 60:
        shown = shown[shown[first].isin([min(frame[first]), max(frame[first])])]
        lines.append(f"(the {first} ends only; every point is in sweep.csv)")
    header = " ".join(f"{titles.get(c, c):>12}" for c in columns)
    lines.append(header)
    for record in shown.to_dict("records"):
        cells = []
        for column in columns:
            value = record[column]
            if isinstance(value, float):
                cells.append(f"{'-':>12}" if math.isnan(value) else f"{value:12.4g}")
            else:
                cells.append(f"{value!s:>12}")
        lines.append(" ".join(cells))
    lines += ["", "trend along each parameter (the others held fixed), per stage:"]
    width = max(len(str(m)) for m in summary["metric"]) + 2
    for name in names:
        lines.append(f"  {name}:")
        for record in summary[summary["parameter"] == name].to_dict("records"):
            trend = "; ".join(f"stage {s}: {record[f'stage {s}']}" for s in (1, 2, 3))
            lines.append(f"    {record['metric']:<{width}} {trend}")
    return "\n".join(lines)


_MEASURE_COLUMNS: Final = (
    ("plant", "plant", "{:<16}"),
    ("stage_name", "stage", "{:<24}"),
    ("hours", "hours", "{:>6.2f}"),
    ("emissions_t_per_h", "tCO2e/h", "{:>8.2f}"),
    ("cep", "CEP", "{:>8.1f}"),
    ("cep_welfare", "CEP welf", "{:>8.1f}"),
    ("energy_intensity", "GJ/k", "{:>7.2f}"),
    ("electricity_intensity", "kWh/k", "{:>7.1f}"),
    ("energy_structure", "tCO2e/GJ", "{:>8.4f}"),
    ("index", "index", "{:>6.3f}"),
    ("sbm", "SBM", "{:>6.3f}"),
)


@policy.command("measures")
@config_option
@store_option
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Coordinator journal: which stage each period ran under.",
)
@click.option("--from", "start", default=None, help="Window start [default: the data's].")
@click.option("--to", "end", default=None, help="Window end [default: the data's].")
@click.option("--plants", default=None, help="Comma-separated plant ids [default: all].")
@click.option(
    "--weights",
    type=click.Choice(["equal", "entropy"]),
    default="equal",
    show_default=True,
    help="Index weights: equal per dimension, or entropy weights.",
)
@_out_option("measures.csv", DEFAULT_MEASURES_OUT)
@format_option
@user_errors
def measures_command(
    config_path: Path | None,
    store_override: str | None,
    journal_path: Path | None,
    start: str | None,
    end: str | None,
    plants: str | None,
    weights: str,
    out_dir: Path | None,
    fmt: str,
) -> None:
    """Carbon emission efficiency from the stream, per plant and stage: carbon emission
    performance, the four-dimension index and SBM total-factor efficiency."""
    from carbonlink.coordination import INDICATORS, STATUS_STATE_KEY, measures, recorded_units
    from carbonlink.coordination.model import MoneyUnit

    settings = settings_from(config_path)
    chosen, versions = _plants_and_versions(settings, plants)
    store = open_store(store_url(settings, store_override))
    try:
        start_ms, end_ms = _data_window(store, chosen, start, end)
        if end_ms <= start_ms:
            raise ConfigError(None, "--to", "must come after --from")
        if journal_path is None:
            units = recorded_units(store, chosen, versions, start_ms, end_ms)
        else:
            with Journal.open_readonly(journal_path) as journal:
                status = journal.load_state(STATUS_STATE_KEY) or {}
                money = status.get("money")
                unit = None if money is None else MoneyUnit(
                    currency=money["currency"], scale=money["scale"]
                )  # fmt: skip
                units = recorded_units(store, chosen, versions, start_ms, end_ms, journal, unit)
    finally:
        store.close()
    if units.empty:
        raise ConfigError(None, "--from", "the store holds no emissions in that window")
    scored, used = measures(units, "entropy" if weights == "entropy" else "equal")
    directory = out_dir or settings.beside_config(DEFAULT_MEASURES_OUT)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "measures.csv"
    scored.to_csv(path, index=False)
    if fmt == "json":
        click.echo(scored.to_json(orient="records", indent=2))
    elif fmt == "csv":
        click.echo(scored.to_csv(index=False), nl=False)
    else:
        currency = next((c for c in scored["currency"] if isinstance(c, str)), "money")
        click.echo(
            f"carbon emission efficiency from {format_timestamp(start_ms)} to "
            f"{format_timestamp(end_ms)}, per plant and stage in force"
        )
        click.echo(_render_rows(scored, _MEASURE_COLUMNS))
        shares = ", ".join(f"{c} {w:.3f}" for c, w in used.items())
        dimensions = ", ".join(dict.fromkeys(d for _, d, _, _ in INDICATORS))
        click.echo(
            f"\nCEP: carbon emission performance, value added per tCO2e emitted, {currency}/t; "
            f"CEP welf: plus the coordination model's welfare flow. GJ/k and kWh/k: energy and "
            f"electricity per thousand {currency} of value added. tCO2e/GJ: carbon content of "
            f"the energy mix.\nindex: {dimensions}; min-max normalised across these rows "
            f"(1 best), {weights} weights: {shares}.\nSBM: total-factor efficiency (Tone's "
            "slacks-based measure, CO2e an undesirable output; 1 is on the frontier)."
        )
    click.echo(f"wrote {path}", err=True)


def _data_window(
    store: Store, plants: list[PlantConfig], start: str | None, end: str | None
) -> tuple[int, int]:
    """The window asked for; where a bound is left out, all the stored data's: from the
    start of the first reading's interval (its time less its meter's sample period) to
    the last reading."""
    ranges = {p.id: store.time_range(p.id) for p in plants}
    found = {plant: r for plant, r in ranges.items() if r is not None}
    if (start is None or end is None) and not found:
        raise ConfigError(None, "--store", f"{store.url} holds no readings of these plants")
    longest = {p.id: round(max(m.sample_period_s for m in p.meters) * 1000) for p in plants}
    first = min((r[0] - longest[plant] for plant, r in found.items()), default=0)
    last = max((r[1] for r in found.values()), default=0)
    return (
        required_time(start, "--from") if start is not None else first,
        required_time(end, "--to") if end is not None else last,
    )


def _render_rows(frame: pd.DataFrame, columns: tuple[tuple[str, str, str], ...]) -> str:
    def cell(spec: str, value: object) -> str:
        width = len(spec.format(0.0)) if "f" in spec else len(spec.format(""))
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{'-':>{width}}"
        return spec.format(value)

    def title(name: str, spec: str) -> str:
        width = len(spec.format(0.0)) if "f" in spec else len(spec.format(""))
        return f"{name:<{width}}" if "<" in spec else f"{name:>{width}}"

    lines = [" ".join(title(name, spec) for _, name, spec in columns)]
    for record in frame.to_dict("records"):
        lines.append(" ".join(cell(spec, record[key]) for key, _, spec in columns))
    return "\n".join(lines)
