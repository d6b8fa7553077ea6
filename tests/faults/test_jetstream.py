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
import functools
import json
import uuid
from collections.abc import Callable, Iterator
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
    REPORTS,
    Plan,
    Published,
    Service,
    TcpProxy,
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
from tests.waiting import WaitTimeoutError, wait_for

pytestmark = pytest.mark.slow

PER_METER: Final = 100  # readings per interval meter: two plants, ~600 readings a case
BATCH_READINGS: Final = 25  # small batches: many messages for the workers to share
# Generous: four Python services start at once on a machine shared with other jobs.
READY_TIMEOUT_S: Final = 150.0
ACK_WAIT_S: Final = 4.0  # short, so a dead worker's messages move on within the test
FETCH_BATCH: Final = 4  # messages per pull (see the rig)
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
    store_link: TcpProxy  # worker 1's way to InfluxDB, to slow it down
    foreign: int = 0  # messages put in the stream by a test, not by the agents

    @property
    def plants(self) -> list[str]:
        return sorted(self.settings.plants)

    def health(self, worker: int) -> dict[str, object]:
        ingestion = platform_health(self.http_ports[worker]).get("ingestion")
        return ingestion if isinstance(ingestion, dict) else {}

    def wait_ready(self, workers: list[int] | None = None) -> None:
        """Each worker answers, pulls from JetStream and has seen every agent online."""

        def ready(worker: int) -> bool:
            health = self.health(worker)
            states = health.get("agents")
            online = isinstance(states, dict) and all(
                states.get(p) == "online" for p in self.plants
            )
            return bool(health.get("connected")) and online

        for worker in range(len(self.workers)) if workers is None else workers:
            wait_for(
                functools.partial(ready, worker),
                f"worker {worker + 1} to pull and see every agent",
                READY_TIMEOUT_S, detail=self.logs,
            )  # fmt: skip

    def logs(self) -> str:
        services = [*self.workers, *self.agents.values()]
        return "\n".join(f"--- {s.name}\n{s.log_tail()}" for s in services)


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoServer, influxdb: InfluxDBServer
) -> Iterator[Rig]:
    """One rig for the module (starting four services is the slow part): each case
    accounts for its own readings, and the cases that stop or kill run last."""
    tmp_path = tmp_path_factory.mktemp("jetstream")
    topic_prefix = f"t-{uuid.uuid4().hex[:10]}"
    influx_database = f"db_{uuid.uuid4().hex[:10]}"
    influxdb.create_database(influx_database)
    plants = {f"{topic_prefix}-cement": "cement-01", f"{topic_prefix}-steel": "steel-01"}
    config = write_config(tmp_path / "config", plants=plants, broker_url=mosquitto.url,
                          client_id=f"platform-{topic_prefix}")  # fmt: skip
    raw = yaml.safe_load(config.read_text())
    raw["agent"]["uplink"] = "jetstream"
    raw["agent"]["batch_max_readings"] = BATCH_READINGS
    raw["platform"]["intake"] = "jetstream"
    nats_cluster = NatsCluster(tmp_path / "nats")
    nats_cluster.start()
    # Small pulls: JetStream serves waiting pull requests in order, so with the default
    # (256) the first worker's pending pull takes every batch of a plan this small and the
    # other takes nothing (CI saw [0, 600]). Sharing a light load needs pulls that end.
    raw["jetstream"] = {
        "servers": nats_cluster.urls,
        "ack_wait_s": ACK_WAIT_S,
        "fetch_batch": FETCH_BATCH,
    }
    config.write_text(yaml.safe_dump(raw))
    settings = load_config(config)
    store = influxdb.store_url(influx_database)
    ports = [free_port(), free_port()]
    store_link = TcpProxy(influxdb.port)
    stores = [f"influxdb://{store_link.url}/{influx_database}", store]
    workers = []
    for n in (1, 2):
        args = ["platform", "--config", str(config), "--store", stores[n - 1], "--worker", str(n),
                "--no-audit", "--spill", str(tmp_path / f"spill-{n}.sqlite"),
                "--http", f"{HOST}:{ports[n - 1]}"]  # fmt: skip
        workers.append(Service(f"platform-{n}", args, tmp_path, service_env()))
    agents = {}
    for plant in sorted(plants):
        args = ["agent", "--plant", plant, "--config", str(config),
                "--outbox", str(tmp_path / f"{plant}-outbox.sqlite")]  # fmt: skip
        agents[plant] = Service(f"agent-{plant}", args, tmp_path, service_env())
    built = Rig(settings, tmp_path, mosquitto, nats_cluster, store, workers, ports, agents,
                store_link)  # fmt: skip
    for service in (*workers, *agents.values()):
        service.start()
    try:
        built.wait_ready()
        yield built
    finally:
        for service in (*agents.values(), *workers):
            service.stop()
        nats_cluster.stop()
        store_link.close()
        influxdb.drop_database(influx_database)


