"""An embedded MQTT broker (amqtt) so `carbonlink demo` needs no external service.

For the demo only: amqtt speaks MQTT 3.1.1 and is far slower than Mosquitto, which the
real stack and the tests use.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker

DEFAULT_HOST = "127.0.0.1"


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
