"""One plant's MQTT connection: publishes its meter messages, receives its directives.

The connection carries a last will on ``carbonlink/v1/{plant}/sim-status`` so a plant
that vanishes (the ``offline`` fault, a crash) is announced by the broker. Message and
connection faults are applied here, on what actually goes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiomqtt

from carbonlink import wire
from carbonlink.errors import RejectedReading
from carbonlink.mqtt.client import BrokerAddress, make_client
from carbonlink.mqtt.reconnect import keep_connected
from carbonlink.mqtt.rejections import Rejections
from carbonlink.simulators._faults import CONNECTION_FAULTS, MESSAGE_FAULTS, Fault, FaultKind

log = logging.getLogger(__name__)

QUEUE_MAX_MESSAGES: Final = 2_000  # per plant: bounds memory, paces the generator
PUBLISH_CHUNK: Final = 200  # publishes awaited together (paho keeps their order)
MAX_INFLIGHT: Final = 200  # QoS 1 messages awaiting PUBACK per connection
PENDING_MAX_MESSAGES: Final = 100_000  # kept across a broker_disconnect fault
DIRECTIVE_SETTLE_S: Final = 0.2  # retained directives arrive right after SUBACK


def sim_status_topic(plant: str) -> str:
    return f"{wire.TOPIC_ROOT}/{plant}/sim-status"


@dataclass(frozen=True, slots=True)
class Outgoing:
    ts_ms: int  # the last sample's timestamp, which places the message in fault windows
    meter: str
    topic: str
    payload: bytes
    samples: int


@dataclass(slots=True)
class LinkCounters:
    messages: int = 0
    samples: int = 0
    dropped_samples: int = 0
    directives: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)  # directives, by reason

    def count_fault(self, kind: FaultKind) -> None:
        self.faults[kind.value] = self.faults.get(kind.value, 0) + 1


@dataclass(slots=True)
class _Outage:
    fault: Fault
    start_ms: int
    end_ms: int
    fired: bool = False


_Wire = tuple[Outgoing, bytes, bool]  # message, bytes to send, False for a duplicate copy


class _DroppedError(Exception):
    """Leave the connection's context after cutting it on purpose."""


