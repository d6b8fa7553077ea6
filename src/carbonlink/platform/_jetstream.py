"""The platform's JetStream intake: workers pull from one durable consumer.

- **Explicit acks after the store holds the data.** A message is acknowledged once its
  readings are in the store or the spill file (the same moment the MQTT path sends its
  PUBACK). A worker that dies first never acknowledges: after ``ack_wait_s`` JetStream
  delivers the message to another worker, and the identity check before each write
  stores a reading delivered twice once.
- **Refused messages are terminated** (``term``): every reading in them was refused,
  counted and dead-lettered, and a redelivery would only be refused again.
- **Poison is parked** on its ``POISON_ATTEMPTS``-th delivery (JetStream counts
  deliveries across workers, so nothing needs counting on disk): kept whole beside the
  spill file, dead-lettered as ``poison``, terminated.
- **A stopped worker takes nothing**: it pulls nothing, so nothing is dealt to it.
- **Backpressure** is not pulling: a worker asks for no more messages than its intake
  has room for (by the readings per message seen so far), so it never holds more than it
  writes within ``ack_wait_s``.
- **Sequence gaps per agent** need every message, but each worker sees only its share.
  So each worker also reads the stream's message ids (headers only, no payloads) through
  an ordered consumer of its own, in stream order, and counts the gaps in each agent's
  numbers from that: every worker reports the same, correct, figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import nats
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from carbonlink.config import JetStreamConfig
from carbonlink.jetstream import (
    MSG_ID_HEADER,
    MessageId,
    connect,
    ensure_consumer,
    ensure_stream,
    plant_of_subject,
    replicas_for,
    telemetry_subjects,
)

log = logging.getLogger(__name__)

FETCH_WAIT_S: Final = 1.0  # a pull waits this long for messages before asking again
SETTLE_TIMEOUT_S: Final = 2.0  # naks on the way out: best effort, then the process ends


class JetStreamAcks:
    """The platform's writer acknowledges messages by number, as it does MQTT packet ids;
    this maps those numbers to JetStream messages and acknowledges, terminates or naks."""

    def __init__(self) -> None:
        self._held: dict[int, Msg] = {}
        self._next = 1
        self._pending: set[asyncio.Task[None]] = set()

    def hold(self, message: Msg) -> int:
        tag, self._next = self._next, self._next + 1
        self._held[tag] = message
        return tag

    def ack(self, tags: Iterable[int]) -> None:
        for tag in tags:
            self._settle(tag, "ack")

    def term(self, tag: int) -> None:
        self._settle(tag, "term")

    def _settle(self, tag: int, how: str) -> None:
        message = self._held.pop(tag, None)
        if message is None:
            return
        # Fire and forget: an ack lost with the connection makes JetStream deliver the
        # message again, which the identity check absorbs.
        task = asyncio.get_running_loop().create_task(_settle(message, how))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def release(self) -> None:
        """On the way out: nak what is still held, so other workers get it now rather
        than after ack_wait."""
        held, self._held = list(self._held.values()), {}
        with contextlib.suppress(Exception):
            async with asyncio.timeout(SETTLE_TIMEOUT_S):
                await asyncio.gather(*(_settle(m, "nak") for m in held), *self._pending)


async def _settle(message: Msg, how: str) -> None:
    try:
        if how == "ack":
            await message.ack()
        elif how == "term":
            await message.term()
        else:
            await message.nak()
    except (nats.errors.Error, OSError) as exc:
        log.debug("platform: could not %s a JetStream message: %s", how, exc)


# (acks, tag, plant or None, payload, deliveries so far)
Deliver = Callable[[JetStreamAcks, int, "str | None", bytes, int], None]


@dataclass(slots=True)
class SequenceGaps:
    """Gaps in each agent's batch numbers, as the stream holds them (in stream order)."""

    known: Callable[[str], bool]  # only configured agents are tracked
    gaps: int = 0
    resets: int = 0
    last: dict[str, tuple[str, int]] = field(default_factory=dict)  # agent -> (epoch, seq)

    def see(self, message_id: str) -> None:
        parsed = MessageId.parse(message_id)
        if parsed is None or not self.known(parsed.agent):
            return
        previous = self.last.get(parsed.agent)
        if previous is not None and previous[0] != parsed.epoch:
            self.resets += 1  # a new outbox: its numbers start again
        elif previous is not None and parsed.seq > previous[1] + 1:
            self.gaps += parsed.seq - previous[1] - 1
        if previous is None or previous[0] != parsed.epoch or parsed.seq > previous[1]:
            self.last[parsed.agent] = (parsed.epoch, parsed.seq)


class JetStreamIntake:
    """Pulls telemetry for one worker; ``deliver`` hands each message to the platform."""

    def __init__(
        self,
        config: JetStreamConfig,
        name: str,
        deliver: Deliver,
        room: Callable[[], int],
        room_made: asyncio.Event,
        sequence: SequenceGaps,
    ) -> None:
        self._config = config
        self._name = name
        self._deliver = deliver
        self._room = room
        self._room_made = room_made
        self._sequence = sequence
        self.connected = asyncio.Event()

    async def run(self) -> None:
        client = await connect(self._config, f"platform {self._name}")
        acks = JetStreamAcks()
        try:
            js = client.jetstream()
            await ensure_stream(js, self._config, replicas_for(self._config, client))
            await ensure_consumer(js, self._config)
            pull = await js.pull_subscribe_bind(self._config.durable, self._config.stream)

            async def seen(message: Msg) -> None:
                self._sequence.see((message.headers or {}).get(MSG_ID_HEADER, ""))

            await js.subscribe(
                telemetry_subjects(self._config), stream=self._config.stream, cb=seen,
                ordered_consumer=True, headers_only=True, deliver_policy=DeliverPolicy.ALL,
            )  # fmt: skip
            self.connected.set()
            log.info("platform %s: pulling from JetStream %s/%s", self._name,
                     self._config.stream, self._config.durable)  # fmt: skip
            took_any = False
            while True:
                while (room := self._room()) <= 0:
                    self._room_made.clear()
                    await self._room_made.wait()
                # Never more than the intake holds: what a worker takes must be written
                # well within ack_wait, or JetStream hands it to another worker as well.
                want = min(self._config.fetch_batch, room)
                try:
                    messages = await pull.fetch(want, timeout=FETCH_WAIT_S)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue  # nothing to take now
                except nats.errors.Error as exc:  # a node lost, a leader election: ask again
                    log.warning("platform %s: pull failed (%s); asking again", self._name, exc)
                    await asyncio.sleep(FETCH_WAIT_S)
                    continue
                if messages and not took_any:
                    # Once: says in the log from when this worker shares the stream.
                    log.info("platform %s: took its first %d messages from JetStream",
                             self._name, len(messages))  # fmt: skip
                    took_any = True
                for message in messages:
                    tag = acks.hold(message)
                    plant = plant_of_subject(self._config, message.subject)
                    self._deliver(acks, tag, plant, message.data, message.metadata.num_delivered)
        finally:
            self.connected.clear()
            await acks.release()
            with contextlib.suppress(Exception):
                await client.close()
