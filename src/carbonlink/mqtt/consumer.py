"""A lean asyncio MQTT client for a high-rate consumer: the platform's telemetry loop.

Why not aiomqtt/paho here: paho reads each packet with three ``recv`` calls (command
byte, length, body), builds a message object and runs topic matching per message, and
aiomqtt adds a queue hop and objects on top. Measured on the benchmark machine, draining
50,000 queued QoS 1 one-reading messages (with ``json.loads`` and an ack each):
aiomqtt 3,600/s, paho ``loop_start`` 7,900/s, paho ``loop_forever`` 7,700/s, gmqtt
14,000/s, this protocol 33,600/s (docs/performance.md). It parses every packet in each
chunk the socket hands over, acknowledges many messages in one write, and can stop
reading the socket, which is real backpressure: the broker keeps what we cannot hold.

It speaks what a consumer needs of MQTT 3.1.1 and 5: CONNECT (persistent session,
session expiry, Receive Maximum, credentials, TLS), SUBSCRIBE, incoming PUBLISH at
QoS 0/1 with manual PUBACK, outgoing PUBLISH at QoS 0/1, keepalive and DISCONNECT.
No QoS 2, no will, no topic aliases (it advertises none, so the broker sends none).
The agent and the other services keep using aiomqtt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Self

from carbonlink.core.tls import client_context
from carbonlink.errors import BrokerConnectionError
from carbonlink.mqtt.client import KEEPALIVE_S, SESSION_EXPIRY_S, BrokerAddress

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 10.0
# A broker that sent nothing (not even PINGRESP) for this many keepalive periods is gone.
SILENCE_LIMIT_KEEPALIVES: Final = 1.5
MAX_PACKET_ID: Final = 65_535

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 0x10, 0x20, 0x30, 0x40
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0
_PROP_SESSION_EXPIRY, _PROP_RECEIVE_MAXIMUM = 0x11, 0x21
_PUBACK_HEADER: Final = b"\x40\x02"
_PACKET_ID = struct.Struct("!H")


class PublishRefusedError(BrokerConnectionError):
    """The broker answered a PUBLISH with an error reason code (MQTT 5), 0x87 (not
    authorized) say; the connection itself is still up."""

    def __init__(self, topic: str, reason: int) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"broker refused publish to {topic!r}: 0x{reason:02x}")


@dataclass(frozen=True, slots=True)
class Incoming:
    """One PUBLISH as received. ``dup`` is set when the broker sends it again after a
    reconnect because it was never acknowledged: a handler may have failed on it."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int  # 0 for QoS 0: nothing to acknowledge
    retained: bool
    dup: bool = False


# Called for each PUBLISH. The client comes along so that a handler knows which
# connection to acknowledge on. It must not raise (see ConsumerClient._publish_received).
MessageHandler = Callable[["ConsumerClient", Incoming], None]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _PACKET_ID.pack(len(data)) + data


def _packet(header: int, body: bytes) -> bytes:
    return bytes([header]) + _varint(len(body)) + body


def _read_varint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(value, position after it); raises IndexError if the data ends inside it."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise BrokerConnectionError("malformed variable byte integer from broker")


