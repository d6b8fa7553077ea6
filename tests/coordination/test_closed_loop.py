"""The closed loop on a real Mosquitto: simulator -> agent -> platform -> store ->
coordinator -> retained directive -> simulator, under the switch-1-to-3 policy.

The plant's load is made flat (no diurnal or seasonal swing, no noise) so that the
change in its emissions is the abatement the directives bought, which the dynamics
dX/dt = I - delta*X predict in closed form.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Final

import aiomqtt
import pandas as pd
import pytest
import yaml

from carbonlink import wire
from carbonlink._clock import SimClock
from carbonlink._mqtt import parse_broker_url
from carbonlink.config import PlantConfig, Settings, load_config
from carbonlink.coordination import Coordinator, Ledger, load_policy
from carbonlink.platform import open_store
from carbonlink.simulators import abatement_closed_form, abatement_inflow, simulate
from tests.configs import write_config
from tests.coordination.conftest import REFERENCE_YAML
from tests.servers import MosquittoServer
from tests.test_end_to_end import NOW_MS, Pipeline, eventually

HOUR: Final = 3_600_000
MINUTE: Final = 60_000
START_MS: Final = NOW_MS - 24 * HOUR  # within the agents' accepted reading age
RUN_MS: Final = 5 * HOUR  # stage 1 for 2 h, then stage 3
SPEED: Final = 3600.0  # one simulated hour per wall second
PERIOD_S: Final = 900.0  # simulated seconds between coordinator steps
SWITCH_POLICY: Final = REFERENCE_YAML.parent / "switch-1-to-3.yaml"
# Measured drop vs the closed form, which uses the effective times of the directives the
# plant received; runs agree to within 0.5%. The margin covers boundary minutes of the
# windows and readings still in flight.
DROP_TOLERANCE: Final = 0.10
STORE_QUIET_S: Final = 1.0


@pytest.fixture
def flat_settings(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> Settings:
    plant_id = f"{topic_prefix}-cement"
    path = write_config(
        tmp_path / "config", plants={plant_id: "cement-01"}, broker_url=mosquitto_private.url,
        client_id=f"platform-{topic_prefix}",
    )  # fmt: skip
    plant_file = path.parent / "plants" / f"{plant_id}.yaml"
    plant: dict[str, Any] = yaml.safe_load(plant_file.read_text())
    plant["simulation"]["shift"].update(daily_swing=0.0, seasonal_swing=0.0, noise_sd=0.0)
    for meter in plant["meters"]:
        meter["noise_sd"] = 0.0
    plant_file.write_text(yaml.safe_dump(plant))
    return load_config(path)


def epoch_ms(frame: pd.DataFrame) -> pd.Series:
    return (frame["time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def rate_t_per_h(frame: pd.DataFrame, start_ms: int, end_ms: int) -> float:
    """Mean emission rate over [start, end): per-minute totals, averaged."""
    ts = epoch_ms(frame)
    per_minute = frame.assign(ts=ts).groupby("ts")["co2e_kg"].sum()
    window = per_minute[(per_minute.index >= start_ms) & (per_minute.index < end_ms)]
    assert len(window) >= (end_ms - start_ms) // MINUTE - 2, "readings missing in the window"
    return float(window.mean()) * 60 / 1000


def predicted_x(
    plant: PlantConfig, switches: list[tuple[int, float, float, float]], t: int
) -> float:
    """X at ``t`` from 0 under directives (effective_ms, E_M, E_P, sigma), in order."""
    abate = plant.simulation.abatement
    x, last, inflow = 0.0, switches[0][0], 0.0
    for effective, e_m, e_p, sigma in switches:
        if effective > t:
            break
        x = float(abatement_closed_form(x, inflow, abate.delta, (effective - last) / HOUR))
        last, inflow = effective, abatement_inflow(abate, e_m, e_p, sigma)
    return float(abatement_closed_form(x, inflow, abate.delta, (t - last) / HOUR))


def test_switch_to_stage_3_lowers_emissions_as_predicted(
    flat_settings: Settings, mosquitto_private: MosquittoServer, tmp_path: Path, topic_prefix: str
) -> None:
    (plant,) = flat_settings.plants.values()
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    ledger_path = tmp_path / "ledger.sqlite"
    policy = load_policy(SWITCH_POLICY)
    address = parse_broker_url(mosquitto_private.url)
    directives: list[wire.Directive] = []

    async def scenario() -> pd.DataFrame:
        clock = SimClock(START_MS, speed=SPEED)
        async with (
            Pipeline(flat_settings, mosquitto_private, store_url) as pipeline,
            aiomqtt.Client(mosquitto_private.host, mosquitto_private.port) as watcher,
        ):
            await watcher.subscribe(wire.directive_topic(plant.id), qos=1)

            async def watch() -> None:
                async for message in watcher.messages:
                    assert isinstance(message.payload, bytes)
                    directives.append(wire.decode_directive(str(message.topic), message.payload))

            watching = asyncio.create_task(watch())
            store = open_store(store_url)
            with Ledger(ledger_path) as ledger:
                coordinator = Coordinator(
                    [plant], store, address, policy, ledger, clock_ms=clock.now_ms,
                    period_s=PERIOD_S, wall_period_s=PERIOD_S / SPEED,
                    client_id=f"coordinator-{topic_prefix}",
                )  # fmt: skip
                coordinating = asyncio.create_task(coordinator.run())
                await eventually(lambda: coordinator.periods >= 1, "the first directive")
                await simulate([plant], address, clock, seed=3, duration_ms=RUN_MS)
                coordinating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await coordinating
                steps_run.append(coordinator.periods)
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            previous = -1
            while (stored := pipeline.platform.counters.stored) != previous:
                previous = stored
                await asyncio.sleep(STORE_QUIET_S)
            frame = await asyncio.to_thread(store.emissions, plant.id)
            store.close()
            return frame

    steps_run: list[int] = []
    emissions = asyncio.run(scenario())

    stages = [d.stage for d in directives]
    assert stages[0] == "primary_neutrality"
    assert stages[-1] == "advanced_symbiosis"
    switch_index = stages.index("advanced_symbiosis")
    assert set(stages[switch_index:]) == {"advanced_symbiosis"}
    first, switch = directives[0], directives[switch_index]
    late_ms = PERIOD_S * 1000 + MINUTE  # a step's period, plus scheduling slack
    assert switch.effective_ms - first.effective_ms == pytest.approx(2 * HOUR, abs=late_ms)
    assert switch.sigma == pytest.approx(1.25)
    assert (switch.effort_firm, switch.effort_platform) == pytest.approx((4.583, 2.933), rel=1e-3)

    # Efforts change only at the stage switch; later re-publications repeat them.
    steps = [(first.effective_ms, first.effort_firm, first.effort_platform, first.sigma)]
    steps.append((switch.effective_ms, switch.effort_firm, switch.effort_platform, switch.sigma))
    sim_end = int(epoch_ms(emissions).min()) + RUN_MS
    before = (switch.effective_ms - HOUR, switch.effective_ms)
    after = (sim_end - HOUR, sim_end - 2 * MINUTE)  # the last minutes may still be in transit

    def mean_x(window: tuple[int, int]) -> float:
        points = range(window[0], window[1], MINUTE)
        return sum(predicted_x(plant, steps, t) for t in points) / len(points)

    predicted_drop = mean_x(after) - mean_x(before)  # tCO2e/h: scale 1, period 1 h
    measured_drop = rate_t_per_h(emissions, *before) - rate_t_per_h(emissions, *after)
    assert predicted_drop > 10.0  # the stage-3 switch is worth > 10 tCO2e/h within 3 h
    assert measured_drop == pytest.approx(predicted_drop, rel=DROP_TOLERANCE)

    with Ledger(ledger_path) as ledger:
        bodies = ledger.bodies()
        assert ledger.verify().ok
    # Steps tick on the wall clock, so how many fit in the run varies with the machine's
    # load; what must hold exactly is one report per step after the first (one plant).
    (steps,) = steps_run
    assert len(bodies) == steps - 1
    assert steps >= RUN_MS // (PERIOD_S * 1000) // 2  # the coordinator kept pace
    assert {b["stage"] for b in bodies} == {1, 3}
    for body in bodies:
        assert sum(body["transfers"].values()) == pytest.approx(0.0, abs=1e-9)
    assert any(b["stage"] == 3 and b["transfers"]["G"] != 0 for b in bodies)
    assert sum(b["reported_tco2e"] for b in bodies) > 0

    db = sqlite3.connect(ledger_path)
    tampered = len(bodies) // 2
    body = json.loads(
        db.execute("SELECT body FROM reports WHERE idx = ?", (tampered,)).fetchone()[0]
    )
    body["reported_tco2e"] *= 0.5
    with db:
        db.execute("UPDATE reports SET body = ? WHERE idx = ?", (json.dumps(body), tampered))
    db.close()
    with Ledger(ledger_path) as ledger:
        check = ledger.verify()
    assert check.broken_at == tampered
