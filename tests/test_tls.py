"""TLS on real servers: Mosquitto with a TLS listener and InfluxDB 1.x over HTTPS, with a
private CA made here. Certificates are verified; only $CARBONLINK_CA_FILE makes the
private CA trusted, and without it the connection fails with the reason."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiomqtt
import pytest

from carbonlink import wire
from carbonlink.agent import Agent
from carbonlink.config import load_config
from carbonlink.core.tls import CA_FILE_ENV, ca_file
from carbonlink.errors import ConfigError, StoreError
from carbonlink.mqtt.client import BrokerAddress, make_client, parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from tests.configs import write_config
from tests.servers import HOST, InfluxDBServer, MosquittoServer, free_port
from tests.test_end_to_end import NOW_MS
from tests.waiting import async_wait_for

CERT_DAYS: Final = "2"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""
    d = tmp_path_factory.mktemp("tls")
    run = lambda *args: subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", CERT_DAYS, "-subj", "/CN=carbonlink test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", f"/CN={HOST}")  # fmt: skip
    (d / "san.ext").write_text(f"subjectAltName=IP:{HOST}\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", CERT_DAYS,
        "-extfile", "san.ext")  # fmt: skip
    return Certificates(d / "ca.pem", d / "server.pem", d / "server.key")


@pytest.fixture(scope="module")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[tuple[MosquittoServer, int]]:
    """A broker with its plain listener and a TLS one."""
    tls_port = free_port()
    extra = [f"listener {tls_port} {HOST}", f"cafile {certificates.ca}",
             f"certfile {certificates.cert}", f"keyfile {certificates.key}"]  # fmt: skip
    with MosquittoServer(tmp_path_factory.mktemp("tls-broker"), extra_config=extra) as broker:
        yield broker, tls_port


async def _publish_over_tls(port: int, topic: str) -> None:
    async with make_client(BrokerAddress(HOST, port, tls=True), "tls-test") as client:
        await client.publish(topic, b"over tls", qos=1)


def test_mqtt_over_tls_trusts_the_private_ca_only_when_named(
    tls_broker: tuple[MosquittoServer, int], certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch, topic_prefix: str,
) -> None:  # fmt: skip
    broker, tls_port = tls_broker
    topic = f"{topic_prefix}/tls"
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(_publish_over_tls(tls_port, topic))
    monkeypatch.setenv(CA_FILE_ENV, str(certificates.ca))

    async def round_trip() -> bytes:
        async with aiomqtt.Client(broker.host, broker.port) as plain:
            await plain.subscribe(topic, qos=1)
            await _publish_over_tls(tls_port, topic)
            message = await async_wait_for(anext(plain.messages), "the message over TLS", 10)
        assert isinstance(message.payload, bytes)
        return message.payload

    assert asyncio.run(round_trip()) == b"over tls"


def test_the_pipeline_runs_over_tls(
    tls_broker: tuple[MosquittoServer, int], certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, topic_prefix: str,
) -> None:  # fmt: skip
    broker, tls_port = tls_broker
    monkeypatch.setenv(CA_FILE_ENV, str(certificates.ca))
    plant_id = f"{topic_prefix}-cement"
    url = f"mqtts://{HOST}:{tls_port}"
    config = write_config(tmp_path / "config", plants={plant_id: "cement-01"}, broker_url=url,
                          client_id=f"platform-{topic_prefix}")  # fmt: skip
    settings = load_config(config)
    address = parse_broker_url(url)
    assert address.tls
    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite'}")

    async def scenario() -> int:
        platform = Platform(Ingestor.from_settings(settings), store, address,
                            settings.services.platform, spill_path=tmp_path / "spill.sqlite",
                            now_ms=lambda: NOW_MS)  # fmt: skip
        agent = Agent(settings.plant(plant_id), address, settings.services.agent,
                      outbox_path=tmp_path / "outbox.sqlite", now_ms=lambda: NOW_MS)  # fmt: skip
        tasks = [asyncio.create_task(platform.run()), asyncio.create_task(agent.run())]
        try:
            await async_wait_for(platform.connected.wait(), "the platform over TLS")
            await async_wait_for(agent.connected.wait(), "the agent over TLS")
            payload = {"v": 1, "unit": "t", "ts": NOW_MS, "value": 0.38}
            await asyncio.to_thread(
                mosquitto_pub_tls, broker, tls_port, certificates.ca,
                wire.meter_topic(plant_id, "kiln-coal"), payload,
            )  # fmt: skip
            await async_wait_for(lambda: platform.counters.stored >= 1, "the reading stored")
            return platform.counters.stored
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            platform.close()

    assert asyncio.run(scenario()) == 1
    assert store.series(plant_id, field="value")["value"].tolist() == [0.38]
    store.close()


def mosquitto_pub_tls(
    broker: MosquittoServer, port: int, ca: Path, topic: str, payload: dict[str, object]
) -> None:
    import json

    subprocess.run(
        ["mosquitto_pub", "-h", HOST, "-p", str(port), "--cafile", str(ca), "-q", "1",
         "-t", topic, "-m", json.dumps(payload)],
        check=True, timeout=10,
    )  # fmt: skip
    del broker  # the plain listener is not used: the reading travels over TLS


def test_influxdb_over_https(
    tmp_path: Path, certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = (certificates.cert, certificates.key, certificates.ca)
    with InfluxDBServer(tmp_path / "influxdb", tls=tls) as server:
        server.create_database("tls")
        url = server.store_url("tls")
        assert url.startswith("influxdb+https://")
        monkeypatch.delenv(CA_FILE_ENV, raising=False)
        # Opening the store already speaks to the server.
        with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED"):
            open_store(url)
        monkeypatch.setenv(CA_FILE_ENV, str(certificates.ca))
        store = open_store(url)
        from tests.storage.test_contract import reading

        store.write([reading("p1", "gas", m, 1.0, 2.0) for m in range(3)])
        assert store.count_readings("p1") == 3
        store.close()


def test_a_ca_file_that_is_not_there_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CA_FILE_ENV, "/nowhere/ca.pem")
    with pytest.raises(ConfigError) as caught:
        ca_file()
    assert caught.value.key == CA_FILE_ENV
    assert "/nowhere/ca.pem" in str(caught.value)
