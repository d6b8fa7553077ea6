"""The agent's retained status: online with counters, offline by last will when it dies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from carbonlink import wire
from tests.configs import write_config
from tests.servers import MosquittoServer

DEADLINE_S = 20.0


def retained_status(broker: MosquittoServer, plant: str) -> dict[str, object] | None:
    """Read the retained status message as a newcomer would: subscribe and take it."""
    received: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    client.connect(broker.host, broker.port)
    client.subscribe(wire.status_topic(plant), qos=1)
    deadline = time.monotonic() + 2.0
    while not received and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    return json.loads(received[0]) if received else None


def test_killed_agent_goes_offline_by_last_will(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    plant = f"{topic_prefix}-cement"
    config = write_config(
        tmp_path / "config", plants={plant: "cement-01"}, broker_url=mosquitto_private.url
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "carbonlink", "agent", "--config", str(config), "--plant", plant]
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        status = None
        while time.monotonic() < deadline:
            status = retained_status(mosquitto_private, plant)
            if status and status["state"] == "online":
                break
        assert status is not None
        assert status["state"] == "online"
        assert status["agent"] == f"agent-{plant}"
        agent.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker must fire the will
        agent.wait(timeout=10)
        # Mosquitto fires the will once the dead connection is noticed: at once for a
        # closed socket, at the latest after 1.5 keepalives.
        while time.monotonic() < deadline:
            status = retained_status(mosquitto_private, plant)
            if status and status["state"] == "offline":
                break
        assert status == {"v": 1, "state": "offline", "agent": f"agent-{plant}"}
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_local_view_shows_latest_reading_and_running_co2e(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    import httpx

    from tests.servers import free_port

    plant = f"{topic_prefix}-cement"
    config = write_config(
        tmp_path / "config", plants={plant: "cement-01"}, broker_url=mosquitto_private.url
    )
    port = free_port()
    agent = subprocess.Popen(
        [sys.executable, "-m", "carbonlink", "agent", "--config", str(config), "--plant", plant,
         "--http", f"127.0.0.1:{port}"],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            status = retained_status(mosquitto_private, plant)
            if status and status["state"] == "online":
                break
        now = wire.format_timestamp(time.time_ns() // 1_000_000)
        body = json.dumps({"v": 1, "unit": "t", "ts": now, "value": 0.5})
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
        publisher.connect(mosquitto_private.host, mosquitto_private.port)
        publisher.loop_start()
        publisher.publish(wire.meter_topic(plant, "kiln-coal"), body, qos=1).wait_for_publish(5)
        publisher.loop_stop()
        publisher.disconnect()
        view: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                view = httpx.get(f"http://127.0.0.1:{port}/view", timeout=2).json()
            except httpx.TransportError:
                view = {}
            if "kiln-coal" in (view.get("latest") or {}):  # type: ignore[operator]
                break
            time.sleep(0.1)
        latest = view.get("latest")
        assert isinstance(latest, dict), view
        assert "kiln-coal" in latest, view
        assert latest["kiln-coal"]["value"] == 0.5
        # 0.5 t of bituminous coal, IPCC 2006 Tier 1, AR5 (CH4 28, N2O 265).
        expected = 0.5 * 25.8e-3 * (94_600 + 10 * 28 + 1.5 * 265)
        assert view["co2e_kg_since_start"] == pytest.approx(expected)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
        assert health["counters"]["accepted"] == 1
    finally:
        agent.send_signal(signal.SIGINT)
        assert agent.wait(timeout=15) == 0
