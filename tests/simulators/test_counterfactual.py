"""The exact counterfactual the demo measures its drop against: a fleet replayed with
the inflows a run applied gives that run again, and without the later ones gives the
same plants with nothing else changed."""

from __future__ import annotations

import numpy as np

from carbonlink.simulators import Fleet, InflowChange, Tick, emission_factors, without_changes_from
from carbonlink.simulators._models import MS_PER_HOUR
from tests.simulators.test_models import START_MS, repo_plants

SWITCH_MS = START_MS + 2 * MS_PER_HOUR
END_MS = START_MS + 5 * MS_PER_HOUR


def _live_run() -> tuple[list[Tick], list[InflowChange]]:
    """A run whose directives arrive late, as over MQTT: after their effective time."""
    plants = list(repo_plants().values())
    fleet = Fleet(plants, 11, START_MS, emission_factors())
    fleet.advance(START_MS + MS_PER_HOUR // 2)
    for i in range(len(plants)):
        fleet.set_inflow(i, START_MS + MS_PER_HOUR // 4, 0.2)  # stage 1, arrived late
    fleet.advance(SWITCH_MS + 7 * 60_000)
    for i in range(len(plants)):
        fleet.set_inflow(i, SWITCH_MS, 1.5)  # the switch, seven minutes late
    return fleet.advance(END_MS), fleet.applied


def test_replaying_the_applied_inflows_gives_the_run_again() -> None:
    live, applied = _live_run()
    assert {c.at_ms for c in applied} == {START_MS + MS_PER_HOUR // 2, SWITCH_MS + 7 * 60_000}
    plants = list(repo_plants().values())
    frame = without_changes_from(
        plants, emission_factors(), seed=11, start_ms=START_MS, end_ms=END_MS,
        changes_ms=SWITCH_MS, inflows=applied,
    )  # fmt: skip
    # The live fleet's last stretch (after the late switch) is the replay's, sample by sample.
    replayed = frame[frame["ts_ms"] >= live[0].ts_ms]
    assert np.array_equal(np.concatenate([t.amounts for t in live]), replayed["as_run"].to_numpy())


def test_without_the_switch_only_abatement_differs() -> None:
    _, applied = _live_run()
    plants = list(repo_plants().values())
    frame = without_changes_from(
        plants, emission_factors(), seed=11, start_ms=START_MS, end_ms=END_MS,
        changes_ms=SWITCH_MS, inflows=applied,
    )  # fmt: skip
    assert frame["ts_ms"].min() >= SWITCH_MS
    outputs = {m.id for p in plants for m in p.meters if m.output or m.activity is None}
    same = frame["meter"].isin(outputs)
    # Output and non-emitting meters: the very same samples (the same random draws).
    assert np.array_equal(frame.loc[same, "as_run"], frame.loc[same, "without"])
    # Before the late switch took effect nothing differs; after it, emitting meters
    # (but a fuel switched to, or one at its largest cut) measure less than they would have.
    early = frame["ts_ms"] <= SWITCH_MS + 7 * 60_000
    assert np.array_equal(frame.loc[early, "as_run"], frame.loc[early, "without"])
    late = frame[~early & ~same]
    assert (late["as_run"] <= late["without"]).mean() > 0.8
    assert (late["as_run"] < late["without"]).mean() > 0.5
    assert late["as_run"].sum() < late["without"].sum()
