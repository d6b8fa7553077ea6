"""``policy backtest``: counterfactual replay of recorded windows, checked against what
the simulator really emits under the same directives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from carbonlink.cli import main
from carbonlink.config import Settings
from carbonlink.coordination import (
    Journal,
    PeriodRow,
    RecordedWindow,
    backtest,
    directive_history,
    exact_step,
    load_policy,
    load_window,
    stage3_joint,
)
from carbonlink.coordination._backtest import abatement_from_journal, abatement_from_reference
from carbonlink.platform import open_store
from carbonlink.simulators import abatement_inflow
from carbonlink.storage import Store
from tests.coordination.conftest import REFERENCE_YAML
from tests.coordination.recording import HOUR, START_MS, flat_settings, record

POLICIES = REFERENCE_YAML.parent
HOURS = 8
STEP_S = 900.0
PLANT = "bt-cement"
# The simulator abates on X at each minute's end, the replay on X's exact mean over the
# step: per hour they differ by well under 0.1% of emissions.
SIMULATOR_AGREEMENT = 0.002


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return flat_settings(tmp_path_factory.mktemp("config"), {PLANT: "cement-01"})


def _stage3_directive() -> tuple[str, int, float, float, float]:
    result = stage3_joint(load_policy(POLICIES / "stage3.yaml").params)
    return (PLANT, START_MS, result.E_M, result.E_P, result.sigma)


@pytest.fixture(scope="module")
def stores(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Store]:
    """The same plant recorded twice: unabated, and obeying stage-3 directives."""
    directory = tmp_path_factory.mktemp("stores")
    plants = list(settings.plants.values())
    unabated = open_store(f"sqlite:///{directory / 'unabated.sqlite'}")
    directed = open_store(f"sqlite:///{directory / 'directed.sqlite'}")
    record(settings, unabated, plants, START_MS, HOURS)
    record(settings, directed, plants, START_MS, HOURS, directives=[_stage3_directive()])
    return {"unabated": unabated, "directed": directed}


def _window(settings: Settings, store: Store) -> RecordedWindow:
    versions = {}
    for plant in settings.plants:
        factor_set = settings.factor_set(plant)
        versions[plant] = (factor_set.name, factor_set.version)
    end = START_MS + HOURS * HOUR
    return load_window(store, list(settings.plants.values()), versions, START_MS, end, STEP_S)


def _hourly(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame.groupby(frame["start_ms"] // HOUR)[column].sum().to_numpy()


def test_replay_of_stage_3_matches_the_simulator_obeying_it(
    settings: Settings, stores: dict[str, Store]
) -> None:
    unabated = _window(settings, stores["unabated"])
    directed = _window(settings, stores["directed"])
    policy = load_policy(POLICIES / "stage3.yaml")
    result = backtest([policy], unabated, list(settings.plants.values()))
    predicted = _hourly(result.steps, "emissions_t")
    steps = len(result.steps)
    actual_per_step = directed.abatable_t[PLANT] + directed.fixed_t[PLANT]
    actual = actual_per_step.reshape(-1, 4).sum(axis=1)  # four 15-minute steps an hour
    assert steps == HOURS * 4
    assert predicted == pytest.approx(actual, rel=SIMULATOR_AGREEMENT)
    # And it is a real effect: stage 3 cuts ~20% of the line's emissions by hour 8.
    baseline = _hourly(result.steps, "baseline_t")
    assert predicted[-1] < 0.85 * baseline[-1]


def test_policies_compare_on_one_baseline(settings: Settings, stores: dict[str, Store]) -> None:
    window = _window(settings, stores["unabated"])
    policies = [load_policy(POLICIES / f"stage{n}.yaml") for n in (1, 2, 3)]
    result = backtest(policies, window, list(settings.plants.values()))
    summary = result.summary.set_index("policy")
    emitted = [summary.loc[f"stage{n}", "emissions_t"] for n in (1, 2, 3)]
    assert emitted[0] > emitted[1] > emitted[2]
    recorded = summary.loc["(recorded)"]
    stored = stores["unabated"].emissions(PLANT)["co2e_kg"].sum() / 1000
    assert recorded["emissions_t"] == pytest.approx(stored, rel=1e-9)
    for n in (1, 2, 3):
        row = summary.loc[f"stage{n}"]
        assert row["baseline_t"] == pytest.approx(stored, rel=1e-9)  # nothing added back
        assert row["emissions_t"] + row["abatement_t"] == pytest.approx(stored, rel=1e-9)
        assert abs(row["transfers_balance"]) < 1e-6
    assert summary.loc["stage1", "subsidy"] == 0
    assert summary.loc["stage2", "subsidy"] > 0
    # Public cost is everything the government pays: stage 2's subsidies...
    assert summary.loc["stage2", "public_cost"] == pytest.approx(summary.loc["stage2", "subsidy"])
    assert summary.loc["stage2", "public_cost_per_t"] == pytest.approx(
        summary.loc["stage2", "subsidy"] / summary.loc["stage2", "abatement_t"]
    )
    # ...and stage 3's settlement transfers, though it pays no subsidy.
    assert summary.loc["stage3", "subsidy"] == 0
    assert summary.loc["stage3", "public_cost"] > 0
    assert summary.loc["stage3", "settled_by"] == "core"
    for n in (1, 2, 3):
        assert summary.loc[f"stage{n}", "money"] == "kCNY"


def test_journal_gives_back_the_unabated_baseline(
    settings: Settings, stores: dict[str, Store], tmp_path: Path
) -> None:
    """A recording made under stage 3 plus its journal replays like the unabated one."""
    plant = settings.plants[PLANT]
    _, _, e_m, e_p, sigma = _stage3_directive()
    inflow = abatement_inflow(plant.simulation.abatement, e_m, e_p, sigma)
    x = 0.0
    rows = []
    for k in range(HOURS * 4):
        start = START_MS + k * 900_000
        mean, x = exact_step(x, inflow, plant.simulation.abatement.delta, 0.25)
        rows.append(PeriodRow(PLANT, start, start + 900_000, "stage3", 3, e_m, e_p, sigma,
                              0, 0, 0, mean, None, 0.0, 0, None, {}))  # fmt: skip
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.record_periods(rows)
        directed = _window(settings, stores["directed"])
        added = abatement_from_journal(directed, journal, list(settings.plants.values()))
    unabated = _window(settings, stores["unabated"])
    rebuilt = directed.abatable_t[PLANT] + added[PLANT]
    assert rebuilt == pytest.approx(unabated.abatable_t[PLANT], rel=SIMULATOR_AGREEMENT)
    policies = [load_policy(POLICIES / "stage1.yaml")]
    from_journal = backtest(policies, directed, [plant], recorded_abatement=added)
    from_unabated = backtest(policies, unabated, [plant])
    assert from_journal.summary["emissions_t"][0] == pytest.approx(
        from_unabated.summary["emissions_t"][0], rel=SIMULATOR_AGREEMENT
    )


def test_window_ending_before_the_coordinators_last_step(
    settings: Settings, stores: dict[str, Store], tmp_path: Path
) -> None:
    """The README tour's crash: the window ends (on the 15-minute grid) before the grid
    time at which the coordinator's last decision began. That decision has no length in
    the window; it used to come back as a period of length 0 and divide by zero."""
    _, _, e_m, e_p, sigma = _stage3_directive()
    end = START_MS + HOURS * HOUR
    decision = {"result": {"E_M": e_m, "E_P": e_p, "sigma": sigma}}
    with Journal(tmp_path / "journal.sqlite") as journal:
        rows = [PeriodRow(PLANT, START_MS, end - HOUR, "stage3", 3, e_m, e_p, sigma,
                          0, 0, 0, 0.0, None, 0.0, 0, None, {})]  # fmt: skip
        journal.record_periods(rows)
        for last_ms in (end, end + 7 * 60_000):  # at the window's end, and after it
            journal.save_state(
                "coordinator",
                {"last_ms": last_ms, "in_force": {PLANT: decision},
                 "unrecorded": [[end - HOUR, last_ms, {PLANT: decision}]]},
            )  # fmt: skip
            history = directive_history(journal, PLANT, end)
            assert all(b > a for a, b, *_ in history)
            assert history[-1][1] == last_ms
            added = abatement_from_journal(
                _window(settings, stores["directed"]), journal, list(settings.plants.values())
            )
            assert np.isfinite(added[PLANT]).all()
            assert added[PLANT][-1] > 0
    assert exact_step(3.0, 1.0, 0.2, 0.0) == (3.0, 3.0)


def test_reference_baseline_finds_the_recorded_abatement(
    settings: Settings, tmp_path: Path
) -> None:
    plants = list(settings.plants.values())
    store = open_store(f"sqlite:///{tmp_path / 'switched.sqlite'}")
    plant_id, _, e_m, e_p, sigma = _stage3_directive()
    switch = START_MS + 3 * HOUR
    record(
        settings, store, plants, START_MS, HOURS, directives=[(plant_id, switch, e_m, e_p, sigma)]
    )
    window = _window(settings, store)
    found = abatement_from_reference(window, START_MS, switch)[PLANT]
    abate = plants[0].simulation.abatement
    inflow = abatement_inflow(abate, e_m, e_p, sigma)
    expected, x = [], 0.0
    for k in range(HOURS * 4):
        mean, x = exact_step(x, inflow if START_MS + k * 900_000 >= switch else 0.0,
                             abate.delta, 0.25)  # fmt: skip
        expected.append(mean * abate.scale * 0.25)
    # Nothing in the reference period, but for the first step: the counter meter's first
    # register only sets its baseline (as the agent does), so that step is a minute short.
    assert found[1:12] == pytest.approx(np.zeros(11), abs=0.05)
    assert found[12:].sum() == pytest.approx(sum(expected), rel=0.01)
    store.close()


def test_cli_prints_the_table_and_writes_csv_and_png(
    settings: Settings, stores: dict[str, Store], tmp_path: Path
) -> None:
    url = stores["unabated"].url
    out = tmp_path / "out"
    end = str(START_MS + HOURS * HOUR)
    common = ["policy", "backtest", "--config", str(settings.path), "--store", url,
              "--from", str(START_MS), "--to", end, "--out", str(out)]  # fmt: skip
    policies = [f"--policy={POLICIES / f'stage{n}.yaml'}" for n in (1, 2, 3)]
    result = CliRunner().invoke(main, [*common, *policies])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "recorded abatement: none" in lines[0]
    assert "value with continuation, kCNY" in lines[1]
    rows = lines[3 : lines.index("")]
    assert [line.split()[0] for line in rows] == ["stage1", "stage2", "stage3", "(recorded)"]
    assert "Money in kCNY; public/t and CEP in kCNY/tCO2e" in result.stdout
    for name in ("emissions.png", "payoffs.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / name).stat().st_size > 10_000
    steps = pd.read_csv(out / "steps.csv")
    assert len(steps) == 3 * HOURS * 4
    assert set(steps["money"]) == {"kCNY"}
    assert set(steps["policy"]) == {"stage1", "stage2", "stage3"}
    as_json = CliRunner().invoke(main, [*common, *policies, "--json"])
    records = json.loads(as_json.stdout)
    assert [r["policy"] for r in records] == ["stage1", "stage2", "stage3", "(recorded)"]
    summary = pd.read_csv(out / "summary.csv")
    assert summary["emissions_t"].tolist() == pytest.approx([r["emissions_t"] for r in records])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-11-24T08:00:00Z", "--to", "2026-11-24T07:00:00Z"], "--to: must come"),
        (["--from", "2020-01-01T00:00:00Z", "--to", "2020-01-02T00:00:00Z"], "no emissions"),
        (["--from", "yesterday", "--to", "2026-11-24T07:00:00Z"], "--from"),
        (["--from", "2026-11-24T00:00:00Z", "--to", "2026-11-24T07:00:00Z", "--plants", "nope"],
         "no plant 'nope'"),
        (["--from", "2026-11-24T00:00:00Z", "--to", "2026-11-24T07:00:00Z", "--journal", "j",
          "--reference", "a/b"], "not both"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_clear_line(
    settings: Settings, stores: dict[str, Store], args: list[str], message: str
) -> None:
    url = stores["unabated"].url
    result = CliRunner().invoke(
        main, ["policy", "backtest", "--config", str(settings.path), "--store", url, *args]
    )
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_window_is_cut_to_the_data_it_has(settings: Settings, stores: dict[str, Store]) -> None:
    """Hours with no readings would replay as zero emissions: the window is cut instead."""
    versions = {p: (settings.factor_set(p).name, settings.factor_set(p).version)
                for p in settings.plants}  # fmt: skip
    plants = list(settings.plants.values())
    asked = (START_MS - 5 * HOUR, START_MS + (HOURS + 5) * HOUR)
    window = load_window(stores["unabated"], plants, versions, *asked, STEP_S)
    assert window.trimmed
    assert window.requested == asked
    assert (window.start_ms, window.end_ms) == (START_MS, START_MS + HOURS * HOUR)
    assert window.steps == HOURS * 4
    assert window.gaps() == {}
    result = CliRunner().invoke(main, [
        "policy", "backtest", "--config", str(settings.path), "--store", stores["unabated"].url,
        "--from", str(asked[0]), "--to", str(asked[1]), f"--policy={POLICIES / 'stage1.yaml'}",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "the window is cut to that" in result.stderr
    assert f"over {HOURS} h" in result.stdout


LONG_HOURS = 72  # 7.2/r: the continuation is worth under 0.2% of a value


@pytest.fixture(scope="module")
def long_store(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('long') / 'long.sqlite'}")
    record(settings, store, list(settings.plants.values()), START_MS, LONG_HOURS)
    return store


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``carbonlink`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "carbonlink", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_backtest_agrees_with_solve_on_a_long_window(
    settings: Settings, long_store: Store, tmp_path: Path
) -> None:
    """coordination-model.md, "Valuing a policy over a window": cash + e^(-rT) phi(X_T)
    is the value at the window's start, what `policy solve` reports. The plant behaves
    as the reference case (the cement line's abatement settings are the reference's),
    so value with continuation matches solve on any window; over a long one cash alone
    does too, and on a short one cash ranks the policies the wrong way."""
    solved = _cli("policy", "solve", "--params", str(REFERENCE_YAML), "--json")
    assert solved.returncode == 0, solved.stderr
    solution = json.loads(solved.stdout)
    stages = {s["stage"]: s for s in solution["stages"]}
    expected = {
        "stage1": {p: stages[1][f"V_{p}"] for p in "MPG"},
        "stage2": {p: stages[2][f"V_{p}"] for p in "MPG"},
        "stage3": solution["splits"]["core"]["values"],  # the split that settles
    }
    assert solution["settlement"]["split"] == "core"
    policies = [f"--policy={POLICIES / f'stage{n}.yaml'}" for n in (1, 2, 3)]
    summaries = {}
    for hours in (LONG_HOURS, 4):
        done = _cli(
            "policy", "backtest", "--config", str(settings.path), "--store", long_store.url,
            "--from", str(START_MS), "--to", str(START_MS + hours * HOUR),
            "--out", str(tmp_path / f"out{hours}"), "--json", *policies,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summaries[hours] = {r["policy"]: r for r in json.loads(done.stdout)}
        assert ("shorter than 2/delta" in done.stderr) == (hours < 10)
    for hours, summary in summaries.items():
        for name, values in expected.items():
            row = summary[name]
            for party in "MPG":
                assert row[f"value_{party}"] == pytest.approx(values[party], rel=2e-4), (
                    hours, name, party,
                )  # fmt: skip
            assert row["money"] == "kCNY"
    worst = {
        hours: max(
            abs(summary[n][f"value_{p}"] / expected[n][p] - 1) for n in expected for p in "MPG"
        )
        for hours, summary in summaries.items()
    }
    print(f"\nvalue with continuation vs policy solve, worst relative gap: {worst}")
    long, short = summaries[LONG_HOURS], summaries[4]
    for name in expected:
        assert long[name]["cash_total"] == pytest.approx(long[name]["value_total"], rel=5e-3)
    ranking = sorted(expected, key=lambda n: sum(expected[n].values()))
    assert sorted(expected, key=lambda n: long[n]["value_total"]) == ranking
    assert sorted(expected, key=lambda n: short[n]["value_total"]) == ranking
    # Four hours in, stage 3 has paid for most of its effort and banked little abatement:
    # its cash is below stage 1's though its value is two and a half times as large.
    assert short["stage3"]["cash_total"] < short["stage1"]["cash_total"]
    assert long["stage3"]["cash_total"] > 2 * long["stage1"]["cash_total"]


def test_plots_keep_colours_and_labels_apart(
    settings: Settings, stores: dict[str, Store], tmp_path: Path
) -> None:
    """Eight policies: the payoffs plot puts names on the y axis (they cannot overlap),
    and each policy's colour does not depend on the order they were given in."""
    from carbonlink.coordination._backtest import policy_colours, write_outputs

    names = sorted(p.stem for p in POLICIES.glob("*.yaml") if p.stem != "reference")[:8]
    assert policy_colours(names) == policy_colours(list(reversed(names)))
    assert len(set(policy_colours(names).values())) == len(names)
    window = _window(settings, stores["unabated"])
    policies = [load_policy(POLICIES / f"{n}.yaml") for n in names]
    result = backtest(policies, window, list(settings.plants.values()))
    paths = write_outputs(result, tmp_path)
    for path in paths[2:]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
