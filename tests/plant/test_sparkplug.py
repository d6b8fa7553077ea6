"""A Sparkplug B edge node, another implementation in its own process, through a real
Mosquitto and a real ``carbonlink agent`` process into stored, correctly factored
emissions; a lost seq number ends in a rebirth, and the agent's STATE says where it is."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from carbonlink import wire
from carbonlink.config import Settings
from carbonlink.core.clock import wall_clock_ms
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from tests.plant.conftest import (
    PlantFile,
    co2e_kg_per_unit,
    collected,
    dead_letters,
    meter,
    plant_settings,
)
from tests.servers import MosquittoServer, free_port
from tests.test_end_to_end import mosquitto_pub
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow

COAL_T = 0.005  # t of coal per NDATA: within kiln-coal's rating over its 1 s interval
KWH_STEP = 4.0  # kWh the energy register moves per DDATA
DATA_MESSAGES = 6  # one of them, the fourth, after a lost seq number
ROOT = Path(__file__).resolve().parents[2]


def _with_sparkplug(group: str, node: str, host_id: str) -> Callable[[PlantFile], None]:
    def edit(plant: PlantFile) -> None:
        meter(plant, "kiln-coal")["sample_period_s"] = 1  # one NDATA per interval of 1 s
        plant["sparkplug"] = {
            "group": group,
            "edge_node": node,
            "host_id": host_id,
            "metrics": [
                {"name": "Kiln/Coal feed", "meter": "kiln-coal", "unit": "tonne"},
                {"name": "Energy register", "device": "meter-1", "meter": "grid-main"},
            ],
        }

    return edit


def test_edge_node_readings_land_as_emissions_and_a_seq_gap_asks_for_a_rebirth(
    tmp_path: Path, topic_prefix: str, mosquitto: MosquittoServer
) -> None:
    plant, group, node = f"{topic_prefix}-spb", topic_prefix, "kiln-gateway"
    host_id = f"carbonlink-{topic_prefix}"
    settings: Settings = plant_settings(
        tmp_path / "config", mosquitto, plant, _with_sparkplug(group, node, host_id)
    )
    view_port = free_port()
    agent_command = [
        sys.executable, "-m", "carbonlink", "agent", "--config", str(settings.path),
        "--plant", plant, "--broker", mosquitto.url, "--http", f"127.0.0.1:{view_port}",
    ]  # fmt: skip
    edge_command = [
        sys.executable, "-m", "tests.plant.edge_node", "--host", mosquitto.host,
        "--port", str(mosquitto.port), "--group", group, "--node", node, "--device", "meter-1",
        "--host-id", host_id, "--count", str(DATA_MESSAGES), "--skip-after", "3",
        "--coal", str(COAL_T), "--kwh-step", str(KWH_STEP),
    ]  # fmt: skip
    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    platform = Platform(
        Ingestor.from_settings(settings), store, parse_broker_url(mosquitto.url),
        settings.services.platform, spill_path=tmp_path / "spill.sqlite", now_ms=wall_clock_ms,
    )  # fmt: skip

    async def scenario() -> dict[str, object]:
        running = asyncio.create_task(platform.run())
        async with (
            dead_letters(mosquitto, plant) as letters,
            collected(mosquitto, wire.state_topic(host_id)) as states,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{view_port}") as http,
        ):
            async with asyncio.timeout(30):
                await platform.connected.wait()
            agent = await asyncio.create_subprocess_exec(*agent_command, cwd=ROOT)
            try:
                # STATE online comes once the agent has subscribed to the node's topics.
                await async_wait_for(lambda: {"online": True} in _online(states), "STATE online")
                # Hostile input on the node's own topics, before the node is even born.
                spb = f"spBv1.0/{group}"
                mosquitto_pub(mosquitto, f"{spb}/NDATA/{node}", b"\xff\x00 not protobuf")
                mosquitto_pub(mosquitto, f"{spb}/DDATA/{node}/ghost", b"\x18\x05")  # seq 5
                edge = await asyncio.create_subprocess_exec(
                    *edge_command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
                try:
                    async with asyncio.timeout(120):
                        output = (await edge.communicate())[0].decode()
                finally:
                    if edge.returncode is None:
                        edge.kill()
                        await edge.wait()
                # Coal: every NDATA but the one after the gap. Energy: intervals between
                # registers, the first only a baseline and the one after the gap refused.
                expected = (DATA_MESSAGES - 1) + (DATA_MESSAGES - 2)
                await async_wait_for(lambda: platform.counters.stored >= expected, "all stored")
                await async_wait_for(lambda: len(letters) >= 5, "the refusals dead-lettered")
                view: dict[str, object] = {}

                async def node_dead() -> bool:
                    view.update((await http.get("/view")).json())
                    return not view["sparkplug"]["online"]  # type: ignore[index]

                await async_wait_for(node_dead, "the agent's view to show the NDEATH")
            finally:
                if agent.returncode is None:
                    agent.send_signal(signal.SIGINT)
                async with asyncio.timeout(30):
                    exit_code = await agent.wait()
            await async_wait_for(
                lambda: _online(states)[-1:] == [{"online": False}], "STATE offline"
            )
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            return {
                "edge": output,
                "exit": exit_code,
                "view": view,
                "letters": sorted(str(letter["reason"]) for letter in letters),
                "states": _online(states),
            }

    try:
        outcome = asyncio.run(scenario())
        series = {
            (name, field): store.series(plant, meter=name, field=field)["value"].tolist()
            for name in ("kiln-coal", "grid-main")
            for field in ("value", "co2e_kg")
        }
    finally:
        platform.close()
        store.close()
    edge = str(outcome["edge"])
    assert edge.count("births sent") == 2, edge  # the first births and the rebirth
    assert "rebirth requested" in edge
    assert outcome["exit"] == 0
    view = outcome["view"]
    assert view["counters"]["rejected"] == {  # type: ignore[index]
        "malformed_protobuf": 1,
        "no_birth": 2,  # the ghost device, and the DDATA right after the gap
        "seq_gap": 1,
        "unknown_metric": 1,  # the alias no birth declared
    }, edge
    counters = view["counters"]  # type: ignore[index]
    # Every reading is accounted for: accepted, refused, or a counter's first register.
    assert counters["received"] == (
        counters["accepted"] + sum(counters["rejected"].values()) + counters["baselines"]
    )
    assert counters["accepted"] == (DATA_MESSAGES - 1) + (DATA_MESSAGES - 2)
    assert view["sparkplug"]["births"] == 2  # type: ignore[index]
    assert outcome["letters"] == [
        "malformed_protobuf", "no_birth", "no_birth", "seq_gap", "unknown_metric"
    ]  # fmt: skip
    # The agent's STATE: online while it ran (once per connection), offline when it stopped.
    assert outcome["states"][0] == {"online": True}  # type: ignore[index]
    assert outcome["states"][-1] == {"online": False}  # type: ignore[index]
    coal = series[("kiln-coal", "value")]
    assert coal == [COAL_T] * (DATA_MESSAGES - 1)  # sent in `tonne`: the meter's `t`
    # Coal: IPCC 2006 NCV 25.8 GJ/t, CO2 94,600 kg/TJ, CH4 10, N2O 1.5, AR5 GWPs 28, 265.
    per_t = 25.8e-3 * (94_600 + 10 * 28 + 1.5 * 265)
    assert series[("kiln-coal", "co2e_kg")] == pytest.approx([COAL_T * per_t] * len(coal))
    energy = series[("grid-main", "value")]
    assert len(energy) == DATA_MESSAGES - 2
    assert sum(energy) == pytest.approx(KWH_STEP * (DATA_MESSAGES - 1))  # register moved
    grid = co2e_kg_per_unit(settings, plant, "grid-main")
    assert series[("grid-main", "co2e_kg")] == pytest.approx([kwh * grid for kwh in energy])


def _online(states: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{"online": state["online"]} for state in states]
