"""The JetStream intake path under faults, with exact accounting, on real servers.

Meters publish to a real Mosquitto; two agents (``carbonlink agent``, uplink jetstream)
forward to a replicated stream on a three-node NATS cluster started on loopback ports;
two platform workers (``carbonlink platform``, intake jetstream) pull from its one
durable consumer and write to a real InfluxDB. Every case compares, reading by reading,
what InfluxDB holds with what was published and prints the table (as tests/faults/ does).

"None doubled" is read where a double could hide: the stream holds each batch once (its
message count equals the batches the agents numbered: a re-sent batch was dropped by
JetStream's duplicate window), and each reading reached a worker once, unless a worker
died holding it (then the survivor's ``repeats`` counts what it found already stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiomqtt
import nats
import pytest
import yaml

from carbonlink import wire
from carbonlink.config import Settings, load_config
from carbonlink.core.clock import wall_clock_ms
from carbonlink.jetstream import MSG_ID_HEADER, MessageId
from tests.configs import write_config
from tests.faults.harness import (
    Service,
    account,
    plan_readings,
    platform_health,
    publish,
    report,
    service_env,
    settle,
    stored_readings,
)
from tests.servers import HOST, InfluxDBServer, MosquittoServer, NatsCluster, free_port

pytestmark = pytest.mark.slow

PER_METER: Final = 100  # readings per interval meter: two plants, ~600 readings a case
READY_TIMEOUT_S: Final = 60.0
ACK_WAIT_S: Final = 4.0  # short, so a dead worker's messages move on within the test
STREAM: Final = "CARBONLINK_TELEMETRY"
DURABLE: Final = "carbonlink-platform"


@dataclass
class Rig:
    settings: Settings
    work: Path
    broker: MosquittoServer
    cluster: NatsCluster
    store_url: str
    workers: list[Service]
    http_ports: list[int]
    agents: dict[str, Service]

    @property
    def plants(self) -> list[str]:
        return sorted(self.settings.plants)

    def health(self, worker: int) -> dict[str, object]:
        ingestion = platform_health(self.http_ports[worker]).get("ingestion")
        return ingestion if isinstance(ingestion, dict) else {}

    def wait_ready(self, workers: list[int] | None = None) -> None:
        """Each worker answers, pulls from JetStream and has seen every agent online."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        for worker in range(len(self.workers)) if workers is None else workers:
            while True:
                health = self.health(worker)
                states = health.get("agents") or {}
                if health.get("connected") and all(
                    states.get(p) == "online" for p in self.plants  # type: ignore[union-attr]
                ):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("services did not come up:\n" + self.logs())
                time.sleep(0.2)

    def logs(self) -> str:
        services = [*self.workers, *self.agents.values()]
        return "\n".join(f"--- {s.name}\n{s.log_tail()}" for s in services)


@pytest.fixture
def rig(
    tmp_path: Path,
    topic_prefix: str,
    mosquitto: MosquittoServer,
    influxdb: InfluxDBServer,
    influx_database: str,
    nats_cluster: NatsCluster,
) -> Iterator[Rig]:
    plants = {f"{topic_prefix}-cement": "cement-01", f"{topic_prefix}-steel": "steel-01"}
    config = write_config(tmp_path / "config", plants=plants, broker_url=mosquitto.url,
                          client_id=f"platform-{topic_prefix}")  # fmt: skip
    raw = yaml.safe_load(config.read_text())
    raw["agent"]["uplink"] = "jetstream"
    raw["platform"]["intake"] = "jetstream"
    raw["jetstream"] = {"servers": nats_cluster.urls, "ack_wait_s": ACK_WAIT_S}
    config.write_text(yaml.safe_dump(raw))
    settings = load_config(config)
    store = influxdb.store_url(influx_database)
    ports = [free_port(), free_port()]
    workers = [
        Service(
            f"platform-{n}",
            ["platform", "--config", str(config), "--store", store, "--worker", str(n),
             "--no-audit", "--spill", str(tmp_path / f"spill-{n}.sqlite"),
             "--http", f"{HOST}:{ports[n - 1]}"],
            tmp_path, service_env(),
        )  # fmt: skip
        for n in (1, 2)
    ]
    agents = {
        plant: Service(
            f"agent-{plant}",
            ["agent", "--plant", plant, "--config", str(config),
             "--outbox", str(tmp_path / f"{plant}-outbox.sqlite")],
            tmp_path, service_env(),
        )  # fmt: skip
        for plant in sorted(plants)
    }
    built = Rig(settings, tmp_path, mosquitto, nats_cluster, store, workers, ports, agents)
    for service in (*workers, *agents.values()):
        service.start()
    try:
        built.wait_ready()
        yield built
    finally:
        for service in (*agents.values(), *workers):
            service.stop()


