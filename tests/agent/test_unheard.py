"""A telemetry batch nobody subscribes to (issue 18), on a real Mosquitto 2.0.

Before any platform has subscribed, the broker acknowledges a batch and drops it. Over
MQTT 5 its PUBACK says so ("no matching subscribers", 0x10): the agent keeps the batch in
its outbox and sends it again until a platform listens. MQTT 3.1.1 has no way to say it;
the second test pins down that limit (the platform's startup probe and the stack's start
order are the defence there, docs/platform.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiomqtt
import pytest
import yaml

from carbonlink import wire
from carbonlink.agent import Agent
from carbonlink.config import Settings, load_config
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from tests.configs import write_config
from tests.servers import MosquittoServer
from tests.test_end_to_end import NOW_MS, eventually

HOSTILE_METER_MESSAGES = (b"", b"\xff{", b'{"v":1,"unit":"kg","samples":[{"ts":1,"value":-1}]}')


def settings_for(tmp_path: Path, prefix: str, broker: MosquittoServer, version: str) -> Settings:
    path = write_config(
        tmp_path / "config", plants={f"{prefix}-cement": "cement-01"}, broker_url=broker.url,
        store=f"sqlite:///{tmp_path / 'store.sqlite'}", client_id=f"platform-{prefix}",
    )  # fmt: skip
    services = yaml.safe_load(path.read_text())
    services["agent"]["mqtt_version"] = version
    path.write_text(yaml.safe_dump(services))
    return load_config(path)


async def publish_meter(broker: MosquittoServer, plant: str, minutes: range) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for payload in HOSTILE_METER_MESSAGES:
            await client.publish(wire.meter_topic(plant, "kiln-coal"), payload, qos=1)
        samples = [{"ts": NOW_MS - m * 60_000, "value": 0.25} for m in minutes]
        body = json.dumps({"v": 1, "unit": "t", "samples": samples})
        await client.publish(wire.meter_topic(plant, "kiln-coal"), body, qos=1)


def make_agent(settings: Settings, tmp_path: Path) -> Agent:
    (plant,) = settings.plants.values()
    return Agent(
        plant, parse_broker_url(settings.services.broker.url), settings.services.agent,
        outbox_path=tmp_path / "outbox.sqlite", now_ms=lambda: NOW_MS,
    )  # fmt: skip


def test_mqtt5_agent_keeps_a_batch_nobody_subscribes_to_until_a_platform_does(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    settings = settings_for(tmp_path, topic_prefix, mosquitto_private, "5")
    (plant,) = settings.plants
    agent = make_agent(settings, tmp_path)
    store = open_store(settings.services.platform.store)
    platform = Platform(
        Ingestor.from_settings(settings), store, parse_broker_url(mosquitto_private.url),
        settings.services.platform, spill_path=tmp_path / "spill.sqlite", now_ms=lambda: NOW_MS,
    )  # fmt: skip

    async def scenario() -> None:
        tasks = [asyncio.create_task(agent.run())]
        try:
            async with asyncio.timeout(30):
                await agent.connected.wait()
            await publish_meter(mosquitto_private, plant, range(1, 4))
            # Taken by the broker, heard by nobody: counted, and still in the outbox.
            await eventually(lambda: agent.counters.unheard_batches >= 2, "two unheard sends")
            assert agent.outbox_depth == 3
            assert agent.counters.forwarded == 0
            tasks.append(asyncio.create_task(platform.run()))
            await eventually(lambda: platform.counters.stored == 3, "the kept readings stored")
            await eventually(lambda: agent.outbox_depth == 0, "the outbox to empty")
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    try:
        asyncio.run(scenario())
    finally:
        platform.close()
        store.close()
    assert agent.counters.forwarded == 3
    assert agent.counters.accepted == 3
    # Each hostile message refused with its reason; the canary's readings all landed.
    assert agent.counters.rejected["malformed_json"] == 2
    # The third has a wrong unit and its only sample a bad timestamp: one reading, so
    # one refusal, for the sample's own fault.
    assert agent.counters.rejected["bad_timestamp"] == 1
    assert agent.counters.rejected["wrong_unit"] == 0
    assert platform.counters.rejected.total() == 0
    print(f"unheard sends before the platform subscribed: {agent.counters.unheard_batches}")


@pytest.mark.parametrize("version", ["3.1.1"])
def test_mqtt311_cannot_tell_and_the_batch_leaves_the_outbox(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer, version: str
) -> None:
    """The limit, pinned: under 3.1.1 the broker acknowledges and drops the batch."""
    settings = settings_for(tmp_path, topic_prefix, mosquitto_private, version)
    (plant,) = settings.plants
    agent = make_agent(settings, tmp_path)

    async def scenario() -> None:
        task = asyncio.create_task(agent.run())
        try:
            async with asyncio.timeout(30):
                await agent.connected.wait()
            await publish_meter(mosquitto_private, plant, range(1, 4))
            await eventually(lambda: agent.counters.forwarded == 3, "the batch to leave")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert agent.outbox_depth == 0
    assert agent.counters.unheard_batches == 0
