"""The platform's lean MQTT consumer against a real Mosquitto, in MQTT 5 and 3.1.1.

What the platform's delivery guarantee rests on: a message not acknowledged comes back
on the next connection of the same session; the broker never has more unacknowledged
messages out than the Receive Maximum; a paused client handles nothing until resumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiomqtt
import pytest

from carbonlink.errors import BrokerConnectionError
from carbonlink.mqtt.client import BrokerAddress, is_connection_loss, parse_broker_url
from carbonlink.mqtt.consumer import ConsumerClient, Incoming
from tests.servers import MosquittoServer, free_port
from tests.waiting import async_stays, async_wait_for

DEADLINE_S = 20.0
# "Nothing more arrives" has no event to wait on: for this long, nothing may.
QUIET_S = 0.3
MARKER = b"marker"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, int, int, bool]] = []
        self.received: list[Incoming] = []
        self.clients: list[ConsumerClient] = []

    def __call__(self, client: ConsumerClient, message: Incoming) -> None:
        self.messages.append(
            (message.topic, message.payload, message.qos, message.packet_id, message.retained)
        )
        self.received.append(message)
        self.clients.append(client)

    def payloads(self) -> list[bytes]:
        return [m[1] for m in self.messages]


async def until(check: Callable[[], bool], what: str) -> None:
    await async_wait_for(check, what, DEADLINE_S)


async def flushed(client: ConsumerClient, topic_prefix: str) -> None:
    """Return once the broker has read everything ``client`` wrote before: PUBACK has no
    answer, but the broker handles one connection's packets in order, so the PUBACK of a
    QoS 1 publish sent after them says that the acks before it are in."""
    await client.publish(f"{topic_prefix}/flush", b"", qos=1)


async def caught_up(inbox: Inbox, broker: MosquittoServer, topic: str) -> list[bytes]:
    """What ``inbox`` got before a marker published now: the broker delivers a session's
    queued messages before newer ones on the same subscription, so once the marker is in,
    anything the session still held has arrived too. Returns the payloads before it."""
    await publish(broker, topic, [MARKER])
    await until(lambda: MARKER in inbox.payloads(), "the marker behind the queued messages")
    payloads = inbox.payloads()
    assert payloads[-1] == MARKER, payloads
    return payloads[:-1]


async def publish(broker: MosquittoServer, topic: str, payloads: list[bytes]) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


def consumer(
    address: BrokerAddress, inbox: Inbox, client_id: str, mqtt5: bool, **options: int
) -> ConsumerClient:
    return ConsumerClient(address, client_id, inbox, mqtt5=mqtt5, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("mqtt5", [True, False], ids=["mqtt5", "mqtt311"])
def test_unacknowledged_messages_come_back_on_the_next_connection(
    mosquitto: MosquittoServer, topic_prefix: str, mqtt5: bool
) -> None:
    address = parse_broker_url(mosquitto.url)
    topic = f"{topic_prefix}/data"
    sent = [f"m{n}".encode() for n in range(10)]

    async def scenario() -> None:
        first = Inbox()
        async with consumer(address, first, topic_prefix, mqtt5) as client:
            await client.subscribe(topic)
            await publish(mosquitto, topic, sent)
            await until(lambda: len(first.messages) == 10, "all ten delivered")
            assert first.payloads() == sent
            client.ack(m[3] for m in first.messages[:4])  # the rest die with the connection
            # In at the broker before the same client id reconnects and takes the session.
            await flushed(client, topic_prefix)
        second = Inbox()
        async with consumer(address, second, topic_prefix, mqtt5) as client:
            # The six unacknowledged again, and no more than those.
            assert await caught_up(second, mosquitto, topic) == sent[4:]
            # Sent before and never acknowledged: the broker marks them as a redelivery.
            assert all(m.dup for m in second.received[:-1])
            assert not second.received[-1].dup  # the marker is new
            assert not any(m.dup for m in first.received)
            client.ack(m[3] for m in second.messages)
            await flushed(client, topic_prefix)
        third = Inbox()
        async with consumer(address, third, topic_prefix, mqtt5) as client:
            assert await caught_up(third, mosquitto, topic) == []  # nothing came back
            client.ack(m[3] for m in third.messages)

    asyncio.run(scenario())


def test_the_broker_respects_the_receive_maximum(
    mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    address = parse_broker_url(mosquitto.url)
    topic = f"{topic_prefix}/data"

    async def scenario() -> None:
        inbox = Inbox()
        async with consumer(address, inbox, topic_prefix, True, receive_maximum=5) as client:
            await client.subscribe(topic)
            await publish(mosquitto, topic, [b"x"] * 12)
            await until(lambda: len(inbox.messages) == 5, "five in flight")
            # The window is full, so no marker could pass: only time can show nothing more.
            await async_stays(
                lambda: len(inbox.messages) == 5, QUIET_S, "no more than the window before an ack"
            )
            # Mosquitto 2.0 refills its window as acks arrive, not strictly one for one.
            client.ack(m[3] for m in inbox.messages)
            await until(lambda: len(inbox.messages) == 12, "the rest once acknowledged")
            client.ack(m[3] for m in inbox.messages[5:])

    asyncio.run(scenario())


def test_a_paused_client_handles_nothing_until_resumed(
    mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    address = parse_broker_url(mosquitto.url)
    topic = f"{topic_prefix}/data"

    async def scenario() -> None:
        inbox = Inbox()
        async with consumer(address, inbox, topic_prefix, True) as client:
            await client.subscribe(topic)
            client.pause()
            await publish(mosquitto, topic, [f"m{n}".encode() for n in range(50)])
            # A paused client reads nothing, markers included: only time can show it.
            await async_stays(lambda: inbox.messages == [], QUIET_S, "nothing handled while paused")
            client.resume()
            await until(lambda: len(inbox.messages) == 50, "all fifty after resume")
            assert inbox.payloads() == [f"m{n}".encode() for n in range(50)]
            client.ack(m[3] for m in inbox.messages)

    asyncio.run(scenario())


@pytest.mark.parametrize("mqtt5", [True, False], ids=["mqtt5", "mqtt311"])
def test_publish_at_qos_1_and_large_payloads_arrive_whole(
    mosquitto: MosquittoServer, topic_prefix: str, mqtt5: bool
) -> None:
    address = parse_broker_url(mosquitto.url)
    topic = f"{topic_prefix}/big"
    big = bytes(range(256)) * 4_000  # ~1 MB: arrives over many socket reads

    async def scenario() -> None:
        inbox = Inbox()
        async with consumer(address, inbox, f"{topic_prefix}-sub", mqtt5) as receiver:
            await receiver.subscribe(topic)
            async with consumer(address, Inbox(), f"{topic_prefix}-pub", mqtt5) as sender:
                await sender.publish(topic, big, qos=1)
                await sender.publish(topic, b"small", qos=0)
            await until(lambda: len(inbox.messages) == 2, "both messages")
            assert inbox.payloads() == [big, b"small"]
            assert [m[0] for m in inbox.messages] == [topic, topic]
            receiver.ack(m[3] for m in inbox.messages)

    asyncio.run(scenario())


def test_retained_messages_are_flagged(mosquitto: MosquittoServer, topic_prefix: str) -> None:
    address = parse_broker_url(mosquitto.url)
    topic = f"{topic_prefix}/status"

    async def scenario() -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish(topic, b"online", qos=1, retain=True)
        inbox = Inbox()
        async with consumer(address, inbox, topic_prefix, True) as client:
            await client.subscribe(topic)
            await until(lambda: len(inbox.messages) == 1, "the retained message")
            assert inbox.messages[0][1:] == (b"online", 1, inbox.messages[0][3], True)
            client.ack([inbox.messages[0][3]])

    asyncio.run(scenario())


def test_a_refused_or_lost_connection_is_a_connection_loss(
    mosquitto_private: MosquittoServer, topic_prefix: str
) -> None:
    async def scenario() -> None:
        nobody = BrokerAddress("127.0.0.1", free_port())
        with pytest.raises(BrokerConnectionError) as refused:
            await ConsumerClient(nobody, topic_prefix, Inbox()).connect()
        assert is_connection_loss(refused.value)
        inbox = Inbox()
        client = ConsumerClient(parse_broker_url(mosquitto_private.url), topic_prefix, inbox)
        await client.connect()
        waiting: Awaitable[None] = client.wait_closed()
        mosquitto_private.kill()
        with pytest.raises(BrokerConnectionError):
            await asyncio.wait_for(waiting, DEADLINE_S)
        assert not client.is_connected
        client.ack([1, 2, 3])  # an ack for a dead connection is dropped, not raised
        await client.disconnect()

    asyncio.run(scenario())


class Hoarder(Inbox):
    """A handler that keeps what it is given, exceptions and their tracebacks included,
    and fails on every other message: what a careless handler does."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[BaseException] = []

    def __call__(self, client: ConsumerClient, message: Incoming) -> None:
        super().__call__(client, message)
        try:
            raise ValueError(message.payload)
        except ValueError as exc:
            self.kept.append(exc)  # its traceback reaches back into the consumer's frames
        if len(self.messages) % 2:
            raise RuntimeError("a handler that fails")


def test_a_handler_that_keeps_tracebacks_or_fails_costs_no_connection(
    mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    """Every packet is copied out of the receive buffer before a handler sees it, so what
    a handler keeps cannot pin the buffer (it once raised BufferError and reconnected on
    every redelivery); a handler that raises gets its message acknowledged, and the
    connection carries on."""
    address = parse_broker_url(mosquitto.url)
    topic = f"{topic_prefix}/data"
    sent = [f"m{n}".encode() * 50 for n in range(40)]

    async def scenario() -> None:
        hoarder = Hoarder()
        async with consumer(address, hoarder, topic_prefix, True) as client:
            await client.subscribe(topic)
            await publish(mosquitto, topic, sent)
            await until(lambda: len(hoarder.messages) == 40, "all forty, in one connection")
            assert client.is_connected
            assert hoarder.payloads() == sent
            client.ack(m[3] for n, m in enumerate(hoarder.messages) if n % 2)
            await flushed(client, topic_prefix)
        again = Inbox()
        async with consumer(address, again, topic_prefix, True) as client:
            # None came back: the failed ones were acknowledged by the consumer.
            assert await caught_up(again, mosquitto, topic) == []
            client.ack(m[3] for m in again.messages)

    asyncio.run(scenario())
