"""A Sparkplug B edge node, another implementation in its own process, through a real
Mosquitto into stored, correctly factored emissions; its seq gap ends in a rebirth."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from carbonlink import wire
from carbonlink.config import Settings
from carbonlink.core.clock import wall_clock_ms
from tests.plant.conftest import (
    PlantFile,
    co2e_kg_per_unit,
    dead_letters,
    eventually,
    meter,
    plant_settings,
)
from tests.servers import MosquittoServer
from tests.test_end_to_end import Pipeline, mosquitto_pub

pytestmark = pytest.mark.slow

COAL_T = 0.005  # t of coal per NDATA: within kiln-coal's rating over its 1 s interval
KWH_STEP = 4.0  # kWh the energy register moves per DDATA
DATA_MESSAGES = 6  # one of them, the fourth, after a lost seq number


def _with_sparkplug(group: str, node: str, host_id: str) -> object:
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
        tmp_path / "config",
        mosquitto,
        plant,
        _with_sparkplug(group, node, host_id),  # type: ignore[arg-type]
    )
    edge_command = [
        sys.executable, "-m", "tests.plant.edge_node", "--host", mosquitto.host,
        "--port", str(mosquitto.port), "--group", group, "--node", node, "--device", "meter-1",
        "--host-id", host_id, "--count", str(DATA_MESSAGES), "--skip-after", "3",
        "--coal", str(COAL_T), "--kwh-step", str(KWH_STEP),
    ]  # fmt: skip
    root = Path(__file__).resolve().parents[2]

    async def scenario() -> dict[str, object]:
        store = f"sqlite:///{tmp_path / 'store.sqlite'}"
        async with (
            Pipeline(settings, mosquitto, store, now_ms=wall_clock_ms) as pipeline,
            dead_letters(mosquitto, plant) as letters,
        ):
            agent = pipeline.agents[plant]
            async with asyncio.timeout(30):
                await agent.sparkplug_connected.wait()
            # Hostile input on the node's own topics, before the node is even born.
            spb = f"spBv1.0/{group}"
            mosquitto_pub(mosquitto, f"{spb}/NDATA/{node}", b"\xff\x00 not protobuf")
            mosquitto_pub(mosquitto, f"{spb}/DDATA/{node}/ghost", b"\x18\x05")  # seq 5
            edge = await asyncio.create_subprocess_exec(
                *edge_command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            try:
                # Coal: every NDATA but the one after the gap. Energy: intervals between
                # registers, the first only a baseline and the one after the gap refused.
                expected = (DATA_MESSAGES - 1) + (DATA_MESSAGES - 2)
                await eventually(
                    lambda: pipeline.platform.counters.stored >= expected,
                    "the edge node's readings stored",
                    deadline_s=90,
                )
                async with asyncio.timeout(60):
                    output = (await edge.communicate())[0].decode()
            finally:
                if edge.returncode is None:
                    edge.kill()
                    await edge.wait()
            await eventually(
                lambda: not agent.view()["sparkplug"]["online"],  # type: ignore[index]
                "the NDEATH taken",
            )
            await eventually(lambda: len(letters) >= 4, "the refusals dead-lettered")
            retained = await _retained(mosquitto, wire.state_topic(host_id))
            return {
                "edge": output,
                "rejected": dict(agent.counters.rejected),
                "letters": sorted(str(letter["reason"]) for letter in letters),
                "coal": pipeline.store.series(plant, meter="kiln-coal", field="value"),
                "coal_co2e": pipeline.store.series(plant, meter="kiln-coal", field="co2e_kg"),
                "energy": pipeline.store.series(plant, meter="grid-main", field="value"),
                "energy_co2e": pipeline.store.series(plant, meter="grid-main", field="co2e_kg"),
                "view": agent.view()["sparkplug"],
                "state": retained,
            }

    outcome = asyncio.run(scenario())
    edge = str(outcome["edge"])
    assert edge.count("births sent") == 2, edge  # the first births and the rebirth
    assert "rebirth requested" in edge
    assert outcome["rejected"] == {
        "malformed_protobuf": 1,
        "no_birth": 2,  # the ghost device, and the DDATA right after the gap
        "seq_gap": 1,
    }, edge
    assert outcome["letters"] == ["malformed_protobuf", "no_birth", "no_birth", "seq_gap"]
    coal = outcome["coal"]["value"].tolist()  # type: ignore[index]
    assert coal == [COAL_T] * (DATA_MESSAGES - 1)
    # Coal: IPCC 2006 NCV 25.8 GJ/t, CO2 94,600 kg/TJ, CH4 10, N2O 1.5, AR5 GWPs.
    energy_tj = COAL_T * 25.8e-3
    coal_co2e = outcome["coal_co2e"]["value"].tolist()  # type: ignore[index]
    assert coal_co2e == pytest.approx([energy_tj * (94_600 + 10 * 28 + 1.5 * 265)] * len(coal))
    energy = outcome["energy"]["value"].tolist()  # type: ignore[index]
    assert sum(energy) == pytest.approx(KWH_STEP * (DATA_MESSAGES - 1))  # register moved
    grid = co2e_kg_per_unit(settings, plant, "grid-main")
    assert outcome["energy_co2e"]["value"].tolist() == pytest.approx(  # type: ignore[index]
        [kwh * grid for kwh in energy]
    )
    view = outcome["view"]
    assert view["births"] == 2
    assert view["online"] is False
    assert outcome["state"] == {"online": True}  # the retained STATE, while the agent runs


async def _retained(broker: MosquittoServer, topic: str) -> dict[str, object]:
    import json

    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                state = json.loads(bytes(message.payload))  # type: ignore[arg-type,unused-ignore]
                return {"online": state["online"]}
    raise AssertionError(f"nothing retained on {topic}")