class ConsumerClient:
    """One connection's worth of MQTT; a new client per (re)connect.

    ``on_message`` runs inside the socket callback, in the event loop's thread: keep it
    synchronous and hand slow work on. Acknowledge with :meth:`ack` once a message is
    safe; an ack for a connection that has since died is dropped, because the broker
    resends that message on the next connection and may have reused its packet id.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        client_id: str,
        on_message: MessageHandler,
        *,
        mqtt5: bool = True,
        clean_start: bool = False,
        receive_maximum: int = MAX_PACKET_ID,
        keepalive_s: int = KEEPALIVE_S,
    ) -> None:
        self._broker = broker
        self._client_id = client_id
        self._on_message = on_message
        self._mqtt5 = mqtt5
        self._clean_start = clean_start
        self._receive_maximum = receive_maximum
        self._keepalive_s = keepalive_s
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._closed: asyncio.Future[None] | None = None

    @property
    def is_connected(self) -> bool:
        return self._closed is not None and not self._closed.done()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        context = client_context() if self._broker.tls else None  # $CARBONLINK_CA_FILE too
        connack = loop.create_future()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(self, connack),
                    self._broker.host,
                    self._broker.port,
                    ssl=context,
                )
                self._transport, self._protocol = transport, protocol
                transport.write(self._connect_packet())
                await connack
        except (OSError, TimeoutError) as exc:
            self._abort()
            raise BrokerConnectionError(f"cannot connect to {self._broker.url}: {exc}") from exc
        except BrokerConnectionError:
            self._abort()
            raise
        self._keepalive_task = loop.create_task(self._keep_alive())

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        packet_id = self._allocate_id()
        options = b"\x00" if self._mqtt5 else b""  # no subscribe properties
        body = _PACKET_ID.pack(packet_id) + options + _text(topic) + bytes([qos])
        granted = await self._request(packet_id, _packet(_SUBSCRIBE, body))
        if not granted or granted[-1] >= 0x80:
            raise BrokerConnectionError(f"broker refused subscription to {topic!r}")

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Publish; at QoS 1, return once the broker has acknowledged it, with the PUBACK's
        MQTT 5 reason code (0 for success and under 3.1.1; 0x10: no matching subscribers)."""
        properties = b"\x00" if self._mqtt5 else b""
        if qos == 0:
            self._write(_packet(_PUBLISH, _text(topic) + properties + payload))
            return 0
        packet_id = self._allocate_id()
        body = _text(topic) + _PACKET_ID.pack(packet_id) + properties + payload
        reason = await self._request(packet_id, _packet(_PUBLISH | 0x02, body))
        if reason and reason[0] >= 0x80:
            raise PublishRefusedError(topic, reason[0])
        return reason[0] if reason else 0

    def ack(self, packet_ids: Iterable[int]) -> None:
        """PUBACK each message, all in one write; a no-op once this connection is gone."""
        if not self.is_connected:
            return
        self._write(b"".join(_PUBACK_HEADER + _PACKET_ID.pack(i) for i in packet_ids if i))

    def pause(self) -> None:
        """Stop reading: the broker holds further messages until :meth:`resume`."""
        if self._protocol is not None:
            self._protocol.pause()

    def resume(self) -> None:
        if self._protocol is not None:
            self._protocol.resume()

    @property
    def paused(self) -> bool:
        return self._protocol is not None and self._protocol.paused

    async def wait_closed(self) -> None:
        """Return never; raise BrokerConnectionError once the connection is lost."""
        assert self._closed is not None, "connect first"
        await asyncio.shield(self._closed)

    async def disconnect(self) -> None:
        if self.is_connected and self._transport is not None:
            self._write(_packet(_DISCONNECT, b"\x00" if self._mqtt5 else b""))
            self._transport.close()  # unlike abort(), sends the DISCONNECT first
        self._abort()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive_task

    # --- internals ---------------------------------------------------------------

    def _connect_packet(self) -> bytes:
        broker = self._broker
        flags = 0x02 if self._clean_start else 0x00
        payload = _text(self._client_id)
        if broker.username is not None:
            flags |= 0x80
            payload += _text(broker.username)
            if broker.password is not None:
                flags |= 0x40
                payload += _text(broker.password)
        header = _text("MQTT") + bytes([5 if self._mqtt5 else 4, flags])
        header += _PACKET_ID.pack(self._keepalive_s)
        if self._mqtt5:
            properties = b""
            if not self._clean_start:
                properties += bytes([_PROP_SESSION_EXPIRY]) + struct.pack("!I", SESSION_EXPIRY_S)
            properties += bytes([_PROP_RECEIVE_MAXIMUM]) + _PACKET_ID.pack(self._receive_maximum)
            header += _varint(len(properties)) + properties
        return _packet(_CONNECT, header + payload)

    def _allocate_id(self) -> int:
        for _ in range(MAX_PACKET_ID):
            self._next_id = self._next_id % MAX_PACKET_ID + 1
            if self._next_id not in self._pending:
                return self._next_id
        raise BrokerConnectionError("no free packet identifier")

    async def _request(self, packet_id: int, packet: bytes) -> bytes:
        if not self.is_connected:
            raise BrokerConnectionError("not connected")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[packet_id] = future
        try:
            self._write(packet)
            return await future
        finally:
            self._pending.pop(packet_id, None)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing() and data:
            self._transport.write(data)

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while self.is_connected and self._protocol is not None:
            await asyncio.sleep(self._keepalive_s / 2)
            protocol = self._protocol
            silent_for = loop.time() - protocol.last_received
            # While paused we read nothing, PINGRESP included: silence proves nothing then.
            if not protocol.paused and silent_for > self._keepalive_s * SILENCE_LIMIT_KEEPALIVES:
                self._lost(BrokerConnectionError(f"broker silent for {silent_for:.0f}s"))
                return
            self._write(_packet(_PINGREQ, b""))

    def _lost(self, error: BrokerConnectionError) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_exception(error)
            self._closed.exception()  # retrieved: a lost connection nobody awaits is fine
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._abort()

    def _abort(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()
        if self._closed is not None and not self._closed.done():
            self._closed.set_exception(BrokerConnectionError("disconnected"))
            self._closed.exception()

    # Called by the protocol:

    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if kind == _PUBLISH:
            self._publish_received(flags, body)
        elif kind in (_PUBACK, _SUBACK):
            packet_id = _PACKET_ID.unpack_from(body)[0]
            rest = bytes(body[2:])
            if kind == _SUBACK and self._mqtt5:
                length, pos = _read_varint(body, 2)
                rest = bytes(body[pos + length :])
            future = self._pending.get(packet_id)
            if future is not None and not future.done():
                future.set_result(rest)
        elif kind == _DISCONNECT:
            reason = body[0] if len(body) else 0
            self._lost(BrokerConnectionError(f"broker disconnected us (reason 0x{reason:02x})"))
        elif kind != _PINGRESP:
            self._lost(BrokerConnectionError(f"unexpected packet type 0x{kind:02x} from broker"))

    def _publish_received(self, flags: int, body: bytes) -> None:
        qos = (flags >> 1) & 0x03
        topic_length = (body[0] << 8) | body[1]
        pos = 2 + topic_length
        topic = str(body[2:pos], "utf-8")
        packet_id = 0
        if qos:
            if qos > 1:
                self._lost(BrokerConnectionError("QoS 2 message on a QoS 1 subscription"))
                return
            packet_id = (body[pos] << 8) | body[pos + 1]
            pos += 2
        if self._mqtt5:
            length, pos = _read_varint(body, pos)
            pos += length
        message = Incoming(
            topic, body[pos:], qos, packet_id, bool(flags & 0x01), bool(flags & 0x08)
        )
        try:
            self._on_message(self, message)
        except Exception:
            # A handler must not raise (the platform's handles every exception itself).
            # If one does anyway, the message would fail again on every redelivery: log
            # it, acknowledge it, and keep the connection for the messages behind it.
            log.exception("consumer: handler failed on a message to %s; acknowledged", topic)
            self.ack((packet_id,))


class _Protocol(asyncio.Protocol):
    """Frames packets out of the byte stream; everything else is the client's."""

    def __init__(self, client: ConsumerClient, connack: asyncio.Future[None]) -> None:
        self._client = client
        self._connack = connack
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self.paused = False
        self.last_received = asyncio.get_running_loop().time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_received = asyncio.get_running_loop().time()
        self._buffer += data
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        error = BrokerConnectionError(f"connection lost: {exc or 'closed by broker'}")
        if not self._connack.done():
            self._connack.set_exception(error)
        self._client._lost(error)

    def pause(self) -> None:
        if not self.paused and self._transport is not None:
            self.paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self._transport is not None:
            self.paused = False
            self._transport.resume_reading()
            # Packets that arrived before the pause are already here: handle them now,
            # not when the next bytes happen to arrive.
            asyncio.get_running_loop().call_soon(self._parse)

    def _parse(self) -> None:
        """Handle every complete packet in the buffer, one at a time.

        Each packet is copied out of the buffer and removed from it *before* it is
        handled: nothing a handler keeps (a payload, an exception with its traceback)
        can then hold a view of the receive buffer, which would stop it from shrinking.
        Deleting from the front of a bytearray is cheap in CPython (it moves a start
        offset), so packet-at-a-time costs no quadratic copying.
        """
        buffer = self._buffer
        while not self.paused and len(buffer) >= 2:
            try:
                length, start = _read_varint(buffer, 1)
            except IndexError:
                return  # the length itself is not complete yet
            except BrokerConnectionError as exc:
                self._fail(exc)
                return
            stop = start + length
            if stop > len(buffer):
                return
            header = buffer[0]
            body = bytes(buffer[start:stop])
            del buffer[:stop]
            kind = header & 0xF0
            try:
                if kind == _CONNACK and not self._connack.done():
                    self._connack_received(body)
                else:
                    self._client._handle(kind, header & 0x0F, body)
            except BrokerConnectionError as exc:
                self._fail(exc)
                return
            except (IndexError, UnicodeDecodeError, struct.error) as exc:
                self._fail(BrokerConnectionError(f"malformed packet from broker: {exc}"))
                return

    def _fail(self, error: BrokerConnectionError) -> None:
        self._buffer = bytearray()  # the connection is over; what is left is meaningless
        self._client._lost(error)

    def _connack_received(self, body: bytes) -> None:
        code = body[1] if len(body) > 1 else 0xFF
        if code:
            self._connack.set_exception(
                BrokerConnectionError(f"broker refused the connection (code 0x{code:02x})")
            )
        else:
            self._connack.set_result(None)