@dataclass(frozen=True)
class StreamState:
    messages: int  # batches the stream holds
    numbered: int  # batches the agents numbered (the sum of each agent's last seq)
    pending: int  # not yet delivered to any worker
    unacknowledged: int  # delivered, not acknowledged
    redelivered: int


async def _stream_state(cluster: NatsCluster, plants: list[str]) -> StreamState:
    client = await nats.connect(cluster.urls, connect_timeout=2)
    try:
        js = client.jetstream()
        info = await js.stream_info(STREAM)
        numbered = 0
        for plant in plants:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                last = await js.get_last_msg(STREAM, f"carbonlink.v1.{plant}.telemetry")
                parsed = MessageId.parse((last.headers or {}).get(MSG_ID_HEADER, ""))
                assert parsed is not None, last.headers
                numbered += parsed.seq
        consumer = await js.consumer_info(STREAM, DURABLE)
        return StreamState(info.state.messages, numbered, consumer.num_pending or 0,
                           consumer.num_ack_pending or 0, consumer.num_redelivered or 0)  # fmt: skip
    finally:
        await client.close()


async def _leader(cluster: NatsCluster) -> int:
    """The index of the node that leads the telemetry stream."""
    client = await nats.connect(cluster.urls, connect_timeout=2)
    try:
        info = await client.jetstream().stream_info(STREAM)
        assert info.cluster is not None and info.cluster.leader is not None
        return [n.server_name for n in cluster.nodes].index(info.cluster.leader)
    finally:
        await client.close()


