"""Broker addresses and MQTT client construction shared by every service."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY, MQTT_ERR_SUCCESS
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from carbonlink.config import BrokerConfig, secret_from_env
from carbonlink.core.tls import client_context
from carbonlink.errors import BrokerConnectionError, ConfigError

DEFAULT_PORT: Final = 1883
DEFAULT_TLS_PORT: Final = 8883
KEEPALIVE_S: Final = 30
# MQTT 5 ends a session at disconnect unless told otherwise; a persistent consumer keeps
# its queued messages for this long while it is away (one week).
SESSION_EXPIRY_S: Final = 7 * 24 * 3600
NO_MATCHING_SUBSCRIBERS: Final = 0x10
"""MQTT 5 PUBACK reason code: the broker took the message and no subscription matched it,
so nobody will ever receive it (under 3.1.1 the broker says nothing of the kind)."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str, config: BrokerConfig | None = None) -> BrokerAddress:
    """``mqtt://HOST:PORT`` or ``mqtts://HOST:PORT``; credentials come from the environment."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(None, "broker", f"expected mqtt://HOST:PORT, got {url!r}")
    if parts.username or parts.password:
        raise ConfigError(None, "broker", "credentials belong in environment variables")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
    except ValueError as exc:
        raise ConfigError(None, "broker", f"bad port in {url!r}") from exc
    username = secret_from_env(config.username_env) if config else None
    password = secret_from_env(config.password_env) if config else None
    return BrokerAddress(parts.hostname, port, tls, username, password)


def make_client(
    broker: BrokerAddress,
    identifier: str,
    *,
    clean_session: bool = True,
    will: aiomqtt.Will | None = None,
    mqtt5: bool = False,
    max_inflight_messages: int | None = None,
) -> aiomqtt.Client:
    """An asyncio MQTT client; incoming messages queue unbounded inside aiomqtt because a
    bounded aiomqtt queue drops on overflow. Services bound their own queues instead."""
    protocol = aiomqtt.ProtocolVersion.V5 if mqtt5 else aiomqtt.ProtocolVersion.V311
    properties = None
    if mqtt5 and not clean_session:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=identifier,
        username=broker.username,
        password=broker.password,
        protocol=protocol,
        clean_session=None if mqtt5 else clean_session,
        clean_start=clean_session if mqtt5 else MQTT_CLEAN_START_FIRST_ONLY,
        will=will,
        keepalive=KEEPALIVE_S,
        tls_context=client_context() if broker.tls else None,
        timeout=10,
        properties=properties,
        max_inflight_messages=max_inflight_messages,
    )


def manual_acks(client: aiomqtt.Client) -> None:
    """Stop the client acknowledging QoS 1 messages on receipt: the service calls
    :func:`acknowledge` once a message is safely on disk or in the store, so a crash in
    between makes the broker deliver it again instead of losing it."""
    # aiomqtt does not expose paho's manual-ack switch; it owns a paho client underneath.
    client._client.manual_ack_set(True)


def acknowledge(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)


def is_connection_loss(error: BaseException) -> bool:
    """True for a lost broker connection, also when a TaskGroup wrapped it in a group."""
    if isinstance(error, aiomqtt.MqttError | BrokerConnectionError):
        return True
    if isinstance(error, BaseExceptionGroup):
        return all(is_connection_loss(e) for e in error.exceptions)
    return False


# Per aiomqtt client: PUBACK futures by packet id, filled by the on_publish hook.
_puback_waiters: weakref.WeakKeyDictionary[aiomqtt.Client, dict[int, asyncio.Future[int]]] = (
    weakref.WeakKeyDictionary()
)


async def publish_with_reason(client: aiomqtt.Client, topic: str, payload: bytes) -> int:
    """Publish at QoS 1 and return the PUBACK's reason code: 0 for success (always under
    MQTT 3.1.1), :data:`NO_MATCHING_SUBSCRIBERS` when nobody will receive it.

    aiomqtt's ``publish`` drops the reason code, so this publishes on the paho client it
    owns (as :func:`manual_acks` does) and chains its own ``on_publish`` before aiomqtt's.
    A refusal (>= 0x80) raises :class:`BrokerConnectionError`; no PUBACK within the
    client's timeout raises ``aiomqtt.MqttError``, a lost connection, like aiomqtt's."""
    waiters = _puback_waiters.get(client)
    if waiters is None:
        waiters = _puback_waiters[client] = {}
        _chain_on_publish(client, waiters)
    info = client._client.publish(topic, payload, qos=1)
    if info.rc != MQTT_ERR_SUCCESS:
        raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiters[info.mid] = future
    try:
        async with asyncio.timeout(client.timeout):
            reason = await future
    except TimeoutError:
        raise aiomqtt.MqttError(f"no PUBACK for {topic!r} within {client.timeout}s") from None
    finally:
        waiters.pop(info.mid, None)
    if reason >= 0x80:
        raise BrokerConnectionError(f"broker refused publish to {topic!r}: 0x{reason:02x}")
    return reason


def _chain_on_publish(client: aiomqtt.Client, waiters: dict[int, asyncio.Future[int]]) -> None:
    paho = client._client
    aiomqtt_on_publish = paho.on_publish

    def on_publish(*args: Any) -> None:
        # paho's callback API v2: (client, userdata, mid, reason_code, properties); it runs
        # in the event loop's thread (aiomqtt drives paho's socket from the loop).
        mid, reason_code = args[2], args[3]
        future = waiters.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(int(getattr(reason_code, "value", 0)))
        if aiomqtt_on_publish is not None:
            aiomqtt_on_publish(*args)

    paho.on_publish = on_publish
