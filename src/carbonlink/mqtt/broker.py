"""An embedded MQTT broker (amqtt) so `carbonlink demo` needs no external service.

For the demo only: amqtt speaks MQTT 3.1.1 and is far slower than Mosquitto, which the
real stack and the tests use.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker

DEFAULT_HOST = "127.0.0.1"


class _SnapshotIteration(dict[str, Any]):
    """amqtt's subscription table, iterated over a snapshot.

    amqtt 0.12.1 (the newest release) loops over its subscription table with an ``await``
    in the loop body: when a session starts (sending it the retained messages) and when
    it broadcasts. Another client's SUBSCRIBE meanwhile raises "dictionary changed size
    during iteration", which drops the starting client's connection or the broadcast.
    The demo connects its platform, agents and simulators at once and keeps retained
    status messages, so a run could store nothing (tests/mqtt/test_embedded_broker.py).
    A snapshot is what those loops mean: the subscriptions as they were when it began.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return list(super().items())


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, port: int | None = None, host: str = DEFAULT_HOST) -> None:
        self.host = host
        self.port = port or free_port(host)
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._broker = Broker(config)
        # The one private attribute touched: see _SnapshotIteration (amqtt < 0.13 only).
        self._broker._subscriptions = _SnapshotIteration()
        # amqtt logs every connection at INFO and in-flight messages dropped at shutdown
        # as warnings; the demo's own summary is what users read.
        logging.getLogger("amqtt").setLevel(logging.ERROR)
        logging.getLogger("transitions").setLevel(logging.WARNING)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        await self._broker.start()

    async def stop(self) -> None:
        await self._broker.shutdown()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
