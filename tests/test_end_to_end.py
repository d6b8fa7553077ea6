"""The first slice end to end, on a real Mosquitto and a real InfluxDB."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import httpx
import pytest

from carbonlink import wire
from carbonlink.agent import Agent
from carbonlink.config import Settings, load_config
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from tests.configs import write_config
from tests.servers import HOST, InfluxDBServer, MosquittoServer, free_port
from tests.waiting import async_wait_for, exited, wait_for

NOW_MS = 1_795_420_800_000  # the agents' clock in these tests: 2026-11-23T08:00:00Z
DEADLINE_S = 30.0
STARTUP_S = 90.0  # a service process imports pandas, scipy and FastAPI: slow on a busy machine
# Modules written beside this one import the name they knew: it is tests/waiting's waiter.
eventually = async_wait_for


def answer(url: str) -> dict[str, object]:
    """A service's JSON answer; raises httpx.TransportError until it listens."""
    body: dict[str, object] = httpx.get(url, timeout=5, trust_env=False).json()
    return body


def mosquitto_pub(broker: MosquittoServer, topic: str, message: str | bytes) -> None:
    data = message.encode() if isinstance(message, str) else message
    subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-s"],
        input=data,
        check=True,
        timeout=10,
    )


class Pipeline:
    """A platform and one agent per plant, in this process, on the test's servers."""

    def __init__(
        self,
        settings: Settings,
        broker: MosquittoServer,
        store_url: str,
        now_ms: Callable[[], int] = lambda: NOW_MS,
    ) -> None:
        address = parse_broker_url(broker.url)
        self.store = open_store(store_url)
        work = settings.path.parent.parent
        self.platform = Platform(
            Ingestor.from_settings(settings), self.store, address, settings.services.platform,
            spill_path=work / "spill.sqlite", now_ms=now_ms,
        )  # fmt: skip
        self.agents = {
            plant_id: Agent(
                plant,
                address,
                settings.services.agent,
                outbox_path=work / "outbox" / f"{plant_id}.sqlite",
                now_ms=now_ms,
            )
            for plant_id, plant in settings.plants.items()
        }
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Pipeline:
        self._tasks = [asyncio.create_task(self.platform.run())]
        self._tasks += [asyncio.create_task(a.run()) for a in self.agents.values()]
        async with asyncio.timeout(DEADLINE_S):
            await self.platform.connected.wait()
            for agent in self.agents.values():
                await agent.connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.platform.close()
        self.store.close()


@pytest.fixture
def settings(tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer) -> Settings:
    path = write_config(
        tmp_path / "config", plants={f"{topic_prefix}-cement": "cement-01"},
        broker_url=mosquitto_private.url, client_id=f"platform-{topic_prefix}",
    )  # fmt: skip
    return load_config(path)


def test_mosquitto_pub_reading_lands_in_influxdb_with_right_co2e(
    settings: Settings,
    mosquitto_private: MosquittoServer,
    influxdb: InfluxDBServer,
    influx_database: str,
) -> None:
    (plant,) = settings.plants
    # Exactly the example of docs/wire-format.md, with this test's plant id.
    message = (
        '{"v":1,"unit":"t","kind":"interval",'
        '"samples":[{"ts":"2026-11-23T08:01:00Z","value":0.38}]}'
    )

    async def scenario() -> None:
        async with Pipeline(settings, mosquitto_private, influxdb.store_url(influx_database)) as p:
            mosquitto_pub(mosquitto_private, f"carbonlink/v1/{plant}/meters/kiln-coal", message)
            await async_wait_for(
                lambda: p.platform.counters.stored == 1, "the reading to be stored"
            )

    asyncio.run(scenario())
    result = influxdb.query(influx_database, f"SELECT * FROM emissions WHERE plant = '{plant}'")[
        "results"
    ][0]["series"][0]
    row = dict(zip(result["columns"], result["values"][0], strict=True))
    energy_tj = 0.38 * 25.8e-3  # t x GJ/t -> TJ (IPCC 2006 Vol.2 Table 1.2 NCV)
    assert row["co2_kg"] == pytest.approx(energy_tj * 94_600)  # Table 1.4
    assert row["ch4_kg"] == pytest.approx(energy_tj * 10)  # Table 2.3, manufacturing
    assert row["n2o_kg"] == pytest.approx(energy_tj * 1.5)
    assert row["co2e_kg"] == pytest.approx(energy_tj * (94_600 + 10 * 28 + 1.5 * 265))  # AR5
    assert (row["meter"], row["scope"], row["category"]) == ("kiln-coal", "1", "1.A.2")
    assert row["factor_set"] == "ipcc2006-cn2023"
    assert row["time"] == 1_795_420_860_000
    activity = influxdb.query(influx_database, "SELECT value, unit FROM activity")["results"][0]
    assert activity["series"][0]["values"] == [[1_795_420_860_000, 0.38, "t"]]


