"""A running pipeline to throw bad input at: real Mosquitto, real InfluxDB, and the real
``carbonlink agent`` and ``carbonlink platform`` processes, as an operator would run them.

Two plants are configured:

- ``meter_plant`` has its agent running: meter messages go through the agent, which
  validates them and forwards telemetry to the platform;
- ``direct_plant`` has no agent: the test plays its agent and publishes telemetry straight
  to the platform, because the platform must not trust what an agent sends;
- ``sim_plant`` has its simulator running (``carbonlink simulate`` in real time) and no
  agent: directives go to it.

Every case ends with a *canary*, a valid reading sent after the bad input on the same
path. Brokers deliver one publisher's messages in order and each service handles its
messages one after the other, so once the canary is stored, the bad input before it has
been handled: its refusals are counted and no later message was lost because of it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from carbonlink import wire
from carbonlink.platform import open_store
from carbonlink.storage import epoch_ms
from tests.configs import write_config
from tests.faults.harness import Service, service_env
from tests.servers import HOST, InfluxDBServer, MosquittoServer, free_port
from tests.waiting import wait_for

CANARY_TIMEOUT_S: Final = 20.0
STARTUP_TIMEOUT_S: Final = 90.0  # a service process imports pandas, FastAPI...: slow when busy
MINUTE_MS: Final = 60_000


@dataclass
class Observer:
    """Every message under the topic root, as a subscriber sees it (dead letters most)."""

    broker: MosquittoServer
    messages: queue.Queue[tuple[str, bytes, bool]] = field(default_factory=queue.Queue)
    deadletters: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"observer-{uuid.uuid4().hex[:8]}"
        )
        subscribed = threading.Event()
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect(self.broker.host, self.broker.port)
        self._client.subscribe(f"{wire.TOPIC_ROOT}/+/deadletter", qos=1)
        self._client.loop_start()
        if not subscribed.wait(10):
            raise AssertionError("observer could not subscribe")

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def _on_message(self, _client: mqtt.Client, _data: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.deadletters.append(json.loads(message.payload))

    def count(self) -> int:
        with self._lock:
            return len(self.deadletters)

    def since(self, start: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.deadletters[start:])


class Publisher:
    """A meter, gateway or rogue agent: publishes at QoS 1 over MQTT 5 and waits for the
    broker's acknowledgement, so what it sent is at the broker when publish returns."""

    def __init__(self, broker: MosquittoServer) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"publisher-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)
        if not info.is_published():
            raise AssertionError(f"broker did not take the publish to {topic!r}")

    def clear_retained(self, topic: str) -> None:
        self.publish(topic, b"", retain=True)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@dataclass
