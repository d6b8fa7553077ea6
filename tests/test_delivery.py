"""Delivery guarantees on a real Mosquitto and InfluxDB: every reading stored exactly once.

Each test publishes a known set of readings, disturbs the pipeline (broker restart,
store outage, re-delivery, split load) and ends with an exact count per plant and meter.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Final

import aiomqtt
import pytest

from carbonlink import wire
from carbonlink.config import Settings, load_config
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from tests.configs import write_config
from tests.servers import InfluxDBServer, MosquittoServer
from tests.test_end_to_end import NOW_MS, Pipeline
from tests.waiting import async_wait_for

MINUTE: Final = 60_000
SAMPLES_PER_MESSAGE: Final = 10
COAL_KG_CO2E_PER_T: Final = 25.8e-3 * (94_600 + 10 * 28 + 1.5 * 265)  # IPCC 2006, AR5
STORE_OUTAGE_S: Final = 30.0


def coal_values(count: int) -> list[tuple[int, float]]:
    """(ts, t of coal) pairs, one per minute back from the agents' clock, all distinct."""
    return [(NOW_MS - (count - k) * MINUTE, round(0.2 + (k % 17) * 0.01, 2)) for k in range(count)]


async def publish_readings(
    broker: MosquittoServer, plant: str, values: list[tuple[int, float]]
) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for start in range(0, len(values), SAMPLES_PER_MESSAGE):
            chunk = values[start : start + SAMPLES_PER_MESSAGE]
            samples = [{"ts": ts, "value": value} for ts, value in chunk]
            body = {"v": 1, "unit": "t", "samples": samples}
            await client.publish(wire.meter_topic(plant, "kiln-coal"), json.dumps(body), qos=1)


def settings_for(tmp_path: Path, prefix: str, broker: MosquittoServer, plants: int = 1) -> Settings:
    path = write_config(
        tmp_path / "config",
        plants={f"{prefix}-c{n}": "cement-01" for n in range(plants)},
        broker_url=broker.url,
        client_id=f"platform-{prefix}",
    )
    return load_config(path)


def assert_exactly(store_url: str, plant: str, values: list[tuple[int, float]]) -> None:
    store = open_store(store_url)
    try:
        series = store.series(plant, field="value", meter="kiln-coal")
        emissions = store.series(plant, field="co2e_kg", meter="kiln-coal")
    finally:
        store.close()
    assert len(series) == len(values), f"{plant}: stored {len(series)} of {len(values)}"
    assert sorted(series["value"]) == sorted(v for _, v in values)
    assert emissions["value"].sum() == pytest.approx(sum(v for _, v in values) * COAL_KG_CO2E_PER_T)
    print(f"{plant}: published {len(values)}, stored {len(series)}, lost 0, doubled 0")


def test_n_published_n_stored_with_hand_computed_co2e(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer,
    influxdb: InfluxDBServer, influx_database: str,
) -> None:  # fmt: skip
    settings = settings_for(tmp_path, topic_prefix, mosquitto_private)
    (plant,) = settings.plants
    values = coal_values(1_000)
    url = influxdb.store_url(influx_database)

    async def scenario() -> None:
        async with Pipeline(settings, mosquitto_private, url) as p:
            await publish_readings(mosquitto_private, plant, values)
            await async_wait_for(lambda: p.platform.counters.stored == len(values), "all stored")

    asyncio.run(scenario())
    assert_exactly(url, plant, values)


