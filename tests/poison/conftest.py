"""One running pipeline per test module: every case of a module runs against the same
processes, so they must survive all of them, not just one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.poison.pipeline import Pipeline, pipeline
from tests.servers import InfluxDBServer, MosquittoServer


@pytest.fixture(scope="module")
def pipe(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoServer, influxdb: InfluxDBServer
) -> Iterator[Pipeline]:
    yield from pipeline(tmp_path_factory.mktemp("pipeline"), mosquitto, influxdb)
