"""What the plant-tool tests share: a plant file edited as a plant engineer would, the
dead letters a plant gets, and the emission factor a stored reading must carry."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from carbonlink import wire
from carbonlink.config import Settings, load_config
from carbonlink.emissions import FactorLibrary
from tests.configs import write_config
from tests.servers import MosquittoServer

PlantFile = dict[str, Any]


def plant_settings(
    directory: Path, broker: MosquittoServer, plant: str, edit: Callable[[PlantFile], None]
) -> Settings:
    """The cement line's plant file under id ``plant``, changed by ``edit``, loaded as
    every service loads it (so an invalid edit fails here with file, key and problem)."""
    path = write_config(
        directory, plants={plant: "cement-01"}, broker_url=broker.url,
        client_id=f"platform-{plant}",
    )  # fmt: skip
    plant_file = directory / "plants" / f"{plant}.yaml"
    data = yaml.safe_load(plant_file.read_text())
    edit(data)
    plant_file.write_text(yaml.safe_dump(data))
    return load_config(path)


def meter(plant: PlantFile, meter_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(m for m in plant["meters"] if m["id"] == meter_id)
    return found


def co2e_kg_per_unit(settings: Settings, plant: str, meter_id: str) -> float:
    """The factor the platform must apply to one unit of this meter, resolved from the
    plant's factor set on its own (the platform does not hand it to the test)."""
    config = settings.plant(plant)
    found = config.meter(meter_id)
    assert found is not None
    assert found.activity is not None
    factor = settings.factor_set(plant).resolve(
        FactorLibrary.builtin(), found.activity, found.unit, region=config.grid_region
    )
    return factor.co2e_kg_per_unit


@contextlib.asynccontextmanager
async def collected(broker: MosquittoServer, topic: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every JSON message on ``topic`` (retained ones too) while the block runs."""
    received: list[dict[str, Any]] = []
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                received.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type,unused-ignore]

        task = asyncio.create_task(collect())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def dead_letters(
    broker: MosquittoServer, plant: str
) -> contextlib.AbstractAsyncContextManager[list[dict[str, Any]]]:
    """Every dead letter the plant's agent publishes while the block runs."""
    return collected(broker, wire.deadletter_topic(plant))