class Pipeline:
    """Mosquitto, InfluxDB, the platform and one plant's agent, as real processes."""

    directory: Path
    broker: MosquittoServer
    influxdb: InfluxDBServer
    database: str
    meter_plant: str
    direct_plant: str
    sim_plant: str
    platform_port: int = field(default_factory=free_port)
    agent_port: int = field(default_factory=free_port)
    _canary_ms: int = 0
    _direct_seq: int = 0
    _outboxes: int = 0
    _canaries: list[tuple[str, str, int, float]] = field(default_factory=list)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.config = write_config(
            self.directory / "config",
            plants={
                self.meter_plant: "cement-01",
                self.direct_plant: "cement-01",
                self.sim_plant: "textiles-01",
            },
            broker_url=self.broker.url.replace("mqtt", "mqtt", 1),
            store=self.store_url,
        )
        env = service_env()
        self.platform = Service(
            "platform",
            ["platform", "--config", str(self.config), "--broker", self.broker.url,
             "--store", self.store_url, "--spill", str(self.directory / "spill.sqlite"),
             "--http", f"{HOST}:{self.platform_port}"],
            self.directory, env,
        )  # fmt: skip
        self.agent = Service(
            "agent",
            ["agent", "--config", str(self.config), "--broker", self.broker.url,
             "--plant", self.meter_plant, "--outbox", str(self.directory / "outbox.sqlite"),
             "--http", f"{HOST}:{self.agent_port}"],
            self.directory, env,
        )  # fmt: skip
        self.simulator = Service(
            "simulator",
            ["simulate", "--config", str(self.config), "--broker", self.broker.url,
             "--plants", self.sim_plant, "--speed", "1"],
            self.directory, env,
        )  # fmt: skip
        self.observer = Observer(self.broker)
        self.observer.start()
        self.publisher = Publisher(self.broker)
        self.start_platform()
        self.start_agent()
        self.simulator.start()
        # Canaries count up from three days ago, one a minute apart: inside the agent's
        # clock window, and never overlapping each other's interval.
        self._canary_ms = (int(time.time()) // 60 * 60 - 3 * 86_400) * 1000

    def start_platform(self) -> None:
        self.platform.start()
        wait_for(
            lambda: (self.platform_health().get("ingestion") or {}).get("connected"),
            "the platform to subscribe", STARTUP_TIMEOUT_S,
            abort_if=lambda: not self.platform.running, detail=self.platform.log_tail,
        )  # fmt: skip

    def restart_agent(self, *, fresh: bool = False) -> None:
        """Stop the agent and start it again; ``fresh``: with a new, empty outbox (so it
        remembers no earlier reading: a case about a meter's history starts clean)."""
        self.agent.stop()
        if fresh:
            self._outboxes += 1
            outbox = self.directory / f"outbox-{self._outboxes}.sqlite"
            self.agent.args[self.agent.args.index("--outbox") + 1] = str(outbox)
        self.start_agent()

    def start_agent(self) -> None:
        self.agent.start()
        wait_for(
            lambda: (self.agent_view() or {}).get("connected"),
            "the agent to subscribe", STARTUP_TIMEOUT_S,
            abort_if=lambda: not self.agent.running, detail=self.agent.log_tail,
        )  # fmt: skip

    def stop(self) -> None:
        for service in (self.simulator, self.agent, self.platform):
            service.stop()
        self.publisher.close()
        self.observer.stop()

    @property
    def store_url(self) -> str:
        return f"influxdb://{self.influxdb.host}:{self.influxdb.port}/{self.database}"

    # --- what the services say ---------------------------------------------------------

    def platform_health(self) -> dict[str, Any]:
        try:
            answer = httpx.get(
                f"http://{HOST}:{self.platform_port}/api/v1/health", timeout=5, trust_env=False
            )
        except httpx.HTTPError:
            return {}
        data: dict[str, Any] = answer.json()
        return data

    def agent_view(self) -> dict[str, Any]:
        try:
            answer = httpx.get(f"http://{HOST}:{self.agent_port}/view", timeout=5, trust_env=False)
        except httpx.HTTPError:
            return {}
        data: dict[str, Any] = answer.json()
        return data

    def refusals(self) -> dict[str, dict[str, int]]:
        """Refusals so far by stage and reason, as each service counts them."""
        ingestion = self.platform_health().get("ingestion") or {}
        agent = (self.agent_view().get("counters") or {}).get("rejected") or {}
        own = ingestion.get("rejected_by_platform") or {}
        return {"platform": dict(own), "agent": dict(agent)}

    def alive(self) -> dict[str, bool]:
        return {
            "platform": self.platform.running,
            "agent": self.agent.running,
            "simulator": self.simulator.running,
        }

    # --- sending -----------------------------------------------------------------------

    def next_ts_ms(self) -> int:
        """A fresh timestamp for a valid reading: one interval after the last one."""
        self._canary_ms += MINUTE_MS
        return self._canary_ms

    def block(self, minutes: int = 5) -> int:
        """The end of a fresh block of ``minutes`` one-minute intervals, for a case's own."""
        self._canary_ms += minutes * MINUTE_MS
        return self._canary_ms

    def telemetry(
        self, readings: list[tuple[str, int, float, str, int, str]], *, seq: int | None = None
    ) -> bytes:
        """A telemetry batch of ``direct_plant`` from its (played) agent."""
        if seq is None:
            self._direct_seq += 1
            seq = self._direct_seq
        columns = list(zip(*readings, strict=True)) if readings else [[]] * 6
        body = {
            "v": 1,
            "plant": self.direct_plant,
            "agent": f"agent-{self.direct_plant}",
            "seq": seq,
            "sent_ms": int(time.time() * 1000),
            "readings": {
                name: list(column)
                for name, column in zip(wire.TELEMETRY_COLUMNS, columns, strict=True)
            },
        }
        return json.dumps(body).encode()

    def send_meter_canary(self) -> tuple[str, str, int, float]:
        ts = self.next_ts_ms()
        value = round(0.3 + (ts // MINUTE_MS % 1000) / 10_000, 4)
        payload = json.dumps({"v": 1, "unit": "t", "ts": ts, "value": value, "dur": 60}).encode()
        self.publisher.publish(wire.meter_topic(self.meter_plant, "kiln-coal"), payload)
        canary = (self.meter_plant, "kiln-coal", ts, value)
        self._canaries.append(canary)
        return canary

    def send_telemetry_canary(self) -> tuple[str, str, int, float]:
        ts = self.next_ts_ms()
        value = round(0.3 + (ts // MINUTE_MS % 1000) / 10_000, 4)
        payload = self.telemetry([("kiln-coal", ts, value, "t", MINUTE_MS, "measured")])
        self.publisher.publish(wire.telemetry_topic(self.direct_plant), payload)
        canary = (self.direct_plant, "kiln-coal", ts, value)
        self._canaries.append(canary)
        return canary

    # --- the store ---------------------------------------------------------------------

    def stored(self, plant: str) -> dict[tuple[str, int], float]:
        """Every stored reading of ``plant``: (meter, ts_ms) -> value."""
        store = open_store(self.store_url)
        try:
            frame = store.activity(plant)
        finally:
            store.close()
        ms = epoch_ms(frame["time"])
        return {
            (str(m), int(t)): float(v)
            for m, t, v in zip(frame["meter"], ms, frame["value"], strict=True)
        }

    def wait_stored(self, reading: tuple[str, str, int, float], timeout_s: float) -> None:
        plant, meter, ts, value = reading
        wait_for(
            lambda: self.stored(plant).get((meter, ts)) == value,
            f"reading {reading} to be stored",
            timeout_s,
        )


def pipeline(
    directory: Path, broker: MosquittoServer, influxdb: InfluxDBServer
) -> Iterator[Pipeline]:
    """Start a pipeline in ``directory``; stop it and drop its database afterwards."""
    database = f"poison_{uuid.uuid4().hex[:10]}"
    influxdb.create_database(database)
    prefix = f"p{uuid.uuid4().hex[:6]}"
    running = Pipeline(
        directory, broker, influxdb, database, f"{prefix}-m", f"{prefix}-d", f"{prefix}-s"
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
        influxdb.drop_database(database)
