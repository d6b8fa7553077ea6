"""NATS JetStream between agents and platform: subjects, message ids, the connection,
and the stream and consumer every service creates or checks at startup.

Why JetStream beside MQTT shared subscriptions (docs/operations.md, "Which intake path"):
the stream is replicated across a cluster and acknowledges a publish only once a quorum
holds it; the workers pull from one durable consumer, so a message one of them took and
never acknowledged goes to the others after ``ack_wait``, and a stopped worker is simply
one that pulls nothing. The MQTT path stays between meters and agents.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import errors as js_errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from carbonlink.config import JetStreamConfig
from carbonlink.errors import CarbonlinkError

__all__ = [
    "MSG_ID_HEADER",
    "PUBLISH_ERRORS",
    "JetStreamSetupError",
    "MessageId",
    "connect",
    "ensure_consumer",
    "ensure_stream",
    "plant_of_subject",
    "replicas_for",
    "telemetry_subject",
    "telemetry_subjects",
]

log = logging.getLogger(__name__)

MSG_ID_HEADER: Final = "Nats-Msg-Id"
CLUSTER_REPLICAS: Final = 3
"""Replicas on a cluster: a quorum (2 of 3) survives the loss of any one node."""
CONNECT_RETRY_S: Final = 1.0
LEADER_POLL_S: Final = 0.1  # a replicated consumer elects its leader within a second or so
RECONNECT_WAIT_S: Final = 0.5

# What a publish raises when the stream cannot acknowledge now (no leader during an
# election, a node gone, the connection reconnecting): the batch is sent again.
PUBLISH_ERRORS: Final = (nats.errors.Error, asyncio.TimeoutError, TimeoutError)


class JetStreamSetupError(CarbonlinkError):
    """The stream or consumer on the server contradicts the configuration."""


def telemetry_subject(config: JetStreamConfig, plant: str) -> str:
    return f"{config.subject_prefix}.{plant}.telemetry"


def telemetry_subjects(config: JetStreamConfig) -> str:
    return f"{config.subject_prefix}.*.telemetry"


def plant_of_subject(config: JetStreamConfig, subject: str) -> str | None:
    """The plant a telemetry subject names, or None if it is not one."""
    head = config.subject_prefix + "."
    if not subject.startswith(head) or not subject.endswith(".telemetry"):
        return None
    plant = subject[len(head) : -len(".telemetry")]
    return plant if plant and "." not in plant else None


@dataclass(frozen=True, slots=True)
class MessageId:
    """A telemetry batch's JetStream message id: the agent, its outbox's epoch (random,
    made with the outbox, so a new outbox whose numbers start again at 1 is never taken
    for a repeat of the old one's) and the batch's sequence number."""

    agent: str
    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.agent}/{self.epoch}/{self.seq}"

    @classmethod
    def parse(cls, text: str) -> MessageId | None:
        parts = text.split("/")
        if len(parts) != 3 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]))


async def connect(config: JetStreamConfig, name: str) -> NatsClient:
    """A NATS connection that reconnects by itself, forever, to any node of the cluster.
    The first connection is retried here until one node answers."""
    while True:
        try:
            return await nats.connect(
                servers=list(config.servers),
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RECONNECT_WAIT_S,
                connect_timeout=2,
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            log.warning("%s: no NATS server answers (%s); retry in %.1fs", name, exc,
                        CONNECT_RETRY_S)  # fmt: skip
            await asyncio.sleep(CONNECT_RETRY_S)


def replicas_for(config: JetStreamConfig, client: NatsClient) -> int:
    """The configured replicas, else 3 when the client knows three or more nodes."""
    if config.replicas is not None:
        return config.replicas
    nodes = {(url.hostname, url.port) for url in client.servers}
    return CLUSTER_REPLICAS if len(nodes) >= CLUSTER_REPLICAS else 1


async def ensure_stream(js: JetStreamContext, config: JetStreamConfig, replicas: int) -> StreamInfo:
    """Create the telemetry stream, or check the one there: same subjects, same replicas.

    Limits retention (not work-queue): the stream keeps ``max_age_s`` whatever the
    workers acknowledged, so a platform can be rebuilt from it, and the accounting of
    what was published can be read off it. File storage: a node restart keeps it."""
    wanted = StreamConfig(
        name=config.stream,
        subjects=[telemetry_subjects(config)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=config.duplicate_window_s,
        max_age=config.max_age_s,
    )
    while True:
        try:
            info = await js.stream_info(config.stream)
        except js_errors.NotFoundError:
            try:
                return await js.add_stream(wanted)
            except js_errors.BadRequestError as exc:
                raise JetStreamSetupError(f"stream {config.stream}: {exc.description}") from exc
            except (nats.errors.TimeoutError, js_errors.ServiceUnavailableError):
                await asyncio.sleep(CONNECT_RETRY_S)  # no meta leader yet: try again
                continue
        except (nats.errors.TimeoutError, js_errors.ServiceUnavailableError):
            await asyncio.sleep(CONNECT_RETRY_S)
            continue
        break
    have = info.config
    if list(have.subjects or []) != wanted.subjects or have.num_replicas != replicas:
        raise JetStreamSetupError(
            f"stream {config.stream} exists with subjects {have.subjects} and "
            f"{have.num_replicas} replicas; the configuration wants {wanted.subjects} and "
            f"{replicas}"
        )
    return info


async def ensure_consumer(js: JetStreamContext, config: JetStreamConfig) -> None:
    """The platform workers' one durable pull consumer, with explicit acks; returns once
    the consumer has a leader to answer pulls.

    Why wait for the leader: a pull sent while a new replicated consumer is still electing
    one is dropped, and the worker learns it only when its pull times out. A worker that
    calls itself connected before then can sit out the first seconds of traffic while
    another worker takes every message (CI saw a split of [0, 600] right after start)."""
    wanted = ConsumerConfig(
        durable_name=config.durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=config.ack_wait_s,
        max_deliver=config.max_deliver,
        max_ack_pending=config.max_ack_pending,
        filter_subject=telemetry_subjects(config),
    )
    while True:
        try:
            await js.add_consumer(config.stream, wanted)
            break
        except js_errors.BadRequestError as exc:
            raise JetStreamSetupError(
                f"consumer {config.durable} on stream {config.stream}: {exc.description}"
            ) from exc
        except (nats.errors.TimeoutError, js_errors.ServiceUnavailableError):
            await asyncio.sleep(CONNECT_RETRY_S)
    while True:
        try:
            info = await js.consumer_info(config.stream, config.durable)
            if info.cluster is None or info.cluster.leader:
                return
        except (nats.errors.TimeoutError, js_errors.ServiceUnavailableError):
            pass  # no leader to answer yet either
        await asyncio.sleep(LEADER_POLL_S)