@dataclass(frozen=True)
class StreamState:
    messages: int  # batches the stream holds
    numbered: int  # batches the agents numbered (the sum of each agent's last seq)
    pending: int  # not yet delivered to any worker
    unacknowledged: int  # delivered, not acknowledged
    waiting: int  # pull requests the consumer holds (each pulling worker keeps one)
    leader: str  # the node that leads the consumer (its pulls go there)


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
                numbered += parsed.seq if parsed is not None else 0  # None: not an agent's
        consumer = await js.consumer_info(STREAM, DURABLE)
        return StreamState(
            info.state.messages,
            numbered,
            consumer.num_pending or 0,
            consumer.num_ack_pending or 0,
            consumer.num_waiting or 0,
            str(consumer.cluster.leader if consumer.cluster else None),
        )
    finally:
        await client.close()


async def _leader(cluster: NatsCluster) -> int:
    """The index of the node that leads the telemetry stream."""
    client = await nats.connect(cluster.urls, connect_timeout=2)
    try:
        info = await client.jetstream().stream_info(STREAM)
        assert info.cluster is not None
        assert info.cluster.leader is not None
        return [n.server_name for n in cluster.nodes].index(info.cluster.leader)
    finally:
        await client.close()


def _settled_stream(rig: Rig) -> StreamState:
    """Wait until every message the stream holds is acknowledged by a worker."""
    states: list[StreamState] = []

    def settled() -> bool:
        states.append(asyncio.run(_stream_state(rig.cluster, rig.plants)))
        return states[-1].pending == 0 and states[-1].unacknowledged == 0

    # Not settling is for the caller to report, with the counts: return the last state.
    with contextlib.suppress(WaitTimeoutError):
        wait_for(settled, "every message in the stream acknowledged", READY_TIMEOUT_S)
    return states[-1]


