"""A message that keeps taking the platform down is parked, not redelivered forever.

An exception while handling a message never stops the platform (the corpus shows it).
What is left is a message that the process dies on before acknowledging it: the broker
sends it again after every restart, with the DUP flag. Here the platform is killed each
time it holds the message (its write to InfluxDB never answers, through a proxy that
holds every ``POST /write``), as a process killed by the out-of-memory killer would be.
The fifth delivery is parked: dead-lettered as ``poison``, counted, acknowledged and
kept whole beside the spill file; the stream behind it flows again.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from carbonlink import wire
from carbonlink.platform._poison import POISON_ATTEMPTS
from tests.configs import write_config
from tests.faults.harness import Service, TcpProxy, platform_health, service_env
from tests.poison.pipeline import Observer, Publisher
from tests.servers import HOST, InfluxDBServer, MosquittoServer, free_port
from tests.waiting import wait_for

pytestmark = [pytest.mark.mosquitto, pytest.mark.influxdb, pytest.mark.slow]
PLANT = f"poison-{uuid.uuid4().hex[:6]}"
MINUTE = 60_000


@pytest.fixture
def rig(tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxDBServer) -> Iterator[dict]:
    database = f"poison_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(database)
    proxy = TcpProxy(influxdb.port)
    config = write_config(tmp_path / "config", plants={PLANT: "cement-01"},
                          broker_url=mosquitto.url, client_id=f"platform-{PLANT}")  # fmt: skip
    port = free_port()
    platform = Service(
        "platform",
        ["platform", "--config", str(config), "--broker", mosquitto.url,
         "--store", f"influxdb://{proxy.url}/{database}",
         "--spill", str(tmp_path / "spill.sqlite"), "--http", f"{HOST}:{port}"],
        tmp_path, service_env(),
    )  # fmt: skip
    observer = Observer(mosquitto)
    observer.start()
    publisher = Publisher(mosquitto)
    try:
        yield {"platform": platform, "port": port, "proxy": proxy, "observer": observer,
               "publisher": publisher, "influx": influxdb, "database": database,
               "spill": tmp_path / "spill.sqlite"}  # fmt: skip
    finally:
        platform.stop()
        proxy.close()
        publisher.close()
        observer.stop()
        influxdb.drop_database(database)


def _ingestion(port: int) -> dict:
    return platform_health(port).get("ingestion") or {}  # type: ignore[return-value]


def _start(rig: dict) -> None:
    rig["platform"].start()
    wait_for(lambda: _ingestion(rig["port"]).get("connected"), "the platform to subscribe", 90)


def _telemetry(ts: int, seq: int) -> bytes:
    readings = {"meter": ["kiln-coal"], "ts": [ts], "value": [0.4], "unit": ["t"],
                "dur_ms": [MINUTE], "q": ["measured"]}  # fmt: skip
    body = {"v": 1, "plant": PLANT, "agent": wire.agent_id(PLANT), "seq": seq,
            "sent_ms": ts, "readings": readings}  # fmt: skip
    return json.dumps(body).encode()


def _stored(rig: dict, ts: int) -> bool:
    rows = rig["influx"].query(
        rig["database"], f'SELECT "value" FROM "activity" WHERE time = {ts}ms'
    )
    return bool(rows.get("results", [{}])[0].get("series"))


def test_a_message_the_platform_dies_on_is_parked(rig: dict) -> None:
    now = (int(time.time()) // 60 * 60 - 3600) * 1000
    topic = wire.telemetry_topic(PLANT)
    _start(rig)
    rig["proxy"].hang_on = b"POST /write"
    poison = _telemetry(now, 1)
    rig["publisher"].publish(topic, poison)
    for delivery in range(1, POISON_ATTEMPTS):
        # It arrived, and its write hangs: the process dies holding it.
        wait_for(lambda: _ingestion(rig["port"]).get("messages") == 1,
                 f"delivery {delivery} to be handled", 30)  # fmt: skip
        rig["platform"].kill()
        _start(rig)
    parked = wait_for(
        lambda: _ingestion(rig["port"]).get("rejected", {}).get("poison"), "parking", 30
    )
    assert parked == 1
    assert _ingestion(rig["port"]).get("messages") == 0  # parked before it was handled
    letters = [d for d in rig["observer"].since(0) if d["reason"] == "poison"]
    assert len(letters) == 1
    assert letters[0]["topic"] == topic
    assert json.loads(letters[0]["payload"]) == json.loads(poison)
    with sqlite3.connect(f"{rig['spill']}.poison") as db:
        kept = db.execute("SELECT topic, payload FROM parked").fetchall()
    assert kept == [(topic, poison)]
    # The stream behind it flows again once the store answers.
    rig["proxy"].hang_on = None
    canary = now + MINUTE
    rig["publisher"].publish(topic, _telemetry(canary, 2))
    wait_for(lambda: _stored(rig, canary), "the canary to be stored", 30)
    assert not _stored(rig, now)
    assert rig["platform"].running
