"""The CLI follows the conventions people expect: ``--version``; one duration syntax
everywhere (``90s``, ``1h30m``, ``max`` for a speed); ``--format table|csv|json`` on every
command that prints data; negative numbers as arguments; a backfill against a broker
that is not there fails in seconds; a seeded demo from a given start replays the same
readings.

In-process (click's runner) where only parsing and printing are at stake; the real
``carbonlink`` process where time, sockets and the pipeline are.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from carbonlink.cli import main
from carbonlink.cli._progress import progress
from carbonlink.core.durations import parse_duration_s
from carbonlink.wire import format_timestamp

REPO = Path(__file__).resolve().parents[1]
FAIL_FAST_S = 30.0  # the process, imports included, on a loaded machine; the probe is 5 s


def cli(*args: str) -> str:
    done = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.stdout  # notes and progress go to stderr


def test_version_is_the_installed_package_version() -> None:
    assert cli("--version").strip() == (
        f"carbonlink, version {importlib.metadata.version('carbonlink')}"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("1.5h", 5400),
     ("2d12h", 216_000), ("500ms", 0.5), ("1m 30s", 90)],
)  # fmt: skip
def test_one_duration_syntax(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["1m2m", "-1", "1h-30m", "", "soon", "1x"])
def test_what_is_no_duration_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="like 90s, 15m, 1h30m"):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["demo", "--duration", "soon"], "Invalid value for '--duration'"),
        (["demo", "--speed", "max"], "--speed: the demo runs live"),
        (["demo", "--speed", "-3"], "Invalid value for '--speed'"),
        (["simulate", "--duration", "1m2m"], "expected a duration like 90s"),
        (["coordinate", "--period", "0s"], "must be more than 0"),
        (["policy", "backtest", "--step", "fortnight"], "Invalid value for '--step'"),
    ],
)
def test_bad_durations_and_speeds_fail_at_once_with_the_option(
    args: list[str], problem: str
) -> None:
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2, done.output
    assert problem in done.output
    assert "Traceback" not in done.output


# Every command that prints data, with arguments that make it print without a store.
DATA_COMMANDS = {
    ("factors", "list"): [],
    ("factors", "compute"): ["natural_gas", "1200", "Nm3"],
    ("policy", "solve"): ["--params", str(REPO / "config/policies/reference.yaml")],
}
# Data commands that need a store or take long (a sweep solves and plots): they are run
# with each format elsewhere (test_demo runs the backtest the demo prints).
OTHER_DATA_COMMANDS = [("query",), ("policy", "backtest"), ("policy", "measures"),
                       ("policy", "sweep")]  # fmt: skip


def _leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _leaf_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def test_every_data_command_takes_format_and_no_other_does_differently() -> None:
    """--format is the one switch: commands that print data have it, and none has a
    visible --json any more."""
    commands = _leaf_commands(main)
    for path in [*DATA_COMMANDS, *OTHER_DATA_COMMANDS]:
        assert path in commands
    for path in commands:
        command: click.Command = main
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        options = {o for p in command.params if not getattr(p, "hidden", False) for o in p.opts}
        assert "--json" not in options, path
        if path in DATA_COMMANDS or path in OTHER_DATA_COMMANDS:
            formats = next(p for p in command.params if "--format" in p.opts)
            assert isinstance(formats.type, click.Choice)
            assert list(formats.type.choices) == ["table", "csv", "json"], path


@pytest.mark.parametrize("path", list(DATA_COMMANDS))
def test_csv_and_json_carry_the_same_rows(path: tuple[str, ...]) -> None:
    args = DATA_COMMANDS[path]
    table = cli(*path, *args)
    as_csv = pd.read_csv(io.StringIO(cli(*path, *args, "--format", "csv")))
    records = json.loads(cli(*path, *args, "--format", "json"))
    rows = records if isinstance(records, list) else [records]
    if path == ("policy", "solve"):  # the JSON is the whole solution; the CSV its stages
        stages = records["stages"]
        rows = [stages[0], stages[1], records["stage2_budget"], stages[2]]
        assert list(as_csv["V_total"]) == pytest.approx([r["total"] for r in rows])
    else:
        assert len(as_csv) == len(rows)
        for column in set(as_csv.columns) & set(rows[0]):
            if as_csv[column].dtype.kind == "f":
                assert list(as_csv[column]) == pytest.approx(
                    [float("nan") if r[column] is None else r[column] for r in rows],
                    nan_ok=True,
                ), column
    assert table.strip()
    assert not table.lstrip().startswith(("{", "["))
    # The old flag still works, for scripts written against it.
    if path != ("factors", "list"):
        assert json.loads(cli(*path, *args, "--json")) == records


def test_a_negative_amount_is_an_argument_not_an_option() -> None:
    positive = json.loads(cli("factors", "compute", "natural_gas", "1", "Nm3", "--format", "json"))
    negative = json.loads(cli("factors", "compute", "natural_gas", "-1", "Nm3", "--format", "json"))
    assert negative["amount"] == -1
    assert negative["co2e_kg"] == pytest.approx(-positive["co2e_kg"])


def test_progress_is_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with progress(40, "replaying", out=out, every_s=0.0, unit=" steps") as advance:
        for done in range(0, 41, 10):
            advance(done)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[-1].startswith("replaying: 40/40 steps 100.0%")
    assert len(lines) == 6  # one per call (every_s=0) and the closing one


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once it is closed


def test_a_backfill_fails_fast_when_the_broker_is_not_there() -> None:
    port = _closed_port()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "carbonlink", "simulate", "--broker", f"mqtt://127.0.0.1:{port}",
         "--speed", "max", "--duration", "1h30m", "--plants", "cement-01"],
        cwd=REPO, capture_output=True, text=True, timeout=FAIL_FAST_S * 2,
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert f"cannot reach the broker at mqtt://127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert took < FAIL_FAST_S, took


def _readings(store: Path) -> dict[tuple[str, str, int], tuple[object, ...]]:
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT plant, meter, ts_ms, value, unit, duration_s FROM activity")
        return {(r[0], r[1], r[2]): r[3:] for r in rows}


@pytest.mark.slow
def test_a_seeded_demo_from_a_given_start_replays_the_same_readings(tmp_path: Path) -> None:
    """Plant data is a function of --seed and --start alone: two runs store the same
    readings, timestamps and values (the pipeline may land a few more in one of them
    before it stops, so the runs are compared where both have data)."""
    start_ms = (int(time.time()) // 3600 - 3) * 3_600_000
    runs, printed = [], []
    for run in ("a", "b"):
        done = subprocess.run(
            [sys.executable, "-m", "carbonlink", "demo", "--policy", "off", "--http", "off",
             "--start", format_timestamp(start_ms), "--seed", "11", "--speed", "300",
             "--duration", "8s", "--refresh", "4s", "--keep", str(tmp_path / run)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs.append(_readings(tmp_path / run / "demo.sqlite"))
        printed.append(f"--- run {run}:\n{done.stdout}{done.stderr}")
    first, second = runs
    common = set(first) & set(second)
    assert len(common) > 0.9 * min(len(first), len(second)) > 100, "\n".join(printed)
    assert min(ts for _, _, ts in common) > start_ms
    assert all(first[key] == second[key] for key in common)
    plants = {p.stem for p in (REPO / "config" / "plants").glob("*.yaml")}
    assert {plant for plant, _, _ in common} == plants