def test_broker_restart_mid_stream_loses_nothing(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    settings = settings_for(tmp_path, topic_prefix, mosquitto_private)
    (plant,) = settings.plants
    values = coal_values(2_000)
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"

    async def scenario() -> None:
        async with Pipeline(settings, mosquitto_private, url) as p:
            await publish_readings(mosquitto_private, plant, values[:1_000])
            # Stop while readings are still moving through the agent and the platform.
            mosquitto_private.restart()  # from the main thread: see servers._die_with_parent
            await async_wait_for(p.platform.connected.wait(), "platform reconnected")
            await async_wait_for(p.agents[plant].connected.wait(), "agent reconnected")
            await publish_readings(mosquitto_private, plant, values[1_000:])
            await async_wait_for(
                lambda: p.store.count_readings(plant) == len(values), "all stored after restart"
            )
            # Emptied once the agent resumes after its PUBACK: wait rather than race it.
            await async_wait_for(lambda: p.agents[plant].outbox_depth == 0, "the outbox emptied")

    asyncio.run(scenario())
    assert_exactly(url, plant, values)


@pytest.mark.slow
def test_influxdb_down_for_30_s_loses_nothing(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer,
    influxdb_private: InfluxDBServer,
) -> None:  # fmt: skip
    settings = settings_for(tmp_path, topic_prefix, mosquitto_private)
    (plant,) = settings.plants
    values = coal_values(1_500)
    url = influxdb_private.store_url("outage")
    spilled_at_peak = 0

    async def scenario() -> None:
        nonlocal spilled_at_peak
        async with Pipeline(settings, mosquitto_private, url) as p:
            await publish_readings(mosquitto_private, plant, values[:500])
            await async_wait_for(lambda: p.platform.counters.stored == 500, "first third stored")
            influxdb_private.stop()
            loop = asyncio.get_running_loop()
            back_at = loop.time() + STORE_OUTAGE_S
            await publish_readings(mosquitto_private, plant, values[500:1_000])
            await async_wait_for(lambda: p.platform.counters.spilled == 500, "second third spilled")
            spilled_at_peak = p.platform.counters.spilled
            # The outage's length is what is tested: time passing, not a wait for an event.
            await asyncio.sleep(max(0.0, back_at - loop.time()))
            influxdb_private.start()
            await publish_readings(mosquitto_private, plant, values[1_000:])
            # The drainer counts a write as stored before it empties the spill: wait for both.
            await async_wait_for(
                lambda: (
                    p.platform.counters.stored == len(values) and p.platform.counters.spilled == 0
                ),
                "all stored and the spill drained",
            )

    asyncio.run(scenario())
    assert spilled_at_peak == 500
    assert_exactly(url, plant, values)


def test_same_batch_delivered_twice_is_stored_once(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    settings = settings_for(tmp_path, topic_prefix, mosquitto_private)
    (plant,) = settings.plants
    values = coal_values(50)
    readings = tuple(wire.Reading("kiln-coal", ts, v, "t", MINUTE) for ts, v in values)
    batch = wire.encode_telemetry(wire.TelemetryBatch(plant, f"agent-{plant}", 1, NOW_MS, readings))
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"

    async def scenario() -> None:
        async with (
            Pipeline(settings, mosquitto_private, url) as p,
            aiomqtt.Client(mosquitto_private.host, mosquitto_private.port) as client,
        ):
            for _ in range(2):  # as a broker does after a lost PUBACK
                await client.publish(wire.telemetry_topic(plant), batch, qos=1)
            # The second copy is recognised as the same readings: counted, not stored again.
            counters = p.platform.counters
            await async_wait_for(
                lambda: (counters.stored, counters.repeats) == (50, 50), "both copies handled"
            )

    asyncio.run(scenario())
    assert_exactly(url, plant, values)


def test_two_workers_on_a_shared_subscription_split_the_load(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer,
    influxdb: InfluxDBServer, influx_database: str,
) -> None:  # fmt: skip
    settings = settings_for(tmp_path, topic_prefix, mosquitto_private, plants=4)
    url = influxdb.store_url(influx_database)
    address = parse_broker_url(mosquitto_private.url)
    batches_per_plant, per_batch = 25, 20

    async def scenario() -> list[int]:
        stores = [open_store(url) for _ in range(2)]
        workers = [
            Platform(
                Ingestor.from_settings(settings),
                store,
                address,
                settings.services.platform,
                spill_path=tmp_path / f"spill-{n}.sqlite",
                shared_group="carbonlink",
                client_id=f"{topic_prefix}-worker-{n}",
            )
            for n, store in enumerate(stores)
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            for worker in workers:
                await asyncio.wait_for(worker.connected.wait(), 20)
            async with aiomqtt.Client(address.host, address.port) as client:
                for plant in settings.plants:
                    for b in range(batches_per_plant):
                        readings = tuple(
                            wire.Reading(
                                "kiln-coal",
                                NOW_MS - (b * per_batch + k) * MINUTE,
                                0.25,
                                "t",
                                MINUTE,
                            )
                            for k in range(per_batch)
                        )
                        batch = wire.TelemetryBatch(
                            plant, f"agent-{plant}", b + 1, NOW_MS, readings
                        )
                        await client.publish(
                            wire.telemetry_topic(plant), wire.encode_telemetry(batch), qos=1
                        )
            total = len(settings.plants) * batches_per_plant * per_batch
            await async_wait_for(
                lambda: sum(w.counters.stored for w in workers) >= total, "all stored"
            )
            return [w.counters.stored for w in workers]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for worker, store in zip(workers, stores, strict=True):
                worker.close()
                store.close()

    per_worker = asyncio.run(scenario())
    total = len(settings.plants) * batches_per_plant * per_batch
    print(f"shared subscription: worker split {per_worker}, total {total}")
    assert sum(per_worker) == total  # nothing handled twice
    assert min(per_worker) > 0  # both took part
    store = open_store(url)
    try:
        assert store.count_readings() == total  # nothing lost
    finally:
        store.close()


def test_agent_restart_keeps_counter_baseline_and_outbox(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    """A restarted agent resumes its counters from disk: no interval lost at the restart."""
    settings = settings_for(tmp_path, topic_prefix, mosquitto_private)
    (plant,) = settings.plants
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    topic = wire.meter_topic(plant, "grid-main")

    def register(minute: int) -> bytes:
        body = {"v": 1, "unit": "kWh", "kind": "counter", "ts": NOW_MS - (10 - minute) * MINUTE,
                "value": 1000.0 + 400.0 * minute}  # fmt: skip
        return json.dumps(body).encode()

    async def run_for(minutes: range) -> None:
        async with (
            Pipeline(settings, mosquitto_private, url) as p,
            aiomqtt.Client(mosquitto_private.host, mosquitto_private.port) as client,
        ):
            before = p.store.count_readings(plant)
            for minute in minutes:
                await client.publish(topic, register(minute), qos=1)
            expected = before + len(minutes) - (1 if minutes.start == 0 else 0)
            await async_wait_for(
                lambda: p.store.count_readings(plant) == expected, "intervals stored"
            )

    asyncio.run(run_for(range(4)))  # baseline + 3 intervals
    asyncio.run(run_for(range(4, 7)))  # a new agent process: 3 more, none lost at the seam
    store = open_store(url)
    try:
        values = store.series(plant, field="value", meter="grid-main")["value"].tolist()
    finally:
        store.close()
    assert values == [400.0] * 6
