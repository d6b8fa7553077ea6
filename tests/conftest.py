"""Fixtures that give tests their own Mosquitto and InfluxDB servers.

Shared (session) servers are cheap to use: isolate through ``topic_prefix`` and
``influx_database``. Private (function) servers are for tests that stop, restart or
kill the server. Every process is stopped at the end, also when a test fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import InfluxDBServer, MosquittoServer, NatsCluster

# A test using one of these fixtures gets the matching marker, so `-m "not influxdb"`
# deselects it even if its author forgot the mark.
_MARKER_FOR_FIXTURE = {
    "mosquitto": "mosquitto",
    "mosquitto_private": "mosquitto",
    "influxdb": "influxdb",
    "influxdb_private": "influxdb",
    "influx_database": "influxdb",
    "nats_cluster": "nats",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for marker in {m for f, m in _MARKER_FOR_FIXTURE.items() if f in fixtures}:
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic_prefix() -> str:
    """A unique string (``t-<hex>``) for this test's topics, plant ids and the like."""
    return _unique("t-")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """The broker shared by the whole session: do not stop it; use unique topics."""
    with MosquittoServer(tmp_path_factory.mktemp("mosquitto")) as server:
        yield server


@pytest.fixture
def mosquitto_private(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A broker of this test's own, free to be stopped, restarted or killed."""
    with MosquittoServer(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDBServer]:
    """The InfluxDB shared by the whole session: do not stop it; use ``influx_database``."""
    with InfluxDBServer(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


@pytest.fixture
def influxdb_private(tmp_path: Path) -> Iterator[InfluxDBServer]:
    """An InfluxDB of this test's own, free to be stopped, restarted or killed."""
    with InfluxDBServer(tmp_path / "influxdb") as server:
        yield server


@pytest.fixture
def influx_database(influxdb: InfluxDBServer) -> Iterator[str]:
    """Name of a fresh database on the shared InfluxDB, dropped after the test."""
    name = _unique("db_")
    influxdb.create_database(name)
    yield name
    if influxdb.is_running:
        influxdb.drop_database(name)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A three-node NATS JetStream cluster of this test's own, on loopback ports: kill and
    restart its nodes freely (``nats_cluster.nodes[i]``)."""
    with NatsCluster(tmp_path / "nats") as cluster:
        yield cluster