class PlantLink:
    def __init__(
        self,
        plant: str,
        broker: BrokerAddress,
        faults: Sequence[Fault],
        run_start_ms: int,
        on_directive: Callable[[wire.Directive], None],
        counters: LinkCounters,
    ) -> None:
        self.plant = plant
        self.queue: asyncio.Queue[Outgoing | None] = asyncio.Queue(QUEUE_MAX_MESSAGES)
        self.connected = asyncio.Event()
        self._broker = broker
        self._on_directive = on_directive
        self.counters = counters
        self._message_faults = [
            (f, *f.window_ms(run_start_ms)) for f in faults if f.kind in MESSAGE_FAULTS
        ]
        self._connection_faults = [
            _Outage(f, *f.window_ms(run_start_ms)) for f in faults if f.kind in CONNECTION_FAULTS
        ]
        # A refused directive is logged, counted and dead-lettered, as every refusal is.
        self._rejections = Rejections("simulator", log, counters.refused)
        self._pending: deque[Outgoing] = deque()
        self._held: dict[str, Outgoing] = {}  # out_of_order: per meter, awaiting its next
        self._down_until: int | None = None
        self._keep_while_down = False
        self._finished = False

    async def run(self) -> None:
        await keep_connected(self._sessions, what=f"simulator {self.plant}", log=log)

    async def _sessions(self, connected: Callable[[], None]) -> None:
        """Sessions until the run is done; an outage the fault plan cut on purpose is waited
        out here, without the backoff of a lost broker."""
        while True:
            if self._down_until is not None:
                # Reconnect afterwards even at the end: kept data and the final status.
                await self._wait_out_outage()
            try:
                await self._session(connected)
                return
            except _DroppedError:
                continue

    async def _session(self, connected: Callable[[], None]) -> None:
        status = sim_status_topic(self.plant)
        will = aiomqtt.Will(status, self._status("offline"), qos=1, retain=True)
        client = make_client(
            self._broker, f"sim-{self.plant}", clean_session=True, will=will,
            max_inflight_messages=MAX_INFLIGHT,
        )  # fmt: skip
        # Chunks of concurrent publishes are by design, not a sign of a stuck broker.
        client.pending_calls_threshold = PUBLISH_CHUNK * 2
        try:
            async with client:
                connected()
                await client.publish(status, self._status("online"), qos=1, retain=True)
                await client.subscribe(wire.directive_topic(self.plant), qos=1)
                listener = asyncio.create_task(self._listen(client))
                deadletters = asyncio.create_task(self._deadletters(client))
                try:
                    if not self.connected.is_set():
                        await asyncio.sleep(DIRECTIVE_SETTLE_S)
                        self.connected.set()
                    await self._publish_loop(client)
                    await client.publish(status, self._status("stopped"), qos=1, retain=True)
                finally:
                    listener.cancel()
                    deadletters.cancel()
        except aiomqtt.MqttError:
            if self._down_until is not None:
                raise _DroppedError from None
            raise

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            chunk: list[Outgoing] = []
            while self._pending and len(chunk) < PUBLISH_CHUNK:
                chunk.append(self._pending.popleft())
            if not chunk and not self._finished:
                item = await self.queue.get()
                if item is None:
                    self._finished = True
                else:
                    chunk.append(item)
                while len(chunk) < PUBLISH_CHUNK and not self._finished:
                    try:
                        item = self.queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if item is None:
                        self._finished = True
                    else:
                        chunk.append(item)
            if not chunk:
                # The run ended inside an out_of_order window: what is held goes last.
                held = list(self._held.values())
                self._held.clear()
                await asyncio.gather(*(client.publish(o.topic, o.payload, qos=1) for o in held))
                self.counters.messages += len(held)
                self.counters.samples += sum(o.samples for o in held)
                return
            wire_messages, cut_at = self._apply_faults(chunk)
            try:
                await asyncio.gather(
                    *(client.publish(o.topic, payload, qos=1) for o, payload, _ in wire_messages)
                )
            except aiomqtt.MqttError:
                # Unconfirmed: send all again after reconnecting (the agent drops repeats).
                self._pending.extendleft(reversed([o for o, _, first in wire_messages if first]))
                raise
            for outgoing, _, first in wire_messages:
                if not first:
                    continue  # the second copy of a duplicate
                self.counters.messages += 1
                self.counters.samples += outgoing.samples
            if cut_at is not None:
                self._cut(client, cut_at)

    def _apply_faults(
        self, chunk: list[Outgoing]
    ) -> tuple[list[_Wire], tuple[Fault, int, Sequence[Outgoing]] | None]:
        """What to publish now, and the connection fault (with its unsent rest) if one hits."""
        out: list[_Wire] = []
        for position, outgoing in enumerate(chunk):
            for outage in self._connection_faults:
                if not outage.fired and outgoing.ts_ms >= outage.start_ms:
                    outage.fired = True
                    return out, (outage.fault, outage.end_ms, chunk[position:])
            payload = outgoing.payload
            kinds = {
                f.kind
                for f, start, end in self._message_faults
                if start <= outgoing.ts_ms < end and f.matches(self.plant, outgoing.meter)
            }
            if FaultKind.MALFORMED in kinds:
                payload = payload[: len(payload) // 2]
                self.counters.count_fault(FaultKind.MALFORMED)
            held = self._held.pop(outgoing.meter, None)
            if FaultKind.OUT_OF_ORDER in kinds:
                if held is None:
                    self._held[outgoing.meter] = outgoing
                    continue
                out.append((outgoing, payload, True))
                out.append((held, held.payload, True))
                self.counters.count_fault(FaultKind.OUT_OF_ORDER)
                continue
            if held is not None:
                out.append((held, held.payload, True))
            out.append((outgoing, payload, True))
            if FaultKind.DUPLICATE in kinds:
                out.append((outgoing, payload, False))
                self.counters.count_fault(FaultKind.DUPLICATE)
        return out, None

    def _cut(self, client: aiomqtt.Client, cut: tuple[Fault, int, Sequence[Outgoing]]) -> None:
        """Drop the TCP connection without DISCONNECT, so the broker sends the will."""
        fault, end, rest = cut
        self.counters.count_fault(fault.kind)
        self._down_until = end
        self._keep_while_down = fault.kind is FaultKind.BROKER_DISCONNECT
        self._pending.extendleft(reversed(list(rest)))
        sock = client._client.socket()  # no public way to die uncleanly
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
        raise _DroppedError

    async def _wait_out_outage(self) -> None:
        """Consume messages until simulated time passes the outage, dropping or keeping."""
        down_until = self._down_until
        if down_until is None:
            return
        backlog, self._pending = self._pending, deque()
        kept: deque[Outgoing] = deque()
        while True:
            if backlog:
                outgoing: Outgoing | None = backlog.popleft()
            elif self._finished:
                outgoing = None
            else:
                outgoing = await self.queue.get()
            if outgoing is None:
                self._finished = True
                break
            if outgoing.ts_ms >= down_until:
                backlog.appendleft(outgoing)
                break
            if not self._keep_while_down:
                self.counters.dropped_samples += outgoing.samples
                continue
            if len(kept) >= PENDING_MAX_MESSAGES:
                self.counters.dropped_samples += kept.popleft().samples
            kept.append(outgoing)
        kept.extend(backlog)
        self._pending = kept
        self._down_until = None

    async def _listen(self, client: aiomqtt.Client) -> None:
        # The session notices a lost connection on its own.
        with contextlib.suppress(aiomqtt.MqttError):
            await self._receive(client)

    async def _deadletters(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await self._rejections.publish(client)

    async def _receive(self, client: aiomqtt.Client) -> None:
        topic = wire.directive_topic(self.plant)
        async for message in client.messages:
            payload = message.payload
            # amqtt (the demo's embedded broker) has been seen delivering other topics'
            # retained messages to this subscription; only our directives concern us.
            if not isinstance(payload, bytes | bytearray) or str(message.topic) != topic:
                continue
            if not payload:
                continue  # a retained directive being cleared
            try:
                directive = wire.decode_directive(topic, bytes(payload))
                self.counters.directives += 1
                self._on_directive(directive)
            except RejectedReading as exc:
                self._rejections.record(self.plant, topic, exc, bytes(payload))
            except Exception as exc:  # no directive may stop the plant
                log.exception("simulator %s: failed on a directive", self.plant)
                error = RejectedReading(wire.Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
                self._rejections.record(self.plant, topic, error, bytes(payload))

    def _status(self, state: str) -> bytes:
        return json.dumps({"v": 1, "state": state, "sim": f"sim-{self.plant}"}).encode()
