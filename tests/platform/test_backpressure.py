"""A platform whose store is slower than its intake holds a bounded amount in memory.

The intake stops reading the socket at ``queue_max_readings``; the broker keeps the
rest. Nothing is lost and nothing is acknowledged before it is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import aiomqtt
import pytest

from carbonlink import wire
from carbonlink.config import MqttVersion, load_config
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from carbonlink.storage import Store, StoredBatch, StoredReading
from tests.configs import write_config
from tests.servers import MosquittoServer
from tests.test_end_to_end import NOW_MS
from tests.waiting import async_wait_for

MINUTE = 60_000
MESSAGES, PER_MESSAGE = 60, 50
WRITE_DELAY_S = 0.05


class SlowStore:
    """A real SQLite store that takes its time over every write."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.largest_write = 0

    def write(self, readings: Sequence[StoredReading]) -> None:
        self.write_batch(StoredBatch.from_readings(readings))

    def write_batch(self, batch: StoredBatch) -> None:
        time.sleep(WRITE_DELAY_S)  # a slow store is what is tested: not a wait on anything
        self.largest_write = max(self.largest_write, len(batch))
        self.inner.write_batch(batch)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("version", list(MqttVersion), ids=lambda v: f"mqtt{v}")
def test_intake_stays_bounded_while_the_store_lags(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer, version: MqttVersion
) -> None:
    plant = f"{topic_prefix}-c"
    config_path = write_config(
        tmp_path / "config", plants={plant: "cement-01"}, broker_url=mosquitto_private.url,
        client_id=f"platform-{topic_prefix}",
    )  # fmt: skip
    settings = load_config(config_path)
    config = settings.services.platform.model_copy(
        update={"queue_max_readings": 200, "write_batch_max": 100, "mqtt_version": version}
    )
    store = SlowStore(open_store(f"sqlite:///{tmp_path / 'store.sqlite'}"))
    platform = Platform(
        Ingestor.from_settings(settings), store, parse_broker_url(mosquitto_private.url),  # type: ignore[arg-type]
        config, spill_path=tmp_path / "spill.sqlite",
    )  # fmt: skip
    peak_intake = 0

    async def scenario() -> None:
        nonlocal peak_intake
        task = asyncio.create_task(platform.run())
        try:
            await asyncio.wait_for(platform.connected.wait(), 20)
            async with aiomqtt.Client(mosquitto_private.host, mosquitto_private.port) as client:
                for n in range(MESSAGES):
                    readings = tuple(
                        wire.Reading("kiln-coal", NOW_MS - (n * PER_MESSAGE + k) * MINUTE, 0.3,
                                     "t", MINUTE)
                        for k in range(PER_MESSAGE)
                    )  # fmt: skip
                    batch = wire.TelemetryBatch(plant, f"agent-{plant}", n + 1, NOW_MS, readings)
                    await client.publish(
                        wire.telemetry_topic(plant), wire.encode_telemetry(batch), qos=1
                    )

            def done() -> bool:
                nonlocal peak_intake
                peak_intake = max(peak_intake, platform._intake_readings)
                return platform.counters.stored == MESSAGES * PER_MESSAGE

            await async_wait_for(done, "everything stored")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            platform.close()

    asyncio.run(scenario())
    try:
        assert store.count_readings(plant) == MESSAGES * PER_MESSAGE
    finally:
        store.inner.close()
    # Reading stops once the bound is reached; one message may land on top of it.
    assert peak_intake <= config.queue_max_readings + PER_MESSAGE
    assert store.largest_write <= config.write_batch_max