def _settled_stream(rig: Rig) -> StreamState:
    """Wait until every message the stream holds is acknowledged by a worker."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        state = asyncio.run(_stream_state(rig.cluster, rig.plants))
        if (state.pending == 0 and state.unacknowledged == 0) or time.monotonic() > deadline:
            return state
        time.sleep(0.25)


def _publish_and_account(rig: Rig, case: str, during: object = None,
                         *, pace_s: float = 0.005) -> tuple[int, StreamState]:  # fmt: skip
    plan = plan_readings(rig.settings.plants.values(), PER_METER, wall_clock_ms())
    asyncio.run(publish(HOST, rig.broker.port, plan.messages, during=during, pace_s=pace_s))  # type: ignore[arg-type]
    stored = settle(rig.store_url, rig.plants, len(plan.readings), timeout_s=120)
    state = _settled_stream(rig)
    rows = account(plan.readings, stored)
    report(case, rows, f"stream: {state.messages} batches held for {state.numbered} numbered "
                       f"by the agents, {state.redelivered} redelivered")  # fmt: skip
    assert all(r.exact for r in rows), rig.logs()
    assert sum(r.stored for r in rows) == len(plan.readings)
    assert state.messages == state.numbered, "a batch is held twice in the stream"
    return len(plan.readings), state


def test_two_workers_share_the_stream_and_store_each_reading_once(rig: Rig) -> None:
    published, state = _publish_and_account(rig, "JetStream: agents -> stream -> 2 workers")
    healths = [rig.health(0), rig.health(1)]
    received = [int(h["received"]) for h in healths]  # type: ignore[call-overload]
    stored = [int(h["stored"]) for h in healths]  # type: ignore[call-overload]
    assert all(received), f"a worker took nothing: {received}"
    assert sum(received) == published, "a reading reached the workers twice"
    assert sum(stored) == published
    # Every batch numbered, none missing: each worker counts the same, from the stream.
    assert [h["sequence_gaps"] for h in healths] == [0, 0]


def test_a_nats_node_and_a_worker_killed_mid_stream(rig: Rig) -> None:
    messages = len(plan_readings(rig.settings.plants.values(), PER_METER, 0).messages)
    leader = asyncio.run(_leader(rig.cluster))
    done: set[str] = set()

    def during(i: int) -> None:
        if i >= messages // 3 and "node" not in done:
            done.add("node")
            rig.cluster.nodes[leader].kill()  # the stream's leader: an election follows
        if i >= 2 * messages // 3 and "worker" not in done:
            done.add("worker")
            rig.workers[0].kill()  # SIGKILL: what it held unacknowledged goes to worker 2

    published, state = _publish_and_account(
        rig, "JetStream: stream leader node and worker 1 SIGKILLed mid-stream", during
    )
    survivor = rig.health(1)
    assert int(survivor["stored"]) + int(survivor["repeats"]) <= published  # type: ignore[call-overload]
    assert survivor["sequence_gaps"] == 0
    assert done == {"node", "worker"}


def test_a_stopped_worker_takes_nothing(rig: Rig) -> None:
    rig.workers[1].stop()  # a clean stop: it pulls nothing any more
    published, state = _publish_and_account(rig, "JetStream: worker 2 stopped")
    health = rig.health(0)
    # Worker 1 took every reading: nothing was dealt to the stopped worker and left there.
    assert int(health["received"]) == published  # type: ignore[call-overload]
    assert int(health["stored"]) == published  # type: ignore[call-overload]
    assert state.redelivered == 0


def test_hostile_messages_through_jetstream_are_dead_lettered_and_the_canary_lands(
    rig: Rig,
) -> None:
    plant = rig.plants[0]
    meter = next(m for m in rig.settings.plant(plant).meters if m.activity is not None)
    now = wall_clock_ms()
    subject = f"carbonlink.v1.{plant}.telemetry"

    def batch(agent: str, seq: int, value: float, claimed_plant: str = plant) -> bytes:
        reading = wire.Reading(meter.id, now - 1000, value, meter.unit, 1000, "good")
        return wire.encode_telemetry(
            wire.TelemetryBatch(claimed_plant, agent, seq, now, (reading,))
        )

    hostile = [
        b"\xff\xfe not json",
        b'{"v": 1, "plant": "' + plant.encode() + b'"}',
        batch(wire.agent_id(rig.plants[1]), 1, 0.001),  # another plant's agent
        batch(wire.agent_id(plant), 1, 1e12),  # implausible amount
    ]
    canary = batch(wire.agent_id(plant), 2, 0.001)

    async def send() -> list[dict[str, object]]:
        letters: list[dict[str, object]] = []
        async with aiomqtt.Client(HOST, rig.broker.port) as mqtt:
            await mqtt.subscribe(wire.deadletter_topic(plant), qos=1)
            client = await nats.connect(rig.cluster.urls, connect_timeout=2)
            try:
                js = client.jetstream()
                for payload in [*hostile, canary]:
                    await js.publish(subject, payload)
            finally:
                await client.close()
            async with asyncio.timeout(READY_TIMEOUT_S):
                async for message in mqtt.messages:
                    letters.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
                    if len(letters) == len(hostile):
                        break
        return letters

    letters = asyncio.run(send())
    reasons = sorted(str(letter["reason"]) for letter in letters)
    assert len(reasons) == len(hostile), reasons
    assert "implausible" in reasons, reasons
    stored = settle(rig.store_url, [plant], 1, timeout_s=60)
    assert {(s.meter, s.ts_ms, s.value) for s in stored} == {(meter.id, now - 1000, 0.001)}
    state = _settled_stream(rig)
    assert (state.pending, state.unacknowledged) == (0, 0)  # refused ones are terminated
    assert state.redelivered == 0
    refused = sum(int(rig.health(w)["rejected_by_platform"] and  # type: ignore[call-overload]
                      sum(rig.health(w)["rejected_by_platform"].values()))  # type: ignore[union-attr]
                  for w in (0, 1))  # fmt: skip
    assert refused == len(hostile)
    assert stored_readings(rig.store_url, [rig.plants[1]]) == set()
