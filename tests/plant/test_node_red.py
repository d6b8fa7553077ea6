"""A Node-RED flow (node-red 4 from npm, headless) publishes meter readings through a
real Mosquitto into stored, correctly factored emissions: the recipe of
docs/wire-format.md, "Node-RED", run as a plant engineer would run it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carbonlink import wire
from carbonlink.core.clock import wall_clock_ms
from tests.nodered import NodeRedServer
from tests.plant.conftest import (
    PlantFile,
    co2e_kg_per_unit,
    dead_letters,
    meter,
    plant_settings,
)
from tests.servers import MosquittoServer, ServerNotInstalledError
from tests.test_end_to_end import Pipeline, mosquitto_pub
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow

PLANT = f"t-{uuid.uuid4().hex[:10]}-nodered"
COAL_T = 0.006  # what the flow's inject node sends, bare, every 2 s: 1 s of kiln coal
KWH_STEP = 5  # what the flow's function node adds to its register every 2 s


def flows(broker: MosquittoServer, plant: str) -> list[dict[str, Any]]:
    """The flow of docs/wire-format.md: inject -> mqtt out, a bare number and an
    envelope built by a function node."""
    topic = f"carbonlink/v1/{plant}/meters/{{}}".format
    register = (
        'const r = (context.get("r") || 1000) + ' + str(KWH_STEP) + '; context.set("r", r);\n'
        'msg.payload = {v: 1, unit: "kWh", kind: "counter", ts: Date.now(), value: r};\n'
        "return msg;"
    )
    every = {"repeat": "2", "crontab": "", "once": True, "onceDelay": "0.1", "topic": ""}
    return [
        {"id": "tab", "type": "tab", "label": "carbonlink"},
        {"id": "broker", "type": "mqtt-broker", "name": "plant broker", "broker": broker.host,
         "port": str(broker.port), "clientid": "", "autoConnect": True, "usetls": False,
         "protocolVersion": "4", "keepalive": "60", "cleansession": True},
        {"id": "coal", "type": "inject", "z": "tab", "name": "kiln coal, t",
         "props": [{"p": "payload"}], "payload": str(COAL_T), "payloadType": "num", **every,
         "wires": [["coal-out"]]},
        {"id": "coal-out", "type": "mqtt out", "z": "tab", "topic": topic("kiln-coal"),
         "qos": "1", "retain": "false", "broker": "broker", "wires": []},
        {"id": "tick", "type": "inject", "z": "tab", "name": "register tick",
         "props": [{"p": "payload"}], "payload": "", "payloadType": "date", **every,
         "wires": [["envelope"]]},
        {"id": "envelope", "type": "function", "z": "tab", "name": "kWh register",
         "func": register, "outputs": 1, "wires": [["grid-out"]]},
        {"id": "grid-out", "type": "mqtt out", "z": "tab", "topic": topic("grid-main"),
         "qos": "1", "retain": "false", "broker": "broker", "wires": []},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def node_red(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoServer
) -> Iterator[NodeRedServer]:
    """One Node-RED for the module (it takes seconds to start), running :func:`flows`."""
    server = NodeRedServer(tmp_path_factory.mktemp("node-red"), flows(mosquitto, PLANT))
    try:
        server.start()
    except ServerNotInstalledError as exc:
        pytest.skip(f"Node-RED unavailable: {exc}")
    try:
        yield server
    finally:
        server.stop()


def _bare_coal(plant: PlantFile) -> None:
    meter(plant, "kiln-coal").update(sample_period_s=1, payload={"format": "bare"})


def test_node_red_flow_readings_land_as_emissions(
    tmp_path: Path, mosquitto: MosquittoServer, node_red: NodeRedServer
) -> None:
    settings = plant_settings(tmp_path / "config", mosquitto, PLANT, _bare_coal)
    coal_topic = wire.meter_topic(PLANT, "kiln-coal")

    async def scenario() -> dict[str, object]:
        store = f"sqlite:///{tmp_path / 'store.sqlite'}"
        async with (
            Pipeline(settings, mosquitto, store, now_ms=wall_clock_ms) as pipeline,
            dead_letters(mosquitto, PLANT) as letters,
        ):
            # A flow sending text where a number belongs, published beside Node-RED's:
            # refused, and the flow's next readings (the canaries) still land.
            mosquitto_pub(mosquitto, coal_topic, "msg.payload")
            stored = pipeline.platform.counters

            def coal_and_intervals() -> bool:
                counts = pipeline.store.series(PLANT, field="value")["meter"].value_counts()
                return counts.get("kiln-coal", 0) >= 3 and counts.get("grid-main", 0) >= 2

            await async_wait_for(
                lambda: stored.stored >= 5, "Node-RED's readings stored", timeout_s=90
            )
            await async_wait_for(coal_and_intervals, "3 coal readings and 2 kWh intervals")
            await async_wait_for(lambda: len(letters) == 1, "the refusal dead-lettered")
            return {
                "coal": pipeline.store.series(PLANT, meter="kiln-coal", field="value"),
                "coal_co2e": pipeline.store.series(PLANT, meter="kiln-coal", field="co2e_kg"),
                "grid": pipeline.store.series(PLANT, meter="grid-main", field="value"),
                "grid_co2e": pipeline.store.series(PLANT, meter="grid-main", field="co2e_kg"),
                "rejected": dict(pipeline.agents[PLANT].counters.rejected),
                "letters": [(letter["reason"], letter["payload"]) for letter in letters],
            }

    outcome = asyncio.run(scenario())
    coal = outcome["coal"]["value"].tolist()  # type: ignore[index]
    assert len(coal) >= 3
    assert set(coal) == {COAL_T}
    # IPCC 2006: NCV 25.8 GJ/t; CO2 94,600, CH4 10, N2O 1.5 kg/TJ; AR5 GWPs 28 and 265.
    per_t = 25.8e-3 * (94_600 + 10 * 28 + 1.5 * 265)
    assert outcome["coal_co2e"]["value"].tolist() == pytest.approx([COAL_T * per_t] * len(coal))  # type: ignore[index]
    grid = outcome["grid"]["value"].tolist()  # type: ignore[index]
    assert set(grid) == {float(KWH_STEP)}  # one register step per interval
    kwh = co2e_kg_per_unit(settings, PLANT, "grid-main")
    assert outcome["grid_co2e"]["value"].tolist() == pytest.approx([g * kwh for g in grid])  # type: ignore[index]
    assert outcome["rejected"] == {"malformed_json": 1}
    assert outcome["letters"] == [("malformed_json", "msg.payload")]
    assert "Connected to broker" in node_red.output_path.read_text()
