"""``sequence_gaps`` with two workers on a shared subscription (issue 18), on a real
Mosquitto: each worker sees only its share of an agent's batches, yet both report the
batches that never arrived anywhere, per agent, and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiomqtt

from carbonlink import wire
from carbonlink.config import load_config
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from tests.configs import write_config
from tests.servers import MosquittoServer
from tests.test_end_to_end import NOW_MS, eventually

MINUTE = 60_000
SENT = [s for s in range(1, 31) if s not in (7, 13, 14, 22)]  # 4 batches never published


def test_two_workers_count_the_same_true_gaps_per_agent(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    plant = f"{topic_prefix}-cement"
    path = write_config(
        tmp_path / "config", plants={plant: "cement-01"}, broker_url=mosquitto_private.url,
        store=f"sqlite:///{tmp_path / 'store.sqlite'}", client_id=f"platform-{topic_prefix}",
    )  # fmt: skip
    settings = load_config(path)
    address = parse_broker_url(mosquitto_private.url)
    stores = [open_store(settings.services.platform.store) for _ in range(2)]
    workers = [
        Platform(
            Ingestor.from_settings(settings),
            store,
            address,
            settings.services.platform,
            spill_path=tmp_path / f"spill-{n}.sqlite",
            shared_group=topic_prefix,
            client_id=f"{topic_prefix}-worker-{n}",
            now_ms=lambda: NOW_MS,
        )
        for n, store in enumerate(stores)
    ]
    agent = wire.agent_id(plant)

    async def scenario() -> None:
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            async with asyncio.timeout(60):
                for worker in workers:
                    await worker.connected.wait()
            async with aiomqtt.Client(address.host, address.port) as client:
                # Hostile first: a forged huge number and garbage, then the batches.
                await client.publish(wire.telemetry_topic(plant), b"\x00{", qos=1)
                for seq in SENT:
                    reading = wire.Reading("kiln-coal", NOW_MS - seq * MINUTE, 0.25, "t", MINUTE)
                    batch = wire.TelemetryBatch(plant, agent, seq, NOW_MS, (reading,))
                    await client.publish(
                        wire.telemetry_topic(plant), wire.encode_telemetry(batch), qos=1
                    )
            await eventually(
                lambda: sum(w.counters.stored for w in workers) == len(SENT), "every batch"
            )
            await eventually(
                lambda: all(w.counters.sequence_gaps_by_agent == {agent: 4} for w in workers),
                "both workers to count the 4 missing batches",
            )
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for worker, store in zip(workers, stores, strict=True):
                worker.close()
                store.close()

    asyncio.run(scenario())
    shares = [w.counters.stored for w in workers]
    print(f"worker shares {shares}; gaps per worker {[w.counters.sequence_gaps for w in workers]}")
    assert min(shares) > 0  # both took part, so each saw holes that are the other's share
    assert [w.health()["sequence_gaps"] for w in workers] == [4, 4]
    assert sum(w.counters.rejected["malformed_json"] for w in workers) == 1
