"""The test servers and their fixtures behave as the rest of the suite relies on."""

from __future__ import annotations

import queue
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests import servers
from tests.servers import InfluxDBServer, MosquittoServer, ServerError, ServerNotInstalledError

WAIT_S = 5.0
QOS = 1


class Subscriber:
    """A paho client that collects received messages in a queue."""

    def __init__(self, server: MosquittoServer, topic: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._subscribed: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda *_args: self._subscribed.put(True)
        self.client.connect(server.host, server.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=QOS)
        self._subscribed.get(timeout=WAIT_S)

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


SubscribeFn = Callable[[MosquittoServer, str], Subscriber]


@pytest.fixture
def subscribe() -> Iterator[SubscribeFn]:
    """Open subscribers that are closed after the test."""
    opened: list[Subscriber] = []

    def open_subscriber(server: MosquittoServer, topic: str) -> Subscriber:
        subscriber = Subscriber(server, topic)
        opened.append(subscriber)
        return subscriber

    yield open_subscriber
    for subscriber in opened:
        subscriber.close()


def publish(server: MosquittoServer, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish with QoS 1 and return once the broker has acknowledged it."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(server.host, server.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=QOS, retain=retain).wait_for_publish(timeout=WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()


def connection_refused(port: int) -> bool:
    try:
        socket.create_connection((servers.HOST, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# --- Mosquitto -------------------------------------------------------------------


@pytest.mark.mosquitto
def test_publish_subscribe_round_trip(
    mosquitto: MosquittoServer, topic_prefix: str, subscribe: SubscribeFn
) -> None:
    topic = f"{topic_prefix}/plant/energy"
    subscriber = subscribe(mosquitto, topic)

    publish(mosquitto, topic, b"42.5")

    message = subscriber.next_message()
    assert (message.topic, message.payload) == (topic, b"42.5")
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mosquitto.port != 1883  # never the system broker


@pytest.mark.mosquitto
def test_mqtt5_is_supported(mosquitto: MosquittoServer) -> None:
    connected: queue.Queue[ReasonCode] = queue.Queue()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_connect = lambda _c, _u, _f, reason, _p: connected.put(reason)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert connected.get(timeout=WAIT_S).is_failure is False
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.mosquitto
def test_stop_refuses_connections_and_restart_keeps_port_and_retained(
    mosquitto_private: MosquittoServer, topic_prefix: str, subscribe: SubscribeFn
) -> None:
    server = mosquitto_private
    port = server.port
    topic = f"{topic_prefix}/status"
    publish(server, topic, b"online", retain=True)

    server.stop()
    assert not server.is_running
    assert connection_refused(port)

    server.start()
    assert server.port == port
    subscriber = subscribe(server, topic)
    message = subscriber.next_message()
    assert (message.payload, message.retain) == (b"online", True)
    subscriber.close()  # else paho's reconnect back-off delays the teardown

    server.restart()
    assert server.port == port
    message = subscribe(server, topic).next_message()
    assert message.payload == b"online"


@pytest.mark.mosquitto
def test_kill_stops_the_broker_at_once(mosquitto_private: MosquittoServer) -> None:
    port = mosquitto_private.port
    mosquitto_private.kill()
    assert not mosquitto_private.is_running
    assert connection_refused(port)
    mosquitto_private.start()  # starts again after a crash
    assert mosquitto_private.is_running


@pytest.mark.mosquitto
def test_extra_config_is_applied(tmp_path: Path) -> None:
    # A broker that refuses anonymous clients proves the extra line reached the config.
    with MosquittoServer(tmp_path, extra_config=["allow_anonymous false"]) as server:
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        connected: queue.Queue[ReasonCode] = queue.Queue()
        client.on_connect = lambda _c, _u, _f, reason, _p: connected.put(reason)
        client.connect(server.host, server.port)
        client.loop_start()
        try:
            assert connected.get(timeout=WAIT_S).is_failure
        finally:
            client.disconnect()  # stops paho's reconnect attempts, which would delay loop_stop
            client.loop_stop()


def test_a_deployment_config_keeps_its_settings_and_gets_private_places(tmp_path: Path) -> None:
    deployment = tmp_path / "deploy" / "mosquitto.conf"
    deployment.parent.mkdir()
    deployment.write_text(
        "# a comment\nlistener 1883\nallow_anonymous false\npersistence true\n"
        "persistence_location /mosquitto/data/\nlog_dest stdout\nmax_queued_messages 0\n"
        "password_file /mosquitto/auth/passwd\n"
    )
    with pytest.raises(ServerError, match="password_file"):
        MosquittoServer(tmp_path / "no-passwd", config_file=deployment).start()
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    with MosquittoServer(tmp_path / "run", config_file=deployment, password_file=passwd) as server:
        written = server.config_path.read_text().splitlines()
        assert {"allow_anonymous false", "max_queued_messages 0", f"password_file {passwd}"} <= set(
            written
        )
        assert "listener 1883" not in written
        assert "log_dest stdout" not in written
        assert not any(line.startswith("persistence_location /mosquitto") for line in written)


@pytest.mark.mosquitto
@pytest.mark.influxdb
def test_private_instances_get_their_own_ports(
    mosquitto: MosquittoServer,
    mosquitto_private: MosquittoServer,
    influxdb: InfluxDBServer,
    influxdb_private: InfluxDBServer,
) -> None:
    ports = [mosquitto.port, mosquitto_private.port, influxdb.port, influxdb_private.port]
    assert len(set(ports)) == len(ports)
    assert mosquitto.directory != mosquitto_private.directory


def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    # Mosquitto rejects the config line and exits: the error must say why.
    server = MosquittoServer(tmp_path, extra_config=["no_such_option on"])
    with pytest.raises(ServerError, match="no_such_option"):
        server.start()
    assert not server.is_running


def test_missing_binary_tells_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MosquittoServer, "binary", "no-such-mosquitto-binary")
    with pytest.raises(ServerNotInstalledError, match="scripts/test"):
        MosquittoServer(tmp_path).start()


def test_start_timeout_includes_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "START_TIMEOUT_S", 0.3)
    monkeypatch.setattr(MosquittoServer, "_is_ready", lambda _self: False)
    server = MosquittoServer(tmp_path)
    with pytest.raises(ServerError, match=r"within 0\.3s(.|\n)*mosquitto version"):
        server.start()
    assert not server.is_running


# --- InfluxDB --------------------------------------------------------------------

LINES = [
    "energy,plant=p1 kwh=12.5 1700000000000",
    "energy,plant=p1 kwh=13.0 1700000060000",
]


def energy_values(server: InfluxDBServer, database: str) -> list[list[object]]:
    result = server.query(database, "SELECT kwh FROM energy ORDER BY time")
    values: list[list[object]] = result["results"][0]["series"][0]["values"]
    return values


@pytest.mark.influxdb
def test_influx_database_write_and_query(influxdb: InfluxDBServer, influx_database: str) -> None:
    response = httpx.post(
        f"{influxdb.url}/write",
        params={"db": influx_database, "precision": "ms"},
        content="\n".join(LINES),
        trust_env=False,
    )
    assert response.status_code == httpx.codes.NO_CONTENT, response.text

    assert energy_values(influxdb, influx_database) == [
        [1700000000000, 12.5],
        [1700000060000, 13.0],
    ]
    assert influxdb.store_url(influx_database) == (
        f"influxdb://127.0.0.1:{influxdb.port}/{influx_database}"
    )


@pytest.mark.influxdb
def test_influx_databases_are_unique_per_test(
    influxdb: InfluxDBServer, influx_database: str
) -> None:
    series = influxdb.query("", "SHOW DATABASES")["results"][0]["series"][0]
    names = {row[0] for row in series["values"]}
    assert influx_database.startswith("db_")
    assert influx_database in names


@pytest.mark.influxdb
def test_influx_query_errors_raise(influxdb: InfluxDBServer, influx_database: str) -> None:
    with pytest.raises(ServerError, match="failed"):
        influxdb.query(influx_database, "SELEKT nonsense")


@pytest.mark.influxdb
def test_influx_stop_and_restart_keep_data(influxdb_private: InfluxDBServer) -> None:
    server = influxdb_private
    port = server.port
    server.create_database("plant")
    server.write("plant", LINES)

    server.stop()
    with pytest.raises(httpx.ConnectError):
        server.query("plant", "SELECT * FROM energy")

    server.start()
    assert server.port == port
    assert len(energy_values(server, "plant")) == len(LINES)

    server.restart()
    assert energy_values(server, "plant")[0] == [1700000000000, 12.5]


@pytest.mark.influxdb
def test_influx_kill(influxdb_private: InfluxDBServer) -> None:
    influxdb_private.kill()
    assert not influxdb_private.is_running
    with pytest.raises(httpx.ConnectError):
        influxdb_private.query("", "SHOW DATABASES")
