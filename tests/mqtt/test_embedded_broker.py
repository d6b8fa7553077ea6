"""The demo's embedded broker (amqtt) keeps every session when clients subscribe while
others start.

amqtt 0.12.1 iterates its subscription table with an ``await`` in the loop body; another
client's SUBSCRIBE meanwhile raised "dictionary changed size during iteration" and dropped
the starting client. Seen through the real path: a seeded `carbonlink demo` run stored
nothing (tests/test_cli_conventions.py, the seeded replay, failed about one run in seven).
The broker-level race could not be provoked on purpose here, so this checks the table the
broker runs with; the demo tests exercise the whole path."""

from __future__ import annotations

import asyncio

import aiomqtt

from carbonlink.mqtt.broker import EmbeddedBroker


def test_the_subscription_table_can_change_while_it_is_iterated() -> None:
    async def table_of_a_new_broker() -> dict[str, list[object]]:
        return EmbeddedBroker()._broker._subscriptions  # what amqtt's loops iterate

    table = asyncio.run(table_of_a_new_broker())
    table["a/1"] = []
    table["a/2"] = []
    seen = []
    for topic in table:  # what amqtt does when a session starts
        seen.append(topic)
        table[f"new/{topic}"] = []  # another client subscribes meanwhile
        table.pop("a/2", None)  # and another one leaves
    assert seen == ["a/1", "a/2"]
    for topic, _ in table.items():  # what a broadcast does
        table.pop(topic)
    assert not table


def test_clients_subscribing_at_once_with_retained_messages_all_receive() -> None:
    clients = 8

    async def client(port: int, n: int, ready: asyncio.Barrier) -> bytes:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"client-{n}") as c:
            await c.publish(f"status/{n}", b"online", qos=1, retain=True)
            await c.subscribe(f"status/{n}", qos=1)
            await c.subscribe(f"cmd/{n}", qos=1)
            await ready.wait()
            async for message in c.messages:
                if message.topic.matches(f"cmd/{n}"):
                    return bytes(message.payload)
        raise AssertionError("unreachable")

    async def main() -> list[bytes]:
        async with EmbeddedBroker() as broker:
            ready = asyncio.Barrier(clients + 1)
            tasks = [asyncio.create_task(client(broker.port, n, ready)) for n in range(clients)]
            async with asyncio.timeout(30):
                await ready.wait()
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="pub") as pub:
                    for n in range(clients):
                        await pub.publish(f"cmd/{n}", f"to {n}".encode(), qos=1)
                return list(await asyncio.gather(*tasks))

    assert asyncio.run(main()) == [f"to {n}".encode() for n in range(clients)]