def _plan(rig: Rig, now_ms: int, since_ms: int) -> Plan:
    """The harness's plan squeezed in between ``since_ms`` (the newest reading stored
    before) and now, at most a reading a second: the cases follow each other within
    seconds on one rig, and a reading over an interval an earlier case already covered
    would be refused as an overlap."""
    step_ms = max(1, min(1000, (now_ms - since_ms) // (PER_METER + 1)))
    plan = plan_readings(rig.settings.plants.values(), PER_METER, now_ms)
    readings = [
        Published(r.plant, r.meter, now_ms - (now_ms - r.ts_ms) // 1000 * step_ms,
                  round(r.value * step_ms / 1000, 12))
        for r in plan.readings
    ]  # fmt: skip
    by_meter: dict[tuple[str, str], list[Published]] = {}
    for r in readings:
        by_meter.setdefault((r.plant, r.meter), []).append(r)
    messages = []
    for (plant, meter), rows in by_meter.items():
        unit = rig.settings.plant(plant).meter(meter).unit  # type: ignore[union-attr]
        for first in range(0, len(rows), 10):
            samples = [{"ts": r.ts_ms, "value": r.value, "dur": step_ms / 1000}
                       for r in rows[first : first + 10]]  # fmt: skip
            body = {"v": wire.WIRE_VERSION, "unit": unit, "samples": samples}
            messages.append((wire.meter_topic(plant, meter), json.dumps(body).encode()))
    messages.sort(key=lambda m: json.loads(m[1])["samples"][0]["ts"])
    return Plan(messages, readings)


def _publish_and_account(
    rig: Rig,
    case: str,
    during: object = None,
    *,
    pace_s: float = 0.005,
    then: Callable[[], None] | None = None,
) -> tuple[int, StreamState]:
    """Publish a plan, wait until it is stored and the stream fully acknowledged, and
    account for this plan's readings (earlier cases' readings are older)."""
    earlier = stored_readings(rig.store_url, rig.plants)
    before = len(earlier)
    plan = _plan(rig, wall_clock_ms(), max((r.ts_ms for r in earlier), default=0))
    first_ms = min(r.ts_ms for r in plan.readings)
    asyncio.run(publish(HOST, rig.broker.port, plan.messages, during=during, pace_s=pace_s))  # type: ignore[arg-type]
    if then is not None:
        then()
    # Generous: under load a worker may spill a batch and store it on its next drain.
    stored = settle(rig.store_url, rig.plants, before + len(plan.readings), timeout_s=300)
    stored = {r for r in stored if r.ts_ms >= first_ms}
    state = _settled_stream(rig)
    rows = account(plan.readings, stored)
    report(case, rows, f"stream: {state.messages} batches held for {state.numbered} numbered "
                       f"by the agents")  # fmt: skip
    assert all(r.exact for r in rows), rig.logs()
    assert sum(r.stored for r in rows) == len(plan.readings)
    assert state.messages - rig.foreign == state.numbered, "a batch is held twice in the stream"
    return len(plan.readings), state


def _counter(rig: Rig, worker: int, name: str) -> int:
    value = rig.health(worker).get(name, 0)
    assert isinstance(value, int), (name, value)
    return value


def test_two_workers_share_the_stream_and_store_each_reading_once(rig: Rig) -> None:
    before = [(_counter(rig, w, "received"), _counter(rig, w, "stored")) for w in (0, 1)]
    # Paced so that the batches reach the stream over ~2 s, many 1-s pulls of 4: with
    # everything at once a pull-based queue owes no worker a share.
    published, state = _publish_and_account(
        rig, "JetStream: agents -> stream -> 2 workers", pace_s=0.03
    )
    received = [_counter(rig, w, "received") - before[w][0] for w in (0, 1)]
    stored = [_counter(rig, w, "stored") - before[w][1] for w in (0, 1)]
    assert all(received), (
        f"a worker took nothing: {received}; {state}; "
        f"health: {[rig.health(w) for w in (0, 1)]}\n{rig.logs()}"
    )
    assert sum(received) == published, "a reading reached the workers twice"
    assert sum(stored) == published
    # Every batch numbered, none missing: each worker counts the same, from the stream.
    assert [_counter(rig, w, "sequence_gaps") for w in (0, 1)] == [0, 0]


def test_hostile_messages_through_jetstream_are_dead_lettered_and_the_canary_lands(
    rig: Rig,
) -> None:
    plant = rig.plants[0]
    meter = next(m for m in rig.settings.plant(plant).meters if m.activity is not None)
    at = wall_clock_ms() - 200  # after every reading of the cases before: no overlap
    subject = f"carbonlink.v1.{plant}.telemetry"

    def batch(agent: str, seq: int, value: float, quality: str = "measured") -> bytes:
        reading = wire.Reading(meter.id, at, value, meter.unit, 1000, quality)
        return wire.encode_telemetry(wire.TelemetryBatch(plant, agent, seq, at, (reading,)))

    hostile = [
        b"\xff\xfe not json",
        b'{"v": 1, "plant": "' + plant.encode() + b'"}',
        batch(wire.agent_id(rig.plants[1]), 10**6, 0.001),  # another plant's agent
        batch(wire.agent_id(plant), 10**6, 0.001, quality="excellent"),
    ]
    canary = batch(wire.agent_id(plant), 10**6 + 1, 0.001)
    refused_before = sum(_refused(rig, w) for w in (0, 1))
    redelivered = sum(_counter(rig, w, "redelivered") for w in (0, 1))

    async def send() -> list[dict[str, object]]:
        letters: list[dict[str, object]] = []
        async with aiomqtt.Client(HOST, rig.broker.port) as mqtt:
            await mqtt.subscribe(wire.deadletter_topic(plant), qos=1)
            client = await nats.connect(rig.cluster.urls, connect_timeout=2)
            try:
                js = client.jetstream()
                for payload in [*hostile, canary]:
                    await js.publish(subject, payload)
                    rig.foreign += 1
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
    assert reasons == ["bad_quality", "bad_schema", "malformed_json", "unknown_agent"]
    wait_for(
        lambda: (meter.id, at, 0.001) in _stored_at(rig, plant, at), "the canary to land",
        READY_TIMEOUT_S, detail=rig.logs,
    )  # fmt: skip
    assert _stored_at(rig, plant, at) == {(meter.id, at, 0.001)}
    state = _settled_stream(rig)
    assert (state.pending, state.unacknowledged) == (0, 0)  # refused ones are terminated
    assert _counter(rig, 0, "redelivered") + _counter(rig, 1, "redelivered") == redelivered
    assert sum(_refused(rig, w) for w in (0, 1)) - refused_before == len(hostile)


def _refused(rig: Rig, worker: int) -> int:
    by_reason = rig.health(worker).get("rejected_by_platform") or {}
    assert isinstance(by_reason, dict)
    return sum(int(n) for n in by_reason.values())


def _stored_at(rig: Rig, plant: str, ts_ms: int) -> set[tuple[str, int, float]]:
    return {(r.meter, r.ts_ms, r.value) for r in stored_readings(rig.store_url, [plant])
            if r.ts_ms == ts_ms}  # fmt: skip


def test_a_stopped_worker_takes_nothing(rig: Rig) -> None:
    rig.workers[1].stop()  # a clean stop: it pulls nothing any more
    received = _counter(rig, 0, "received")
    redelivered = _counter(rig, 0, "redelivered")
    try:
        published, _ = _publish_and_account(rig, "JetStream: worker 2 stopped")
        # Worker 1 took every reading: nothing was dealt to the stopped worker.
        assert _counter(rig, 0, "received") - received == published
        assert _counter(rig, 0, "redelivered") == redelivered
    finally:
        rig.workers[1].start()
        rig.wait_ready([1])


def test_a_nats_node_and_a_worker_killed_mid_stream(rig: Rig) -> None:
    messages = len(_plan(rig, 1_000_000, 0).messages)
    leader = asyncio.run(_leader(rig.cluster))
    repeats = _counter(rig, 1, "repeats")
    redelivered = _counter(rig, 1, "redelivered")
    done: set[str] = set()

    def during(i: int) -> None:
        if i >= messages // 3 and "node" not in done:
            done.add("node")
            rig.cluster.nodes[leader].kill()  # the stream's leader: an election follows

    def kill_worker_holding_messages() -> None:
        """SIGKILL worker 1 once it holds messages it has not acknowledged (received,
        not yet stored: its writes are slowed down); those go to worker 2."""
        wait_for(
            lambda: _counter(rig, 0, "received") > _counter(rig, 0, "stored") + received_before,
            "worker 1 to hold a message it has not acknowledged", READY_TIMEOUT_S,
            detail=rig.logs,
        )  # fmt: skip
        rig.workers[0].kill()
        done.add("worker")

    # What worker 1 received but did not store before this case (refusals, repeats).
    received_before = _counter(rig, 0, "received") - _counter(rig, 0, "stored")
    rig.store_link.delay_s = 0.5  # worker 1's writes take a while: it holds messages

    published, _ = _publish_and_account(
        rig, "JetStream: stream leader node and worker 1 SIGKILLed mid-stream", during,
        then=kill_worker_holding_messages,
    )  # fmt: skip
    assert done == {"node", "worker"}
    taken_over = _counter(rig, 1, "redelivered") - redelivered
    REPORTS.append(f"  worker 2 was delivered {taken_over} messages again (worker 1 died "
                   f"holding them); it found {_counter(rig, 1, 'repeats') - repeats} of their "
                   "readings stored already")  # fmt: skip
    assert taken_over > 0, "worker 1 died holding nothing: the case proved nothing"
    # Worker 2 counted what it found stored already (a batch worker 1 wrote, then died
    # before acknowledging) as repeats, never as stored twice.
    assert _counter(rig, 1, "repeats") - repeats <= published
    assert _counter(rig, 1, "sequence_gaps") == 0