def test_bad_messages_rejected_with_reasons_good_ones_kept(
    settings: Settings, mosquitto_private: MosquittoServer, tmp_path: Path
) -> None:
    (plant,) = settings.plants
    topic = wire.meter_topic(plant, "kiln-coal")
    ghost = wire.meter_topic(plant, "ghost")
    good = [
        {"ts": NOW_MS - 3 * 60_000, "value": 0.30},
        {"ts": NOW_MS - 2 * 60_000, "value": 0.31},
        {"ts": NOW_MS - 1 * 60_000, "value": 0.32},
    ]
    bad_messages: list[tuple[str, bytes, str]] = [
        (topic, b"{this is not json", "malformed_json"),
        (topic, b'{"v":1,"unit":"t","ts":1795420680000,"value":NaN}', "not_finite"),
        (topic, b'{"v":1,"unit":"t","ts":1795420680000,"value":-2}', "negative"),
        (topic, b'{"v":1,"unit":"kg","ts":1795420680000,"value":2}', "wrong_unit"),
        (ghost, b'{"v":1,"unit":"t","ts":1795420680000,"value":1}', "unknown_meter"),
        (topic, b'{"v":1,"unit":"t","ts":1795430000000,"value":0.3}', "clock_skew"),
    ]  # fmt: skip

    async def scenario() -> dict[str, object]:
        dead_letters: list[dict[str, object]] = []
        async with (
            Pipeline(settings, mosquitto_private, f"sqlite:///{tmp_path / 's.sqlite'}") as p,
            aiomqtt.Client(mosquitto_private.host, mosquitto_private.port) as watcher,
        ):
            await watcher.subscribe(wire.deadletter_topic(plant), qos=1)

            async def collect() -> None:
                async for message in watcher.messages:
                    dead_letters.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type,unused-ignore]

            collecting = asyncio.create_task(collect())
            mosquitto_pub(
                mosquitto_private, topic, json.dumps({"v": 1, "unit": "t", "samples": good[:1]})
            )
            for bad_topic, payload, _ in bad_messages:
                mosquitto_pub(mosquitto_private, bad_topic, payload)
            # One message mixing a duplicate, a good sample and an implausible one.
            mixed = {
                "v": 1,
                "unit": "t",
                "samples": [good[0], good[1], {"ts": NOW_MS, "value": 9.0}],
            }
            mosquitto_pub(mosquitto_private, topic, json.dumps(mixed))
            mosquitto_pub(
                mosquitto_private, topic, json.dumps({"v": 1, "unit": "t", "samples": good[2:]})
            )
            await async_wait_for(
                lambda: p.platform.counters.stored == 3, "three good readings stored"
            )
            await async_wait_for(
                lambda: len(dead_letters) >= len(bad_messages) + 2,
                "every rejection dead-lettered", detail=lambda: f"{dead_letters}",
            )  # fmt: skip
            collecting.cancel()
            agent = p.agents[plant]
            return {
                "rejected": dict(agent.counters.rejected),
                "series": p.store.series(plant, field="value")["value"].tolist(),
                "dead": sorted(str(d["reason"]) for d in dead_letters),
            }

    outcome = asyncio.run(scenario())
    expected = {reason: 1 for *_, reason in bad_messages} | {"duplicate": 1, "implausible": 1}
    assert outcome["rejected"] == expected
    assert outcome["series"] == [0.30, 0.31, 0.32]
    assert outcome["dead"] == sorted(expected)


