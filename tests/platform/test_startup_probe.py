"""The platform's startup probe (issue 18): it runs only once its telemetry subscription,
shared group included, has delivered something, and refuses to run on a broker that
accepts the subscription and delivers nothing.

On the brokers themselves, started privately: Mosquitto 2.0 (MQTT 5 and 3.1.1), and the
MQTT listeners of NATS 2.9 and RabbitMQ 3.10 (Debian 12), which accept
``$share/GROUP/...`` and deliver nothing on it. The refusal is shown through the real
``carbonlink platform`` command: exit code 2, one line naming the broker and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import aiomqtt
import pytest
import yaml

from carbonlink import wire
from carbonlink.config import Settings, load_config
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from carbonlink.storage import Store
from tests.brokers import NatsServer, RabbitMQServer
from tests.configs import write_config
from tests.servers import MosquittoServer
from tests.test_end_to_end import NOW_MS, eventually

MINUTE: Final = 60_000
# Short, so that a refusal is quick; generous enough for a loaded 2-core box, where a
# probe that does come back takes milliseconds.
PROBE_S: Final = 4.0
CLI_TIMEOUT_S: Final = 120.0
HOSTILE_PROBES: Final = (b"", b"\xff\xfe not json", b'{"v":1,"probe":"x"}' * 500)

_SERVERS: Final = {"nats": NatsServer, "rabbitmq": RabbitMQServer}


@pytest.fixture(scope="module", params=sorted(_SERVERS))
def no_shared_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NatsServer | RabbitMQServer]:
    """NATS or RabbitMQ with an MQTT listener, one of each per module (RabbitMQ takes
    20-30 s to start here)."""
    kind: str = request.param
    with _SERVERS[kind](tmp_path_factory.mktemp(kind)) as server:
        yield server


def settings_for(tmp_path: Path, prefix: str, broker_url: str, mqtt_version: str) -> Settings:
    path = write_config(
        tmp_path / "config",
        plants={f"{prefix}-cement": "cement-01"},
        broker_url=broker_url,
        store=f"sqlite:///{tmp_path / 'store.sqlite'}",
        client_id=f"platform-{prefix}",
    )
    services = yaml.safe_load(path.read_text())
    services["platform"]["mqtt_version"] = mqtt_version
    services["platform"]["startup_probe_s"] = PROBE_S
    services["platform"]["audit_topics"] = False
    path.write_text(yaml.safe_dump(services))
    return load_config(path)


def canary(plant: str, seq: int) -> bytes:
    reading = wire.Reading("kiln-coal", NOW_MS - seq * MINUTE, 0.25, "t", MINUTE)
    return wire.encode_telemetry(
        wire.TelemetryBatch(plant, wire.agent_id(plant), seq, NOW_MS, (reading,))
    )


@contextlib.asynccontextmanager
async def running(
    settings: Settings, tmp_path: Path, workers: int, group: str | None
) -> AsyncIterator[list[Platform]]:
    store = open_store(settings.services.platform.store)
    platforms = [platform_for(settings, tmp_path, store, n, group) for n in range(workers)]
    tasks = [asyncio.create_task(p.run()) for p in platforms]
    try:
        yield platforms
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for platform in platforms:
            platform.close()
        store.close()


def platform_for(
    settings: Settings, tmp_path: Path, store: Store, n: int, group: str | None
) -> Platform:
    return Platform(
        Ingestor.from_settings(settings), store,
        parse_broker_url(settings.services.broker.url), settings.services.platform,
        spill_path=tmp_path / f"spill-{n}.sqlite", shared_group=group,
        client_id=f"{settings.services.platform.client_id}-{n}", now_ms=lambda: NOW_MS,
    )  # fmt: skip


async def probe_then_canaries(
    settings: Settings, tmp_path: Path, *, workers: int, group: str | None, mqtt5: bool
) -> list[Platform]:
    """Start the workers; once all are connected (probe passed), publish hostile messages
    on the probe topic and then one canary batch per worker, which must all be stored."""
    (plant,) = settings.plants
    address = parse_broker_url(settings.services.broker.url)
    protocol = aiomqtt.ProtocolVersion.V5 if mqtt5 else aiomqtt.ProtocolVersion.V311
    async with running(settings, tmp_path, workers, group) as platforms:
        async with asyncio.timeout(60):
            for platform in platforms:
                await platform.connected.wait()
        async with aiomqtt.Client(address.host, address.port, protocol=protocol) as client:
            for payload in HOSTILE_PROBES:
                await client.publish(wire.PROBE_TOPIC, payload, qos=1)
            for seq in range(1, 2 * workers + 1):
                await client.publish(wire.telemetry_topic(plant), canary(plant, seq), qos=1)
        await eventually(
            lambda: sum(p.counters.stored for p in platforms) == 2 * workers, "the canaries"
        )
        return platforms


@pytest.mark.parametrize("mqtt_version", ["5", "3.1.1"])
def test_two_workers_pass_the_probe_on_mosquitto_and_ignore_hostile_probes(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer, mqtt_version: str
) -> None:
    settings = settings_for(tmp_path, topic_prefix, mosquitto_private.url, mqtt_version)
    platforms = asyncio.run(
        probe_then_canaries(
            settings, tmp_path, workers=2, group=topic_prefix, mqtt5=mqtt_version == "5"
        )
    )
    for platform in platforms:
        counters = platform.counters
        # Probes, hostile ones included, are neither telemetry nor refusals.
        assert counters.rejected.total() == 0, counters.rejected
        assert counters.messages == counters.stored  # the canaries, one reading each
    assert sum(p.counters.stored for p in platforms) == 4
    store = open_store(settings.services.platform.store)
    try:
        assert store.count_readings() == 4
    finally:
        store.close()


def test_probe_passes_without_a_group_on_nats_and_rabbitmq(
    tmp_path: Path, topic_prefix: str, no_shared_broker: NatsServer | RabbitMQServer
) -> None:
    """Those brokers do deliver a plain subscription: the probe must not refuse them."""
    settings = settings_for(tmp_path, topic_prefix, no_shared_broker.url, "3.1.1")
    (platform,) = asyncio.run(
        probe_then_canaries(settings, tmp_path, workers=1, group=None, mqtt5=False)
    )
    assert platform.counters.rejected.total() == 0
    assert platform.counters.stored == 2


def test_shared_group_on_nats_and_rabbitmq_refuses_to_start(
    tmp_path: Path, topic_prefix: str, no_shared_broker: NatsServer | RabbitMQServer
) -> None:
    """The real command: non-zero exit, the broker and the reason on stderr, and nothing
    acknowledged then lost behind its back."""
    settings = settings_for(tmp_path, topic_prefix, no_shared_broker.url, "3.1.1")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "carbonlink", "platform", "--config", str(settings.path),
         "--shared-group", topic_prefix, "--worker", "1"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    print(f"{no_shared_broker.name}: refused in {elapsed:.1f}s: {result.stderr.strip()}")
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"carbonlink: error: broker {no_shared_broker.url}: ")
    assert f"$share/{topic_prefix}/{wire.TELEMETRY_SUBSCRIPTION}" in error
    assert f"came back through it within {PROBE_S:g}s" in error
    assert "Traceback" not in result.stderr
