"""Drive plant simulators on a shared clock and publish their meters over MQTT."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiomqtt

from carbonlink import wire
from carbonlink._clock import SimClock
from carbonlink._mqtt import BrokerAddress, make_client, next_backoff
from carbonlink.config import PlantConfig
from carbonlink.simulators._plant import PlantSimulator

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SimulationStats:
    published_messages: int = 0
    published_samples: int = 0


async def simulate(
    plants: Sequence[PlantConfig],
    broker: BrokerAddress,
    clock: SimClock,
    *,
    seed: int = 0,
    duration_ms: int | None = None,
    stats: SimulationStats | None = None,
) -> SimulationStats:
    """Publish every plant's meters until ``duration_ms`` of simulated time has passed."""
    stats = stats or SimulationStats()
    start = clock.now_ms()
    end = start + duration_ms if duration_ms is not None else None
    async with asyncio.TaskGroup() as tasks:
        for plant in plants:
            simulator = PlantSimulator(plant, seed, start)
            tasks.create_task(_run_plant(simulator, broker, clock, end, stats))
    return stats


async def _run_plant(
    simulator: PlantSimulator,
    broker: BrokerAddress,
    clock: SimClock,
    end_ms: int | None,
    stats: SimulationStats,
) -> None:
    plant = simulator.plant
    backoff = 0.0
    pending: list[tuple[str, bytes]] = []
    while True:
        try:
            async with make_client(broker, f"sim-{plant.id}", clean_session=False) as client:
                backoff = 0.0
                while True:
                    # Re-send what a lost connection interrupted before producing more.
                    while pending:
                        topic, payload = pending[0]
                        await client.publish(topic, payload, qos=1)
                        pending.pop(0)
                        stats.published_messages += 1
                    due_ms = simulator.next_due_ms()
                    if end_ms is not None and due_ms > end_ms:
                        return
                    await clock.sleep_until(due_ms)
                    for meter, sample in simulator.due_samples(due_ms):
                        payload = wire.encode_meter_message(
                            plant.id, meter.id, meter.unit, meter.reading.value, [sample]
                        )
                        pending.append((wire.meter_topic(plant.id, meter.id), payload))
                        stats.published_samples += 1
        except aiomqtt.MqttError as exc:
            backoff = next_backoff(backoff)
            log.warning("simulator %s: broker lost (%s); retry in %.1fs", plant.id, exc, backoff)
            await asyncio.sleep(backoff)
