"""Fault injection with exact loss accounting, on real Mosquitto and InfluxDB.

Two plants (a cement line, an EAF steel mill) with one agent each and the platform, all
as their own processes. Agents reach the broker, and the platform reaches InfluxDB,
through TCP proxies the test controls. Every case publishes a known set of readings
while a fault strikes, then compares, reading by reading, what InfluxDB holds with what
was published, and prints the table (``pytest -s``): zero lost, zero extra, zero changed.
Duplicated cannot be told apart from "stored once" in InfluxDB (a point with the same
series and time overwrites itself), so re-deliveries are reported from the platform's
own counters instead: received versus stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import yaml

from carbonlink.agent import Agent
from carbonlink.config import OutboxFullPolicy, Settings, load_config
from carbonlink.core.clock import wall_clock_ms
from carbonlink.mqtt.client import parse_broker_url
from tests.configs import write_config
from tests.faults.harness import (
    REPORTS,
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
from tests.servers import HOST, InfluxDBServer, MosquittoServer, free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

PER_METER: Final = 200  # readings per interval meter: 5 meters, 1,000 readings a case
INFLUX_DOWN_S: Final = 60.0
READY_TIMEOUT_S: Final = 90.0  # processes import pandas, FastAPI...: slow on a busy machine


@dataclass
class Rig:
    settings: Settings
    work: Path
    broker: MosquittoServer
    influx: InfluxDBServer
    database: str
    agent_link: TcpProxy
    store_link: TcpProxy
    platform: Service
    agents: dict[str, Service]
    http_port: int

    @property
    def store_url(self) -> str:
        """InfluxDB itself, for counting (the platform goes through ``store_link``)."""
        return self.influx.store_url(self.database)

    @property
    def plants(self) -> list[str]:
        return sorted(self.settings.plants)

    def agent(self, plant: str, config: Path | None = None) -> Service:
        return Service(
            f"agent-{plant}",
            ["agent", "--plant", plant, "--config", str(config or self.settings.path),
             "--broker", f"mqtt://{self.agent_link.url}",
             "--outbox", str(self.work / f"{plant}-outbox.sqlite")],
            self.work, service_env(),
        )  # fmt: skip

    def wait_ready(self) -> None:
        """The platform answers, and has seen every agent come online."""

        def states() -> dict[str, str]:
            agents = platform_health(self.http_port).get("ingestion") or {}
            return agents.get("agents", {}) if isinstance(agents, dict) else {}  # type: ignore[no-any-return]

        def stopped() -> list[str]:
            return [s.name for s in (self.platform, *self.agents.values()) if not s.running]

        wait_for(
            lambda: all(states().get(p) == "online" for p in self.plants),
            "the platform to see every agent online", READY_TIMEOUT_S,
            abort_if=stopped, detail=lambda: f"{states()}\n{self.logs()}",
        )  # fmt: skip

    def received(self) -> int:
        ingestion = platform_health(self.http_port).get("ingestion") or {}
        return int(ingestion.get("received", 0)) if isinstance(ingestion, dict) else 0

    def logs(self) -> str:
        services = [self.platform, *self.agents.values()]
        return "\n".join(f"--- {s.name}\n{s.log_tail()}" for s in services)


@pytest.fixture
def rig(tmp_path: Path, topic_prefix: str) -> Iterator[Rig]:
    plants = {f"{topic_prefix}-cement": "cement-01", f"{topic_prefix}-steel": "steel-01"}
    with (
        MosquittoServer(tmp_path / "mosquitto") as broker,
        InfluxDBServer(tmp_path / "influxdb") as influx,
    ):
        database = "faults"
        influx.create_database(database)
        config = write_config(tmp_path / "config", plants=plants, broker_url=broker.url,
                              client_id=f"platform-{topic_prefix}")  # fmt: skip
        settings = load_config(config)
        agent_link, store_link = TcpProxy(broker.port), TcpProxy(influx.port)
        http_port = free_port()
        platform = Service(
            "platform",
            ["platform", "--config", str(config), "--broker", broker.url,
             "--store", f"influxdb://{store_link.url}/{database}",
             "--spill", str(tmp_path / "spill.sqlite"), "--http", f"{HOST}:{http_port}"],
            tmp_path, service_env(),
        )  # fmt: skip
        built = Rig(settings, tmp_path, broker, influx, database, agent_link, store_link,
                    platform, {}, http_port)  # fmt: skip
        built.agents = {p: built.agent(p) for p in built.plants}
        platform.start()
        for agent in built.agents.values():
            agent.start()
        try:
            built.wait_ready()
            yield built
        finally:
            for service in (*built.agents.values(), platform):
                service.stop()
            agent_link.close()
            store_link.close()


def _run(rig: Rig, case: str, during: object = None, *, pace_s: float = 0.002,
         timeout_s: float = 120.0, platform_restarted: bool = False) -> None:  # fmt: skip
    """Publish the plan with the fault in ``during``, settle, account, assert exact."""
    plan = plan_readings(rig.settings.plants.values(), PER_METER, wall_clock_ms())
    asyncio.run(publish(HOST, rig.broker.port, plan.messages, during=during, pace_s=pace_s))  # type: ignore[arg-type]
    stored = settle(rig.store_url, rig.plants, len(plan.readings), timeout_s=timeout_s)
    rows = account(plan.readings, stored)
    received = rig.received()
    if platform_restarted:  # the killed process took its counters with it
        note = f"the restarted platform received {received} of the readings"
    else:
        redelivered = max(0, received - len(stored))
        note = (f"platform received {received} readings for {len(plan.readings)} published "
                f"(re-deliveries absorbed by idempotent writes: {redelivered})")  # fmt: skip
    report(case, rows, note)
    assert all(r.exact for r in rows), rig.logs()
    assert sum(r.stored for r in rows) == len(plan.readings)


def _at(fraction: float, total: int) -> int:
    return int(total * fraction)


def test_broker_restart(rig: Rig) -> None:
    messages = 2 * 3 * PER_METER // 10  # two plants, ~3 interval meters, 10 per message
    done: set[str] = set()

    def during(i: int) -> None:
        if i >= _at(0.5, messages) and "restart" not in done:
            done.add("restart")
            rig.broker.restart()  # persistence on: sessions and queued messages survive

    _run(rig, "broker restarted mid-stream", during)


def test_influxdb_down_for_60_s(rig: Rig) -> None:
    stopped: list[float] = []

    def during(i: int) -> None:
        if i == 20 and not stopped:
            rig.influx.stop()
            stopped.append(time.monotonic())

    plan_started = time.monotonic()
    try:
        # Publish everything while InfluxDB is down: the platform spills to disk.
        _publish_then(rig, during, lambda: _restart_influx_after(rig, stopped))
    finally:
        if not rig.influx.is_running:
            rig.influx.start()
    assert time.monotonic() - plan_started >= INFLUX_DOWN_S


def _restart_influx_after(rig: Rig, stopped: list[float]) -> None:
    def spilled() -> object:
        return (platform_health(rig.http_port).get("ingestion") or {}).get("spilled", 0)  # type: ignore[union-attr]

    wait_for(spilled, "readings in the spill file while InfluxDB is down", INFLUX_DOWN_S / 2)
    # The outage's length is what is tested: time passing, not a wait for an event.
    time.sleep(max(0.0, stopped[0] + INFLUX_DOWN_S - time.monotonic()))
    rig.influx.start()  # from the main thread: the server must outlive this call


def _publish_then(
    rig: Rig, during: object, then: object, case: str = "InfluxDB down for 60 s"
) -> None:
    plan = plan_readings(rig.settings.plants.values(), PER_METER, wall_clock_ms())
    asyncio.run(publish(HOST, rig.broker.port, plan.messages, during=during, pace_s=0.002))  # type: ignore[arg-type]
    wait_for(
        lambda: rig.received() >= len(plan.readings),
        "the platform to take in every reading the agents forward", INFLUX_DOWN_S / 2,
        detail=lambda: f"received {rig.received()} of {len(plan.readings)}\n{rig.logs()}",
    )  # fmt: skip
    then()  # type: ignore[operator]
    stored = settle(rig.store_url, rig.plants, len(plan.readings), timeout_s=180)
    rows = account(plan.readings, stored)
    report(case, rows, f"platform received {rig.received()} readings")
    assert all(r.exact for r in rows), rig.logs()


def test_influxdb_slow(rig: Rig) -> None:
    def during(i: int) -> None:
        rig.store_link.delay_s = 0.4 if 10 <= i < 90 else 0.0  # every write waits 0.4 s each way

    _run(rig, "InfluxDB slow (0.4 s each way on every chunk)", during)


def test_platform_sigkill_and_restart(rig: Rig) -> None:
    done: set[str] = set()

    def during(i: int) -> None:
        if i == 50 and "kill" not in done:
            done.add("kill")
            rig.platform.kill()
        if i == 70 and "start" not in done:
            done.add("start")
            rig.platform.start()

    _run(rig, "platform SIGKILL, restarted 20 messages later", during, pace_s=0.02,
         platform_restarted=True)  # fmt: skip


def test_agent_sigkill_with_readings_in_its_outbox(rig: Rig) -> None:
    """The agents hold their readings (a 10-minute batching delay), are killed, and come
    back with ordinary batching: what was in the outbox is sent, nothing else lost."""
    slow = rig.work / "slow-agents.yaml"
    raw = yaml.safe_load(rig.settings.path.read_text())
    raw["agent"].update(batch_max_delay_s=600, batch_max_readings=10_000)
    raw["plants_dir"] = str(rig.settings.path.parent / raw["plants_dir"])
    raw["factors_dir"] = str(rig.settings.path.parent / raw["factors_dir"])
    slow.write_text(yaml.safe_dump(raw))
    for plant, agent in rig.agents.items():
        agent.stop()
        rig.agents[plant] = rig.agent(plant, slow)
        rig.agents[plant].start()
    rig.wait_ready()
    plan = plan_readings(rig.settings.plants.values(), PER_METER, wall_clock_ms())
    asyncio.run(publish(HOST, rig.broker.port, plan.messages, pace_s=0.002))

    def outboxes() -> int:
        return sum(_outbox_depth(rig.work / f"{p}-outbox.sqlite") for p in rig.plants)

    wait_for(
        lambda: outboxes() >= len(plan.readings), "the outboxes to hold every reading",
        READY_TIMEOUT_S, detail=lambda: f"outboxes hold {outboxes()} of {len(plan.readings)}",
    )  # fmt: skip
    held = outboxes()
    assert held == len(plan.readings), f"outboxes hold {held} of {len(plan.readings)}"
    assert not stored_readings(rig.store_url, rig.plants)  # nothing forwarded yet
    for plant in rig.plants:
        rig.agents[plant].kill()
        rig.agents[plant] = rig.agent(plant)  # back with the ordinary config
        rig.agents[plant].start()
    stored = settle(rig.store_url, rig.plants, len(plan.readings))
    rows = account(plan.readings, stored)
    report("agents SIGKILLed holding every reading in their outboxes", rows,
           f"{held} readings were in the outboxes at the kill")  # fmt: skip
    assert all(r.exact for r in rows), rig.logs()


def _outbox_depth(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM queue").fetchone()[0])


def test_network_cut_between_agents_and_broker(rig: Rig) -> None:
    def during(i: int) -> None:
        if i == 20:
            rig.agent_link.cut()  # the meters go on reporting to the broker meanwhile
        if i == 100:
            rig.agent_link.restore()

    _run(rig, "network cut between agents and broker, then restored", during, pace_s=0.05)


# --- the outbox's disk full ---------------------------------------------------------------

TINY_DISK: Final = "1m"
DISK_READINGS: Final = 20_000


@contextlib.contextmanager
def _tiny_disk(path: Path) -> Iterator[str]:
    """A tmpfs of TINY_DISK when this machine lets us mount one (a real full disk),
    else nothing: the test then caps the outbox file's pages instead (the same
    SQLITE_FULL error from SQLite, "database or disk is full")."""
    path.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={TINY_DISK}", "tmpfs", str(path)]
    mounted = subprocess.run(command, capture_output=True, check=False).returncode == 0
    try:
        yield "tmpfs" if mounted else "page limit"
    finally:
        if mounted:
            done = subprocess.run(
                ["umount", str(path)], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, f"umount {path}: {done.stderr}"


@pytest.mark.parametrize("policy", list(OutboxFullPolicy))
def test_outbox_disk_full(tmp_path: Path, policy: OutboxFullPolicy) -> None:
    """The agent holds readings (long batching) until its outbox's disk is full: every
    reading is then either kept, or refused with reason outbox_full ("disk full") and
    counted: nothing goes unaccounted, and the agent keeps serving."""
    plant = load_config(
        write_config(tmp_path / "config", plants={"disk-cement": "cement-01"})
    ).plant("disk-cement")
    from carbonlink.config import AgentConfig

    config = AgentConfig(batch_max_delay_s=600, batch_max_readings=10_000,
                         outbox_full_policy=policy, outbox_max_readings=10_000_000)  # fmt: skip
    with _tiny_disk(tmp_path / "disk") as kind:
        outbox = tmp_path / "disk" / "outbox.sqlite"
        agent = Agent(plant, parse_broker_url("mqtt://127.0.0.1:9"), config,
                      outbox_path=outbox, now_ms=wall_clock_ms)  # fmt: skip
        try:  # closed before the disk is unmounted, whatever happens
            if kind == "page limit":
                agent._outbox._db.execute("PRAGMA max_page_count=256")  # ~1 MiB of 4 KiB pages
            from carbonlink import wire

            now = wall_clock_ms()
            topic = wire.meter_topic(plant.id, "kiln-coal")
            for i in range(DISK_READINGS):
                agent.handle(topic, (f'{{"v":1,"unit":"t","ts":{now - (DISK_READINGS - i) * 1000},'
                                     f'"value":0.006,"dur":1}}').encode())  # fmt: skip
            kept = agent.outbox_depth
            refused = agent.counters.rejected.get("outbox_full", 0)
            dropped = agent.counters.dropped_oldest
            text = (f"\nfault: outbox disk full ({kind} of {TINY_DISK}, policy {policy})\n"
                    f"  {DISK_READINGS} readings: {kept} kept, {refused} refused (outbox_full), "
                    f"{dropped} dropped oldest")  # fmt: skip
            print(text)
            REPORTS.append(text)
            assert kept + refused + dropped == DISK_READINGS  # every reading accounted for
            assert refused + dropped > 0, "the disk never filled"
            kept_ts = [json.loads(item)[1] for _, item in agent._outbox.peek(kept)]
            sent_ts = [now - (DISK_READINGS - i) * 1000 for i in range(DISK_READINGS)]
            if policy is OutboxFullPolicy.REJECT_NEW:
                assert dropped == 0
                assert kept_ts == sent_ts[:kept]  # exactly the oldest: the newest refused
            else:
                # The disk stays usable: the oldest make way, the newest are all kept.
                assert refused == 0
                assert kept_ts == sent_ts[-kept:]
            # A full disk still holds thousands of readings: SQLite's log is folded
            # back into the file before anything is refused.
            assert kept > 1_000
            # Forgetting what was sent still works on the full disk (the reserve pays).
            sent_ids = [row_id for row_id, _ in agent._outbox.peek(10)]
            agent._outbox.remove_through(sent_ids[-1])
            assert agent.outbox_depth == kept - 10
        finally:
            agent._outbox.close()
