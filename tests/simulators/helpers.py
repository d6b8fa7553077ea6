"""Run simulators against a real broker and record what went on the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

from carbonlink.config import PlantConfig, load_config
from carbonlink.mqtt.client import BrokerAddress, parse_broker_url
from tests.configs import write_config

T = TypeVar("T")
DRAIN_QUIET_S = 0.5  # no message for this long: the broker has delivered all
DRAIN_MAX_S = 20.0


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
    """Subscribe to ``topics``, run, and return what arrived (in arrival order)."""
    address = parse_broker_url(url)
    seen: list[WireMessage] = []
    async with aiomqtt.Client(address.host, address.port, identifier=None) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)

        async def listen() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seen.append(WireMessage(str(message.topic), message.payload))

        listener = asyncio.create_task(listen())
        try:
            result = await run(address)
            # Published is not yet received: wait until the stream has gone quiet.
            deadline = asyncio.get_running_loop().time() + DRAIN_MAX_S
            while asyncio.get_running_loop().time() < deadline:
                count = len(seen)
                await asyncio.sleep(DRAIN_QUIET_S)
                if len(seen) == count:
                    break
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
