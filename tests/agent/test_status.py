"""The agent's retained status: online with counters, offline by last will when it dies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from carbonlink import wire
from tests.configs import write_config
from tests.servers import MosquittoServer, free_port
from tests.waiting import exited, wait_for

DEADLINE_S = 20.0
STARTUP_S = 90.0  # the agent's process imports the package: slow on a busy machine


class StatusWatch:
    """Every status message of a plant, as a subscriber that stays connected sees them."""

    def __init__(self, broker: MosquittoServer, plant: str) -> None:
        self.states: list[str] = []
        subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = lambda _c, _u, m: self.states.append(
            json.loads(m.payload)["state"]
        )
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect(broker.host, broker.port)
        self._client.subscribe(wire.status_topic(plant), qos=1)
        self._client.loop_start()
        assert subscribed.wait(DEADLINE_S), "no SUBACK for the status topic"

    def _received(self, _client: mqtt.Client, _data: object, message: mqtt.MQTTMessage) -> None:
        self.states.append(json.loads(message.payload)["state"])

    def latest(self) -> str | None:
        return self.states[-1] if self.states else None

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def retained_status(broker: MosquittoServer, plant: str) -> dict[str, object]:
    """Read the retained status message as a newcomer would: subscribe and take it."""
    received: list[mqtt.MQTTMessage] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, message: received.append(message)
    client.connect(broker.host, broker.port)
    client.subscribe(wire.status_topic(plant), qos=1)
    client.loop_start()
    try:
        message: mqtt.MQTTMessage = wait_for(
            lambda: received and received[0], "the retained status", DEADLINE_S
        )
    finally:
        client.loop_stop()
        client.disconnect()
    assert message.retain
    status: dict[str, object] = json.loads(message.payload)
    return status


def test_killed_agent_goes_offline_by_last_will(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    plant = f"{topic_prefix}-cement"
    config = write_config(
        tmp_path / "config", plants={plant: "cement-01"}, broker_url=mosquitto_private.url
    )
    watch = StatusWatch(mosquitto_private, plant)
    agent = subprocess.Popen(
        [sys.executable, "-m", "carbonlink", "agent", "--config", str(config), "--plant", plant]
    )
    try:
        wait_for(lambda: watch.latest() == "online", "the agent online", STARTUP_S,
                 abort_if=exited(agent), detail=lambda: f"states: {watch.states}")  # fmt: skip
        status = retained_status(mosquitto_private, plant)
        assert status["state"] == "online"
        assert status["agent"] == f"agent-{plant}"
        agent.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker must fire the will
        agent.wait(timeout=10)
        # Mosquitto fires the will once the dead connection is noticed: at once for a
        # closed socket, at the latest after 1.5 keepalives.
        wait_for(lambda: watch.latest() == "offline", "the agent's last will", DEADLINE_S,
                 detail=lambda: f"states: {watch.states}")  # fmt: skip
        status = retained_status(mosquitto_private, plant)
        assert status == {"v": 1, "state": "offline", "agent": f"agent-{plant}"}
    finally:
        watch.close()
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_local_view_shows_latest_reading_and_running_co2e(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    plant = f"{topic_prefix}-cement"
    config = write_config(
        tmp_path / "config", plants={plant: "cement-01"}, broker_url=mosquitto_private.url
    )
    port = free_port()
    agent = subprocess.Popen(
        [sys.executable, "-m", "carbonlink", "agent", "--config", str(config), "--plant", plant,
         "--http", f"127.0.0.1:{port}"],
    )  # fmt: skip
    view_url = f"http://127.0.0.1:{port}/view"

    def view() -> dict[str, object]:
        answer: dict[str, object] = httpx.get(view_url, timeout=5, trust_env=False).json()
        return answer

    try:
        # Subscribed, not just online (it says so before it subscribes): a reading sent
        # before the first subscription would be dropped by the broker.
        wait_for(lambda: view().get("connected"), "the agent to subscribe", STARTUP_S,
                 ignoring=(httpx.TransportError,), abort_if=exited(agent))  # fmt: skip
        now = wire.format_timestamp(time.time_ns() // 1_000_000)
        body = json.dumps({"v": 1, "unit": "t", "ts": now, "value": 0.5})
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
        publisher.connect(mosquitto_private.host, mosquitto_private.port)
        publisher.loop_start()
        publisher.publish(wire.meter_topic(plant, "kiln-coal"), body, qos=1).wait_for_publish(5)
        publisher.loop_stop()
        publisher.disconnect()
        shown: dict[str, object] = wait_for(
            lambda: (answer := view()) and "kiln-coal" in (answer.get("latest") or {}) and answer,  # type: ignore[operator]
            "the reading in the agent's view", DEADLINE_S, abort_if=exited(agent),
        )  # fmt: skip
        latest = shown.get("latest")
        assert isinstance(latest, dict), shown
        assert latest["kiln-coal"]["value"] == 0.5
        # 0.5 t of bituminous coal, IPCC 2006 Tier 1, AR5 (CH4 28, N2O 265).
        expected = 0.5 * 25.8e-3 * (94_600 + 10 * 28 + 1.5 * 265)
        assert shown["co2e_kg_since_start"] == pytest.approx(expected)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5, trust_env=False).json()
        assert health["counters"]["accepted"] == 1
    finally:
        agent.send_signal(signal.SIGINT)
        assert agent.wait(timeout=15) == 0
