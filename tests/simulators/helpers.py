"""Run simulators against a real broker and record what went on the wire."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

from carbonlink.config import PlantConfig, load_config
from carbonlink.mqtt.client import BrokerAddress, parse_broker_url
from tests.configs import write_config
from tests.waiting import async_wait_for

T = TypeVar("T")
DELIVERY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WireMessage:
    topic: str
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)


def plants_for(tmp_path: Path, mapping: dict[str, str], url: str) -> tuple[PlantConfig, ...]:
    config = load_config(write_config(tmp_path, plants=mapping, broker_url=url))
    return tuple(config.plants[p] for p in mapping)


async def record(
    url: str, topics: list[str], run: Callable[[BrokerAddress], Awaitable[T]]
) -> tuple[T, list[WireMessage]]:
    """Subscribe to ``topics``, run, and return what arrived (in arrival order).

    Published is not yet received. The simulators publish at QoS 1 and ``run`` returns
    once the broker has acknowledged all of it; a marker this client then publishes to
    itself is queued behind all of it, so once the marker is back, everything is in."""
    address = parse_broker_url(url)
    seen: list[WireMessage] = []
    marker_topic = f"carbonlink-test/marker/{uuid.uuid4().hex}"
    marker_back = asyncio.Event()
    async with aiomqtt.Client(address.host, address.port, identifier=None) as client:
        for topic in [*topics, marker_topic]:
            await client.subscribe(topic, qos=1)

        async def listen() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                if message.topic.matches(marker_topic):
                    marker_back.set()
                else:
                    seen.append(WireMessage(str(message.topic), message.payload))

        listener = asyncio.create_task(listen())
        try:
            result = await run(address)
            await client.publish(marker_topic, b"end", qos=1)
            await async_wait_for(
                marker_back.wait(), "the marker behind the simulators' messages",
                DELIVERY_TIMEOUT_S, detail=lambda: f"{len(seen)} messages so far",
            )  # fmt: skip
        finally:
            listener.cancel()
    return result, seen


def samples_of(messages: list[WireMessage], meter: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.topic.endswith(f"/meters/{meter}"):
            try:
                out.extend(message.json()["samples"])
            except ValueError:
                continue
    return out