def test_services_run_as_commands_and_stop_cleanly(
    tmp_path: Path,
    topic_prefix: str,
    mosquitto_private: MosquittoServer,
    influxdb: InfluxDBServer,
    influx_database: str,
) -> None:
    plant = f"{topic_prefix}-steel"
    config = write_config(
        tmp_path / "config", plants={plant: "steel-01"}, broker_url=mosquitto_private.url,
        client_id=f"platform-{topic_prefix}",
    )  # fmt: skip
    carbonlink = [sys.executable, "-m", "carbonlink"]
    common = ["--config", str(config), "--broker", mosquitto_private.url]
    platform_http, agent_http = f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"
    services = [
        subprocess.Popen(
            [*carbonlink, "platform", *common, "--store", influxdb.store_url(influx_database),
             "--http", platform_http]
        ),
        subprocess.Popen([*carbonlink, "agent", *common, "--plant", plant, "--http", agent_http]),
    ]  # fmt: skip
    running = exited(*services)
    try:
        # Both subscribed before the simulator publishes, as each one's HTTP answer says.
        wait_for(
            lambda: (answer(f"http://{platform_http}/api/v1/health").get("ingestion") or {})
            .get("connected"),  # type: ignore[union-attr]
            "the platform to subscribe", STARTUP_S,
            ignoring=(httpx.TransportError,), abort_if=running,
        )  # fmt: skip
        wait_for(
            lambda: answer(f"http://{agent_http}/view").get("connected"),
            "the agent to subscribe", STARTUP_S,
            ignoring=(httpx.TransportError,), abort_if=running,
        )  # fmt: skip
        simulated = subprocess.run(
            [*carbonlink, "simulate", *common, "--plants", plant, "--speed", "max",
             "--duration", "30m"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        # 3 meters x 30 samples; the counter meter's first sample only sets its baseline.
        assert "published 90 samples" in simulated.stdout
        expected = 89

        def counted() -> int:
            result = influxdb.query(influx_database, "SELECT count(value) FROM activity")
            series = result["results"][0].get("series")
            return int(series[0]["values"][0][1]) if series else 0

        wait_for(
            lambda: counted() >= expected, f"{expected} readings in InfluxDB", DEADLINE_S,
            abort_if=running, detail=lambda: f"counted {counted()}",
        )  # fmt: skip
        assert counted() == expected
    finally:
        for service in services:
            service.send_signal(signal.SIGINT)
        codes = [service.wait(timeout=15) for service in services]
    assert codes == [0, 0]
    # The plant's config says which factor set version its emissions count under.
    shown = subprocess.run(
        [*carbonlink, "query", "--config", str(config), "--store",
         influxdb.store_url(influx_database), "--plant", plant, "--meter", "reheat-gas",
         "--field", "co2e_kg", "--format", "csv"],
        capture_output=True, text=True, timeout=30, check=True, env=os.environ,
    )  # fmt: skip
    lines = shown.stdout.strip().splitlines()
    assert lines[0] == "time,plant,meter,co2e_kg,unit,factor_set,factor_version"
    assert len(lines) == 31
    assert all(float(line.split(",")[3]) > 0 for line in lines[1:])
    assert all(line.endswith(",kg CO2e,ipcc2006-cn2023,2.0.0") for line in lines[1:])
