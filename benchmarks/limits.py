"""The physical limits: what the broker and InfluxDB do with no Python in the way.

- Broker: `mosquitto_pub -l` to `mosquitto_sub`, both C (libmosquitto), QoS 1, the same
  one-reading telemetry payloads the platform is measured on.
- InfluxDB: pre-built line protocol (exactly the lines the platform writes for the same
  readings), POSTed in 5,000-line batches by 1, 2 and 4 concurrent writers; the best
  counts, so the platform is held to the most InfluxDB can take.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
from tests.servers import InfluxDBServer, MosquittoServer

from benchmarks._common import HTTP_TIMEOUT_S, TOPIC, Feeder, Workload, write_bench_config
from carbonlink.config import load_config
from carbonlink.platform import Ingestor
from carbonlink.storage._influxdb_v1 import batch_lines

INFLUX_BATCH_LINES: Final = 5_000
INFLUX_WRITERS: Final = (1, 2, 4)
SUBSCRIBE_SETTLE_S: Final = 0.5
SUB_TIMEOUT_S: Final = 120


@dataclass(frozen=True, slots=True)
class InfluxLimit:
    readings_per_s: float  # best over the writer counts
    lines_per_s: float
    writers: int
    by_writers: dict[int, float]  # readings/s for each writer count


def broker_rate(broker: MosquittoServer, lines: Sequence[bytes]) -> float:
    """Messages per second from the first line handed to mosquitto_pub until
    mosquitto_sub has received the last."""
    subscriber = subprocess.Popen(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", TOPIC,
         "-C", str(len(lines)), "-W", str(SUB_TIMEOUT_S), "-i", f"bench-sub-{uuid.uuid4().hex}"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(SUBSCRIBE_SETTLE_S)  # subscribed before the first publish
    feeder = Feeder(broker)
    began = time.perf_counter()
    feeder.send_all(lines)
    code = subscriber.wait()
    elapsed = time.perf_counter() - began
    feeder.close()
    if code != 0:
        raise RuntimeError(f"mosquitto_sub exited with {code} (timeout or lost messages)")
    return len(lines) / elapsed


def platform_lines(config_path: Path, workload: Workload, count: int) -> list[bytes]:
    """The line protocol the platform writes for readings 0..count-1 (built untimed)."""
    ingestor = Ingestor.from_settings(load_config(config_path))
    lines: list[bytes] = []
    for payload in workload.messages(0, count, 5_000):
        lines.extend(batch_lines(ingestor.ingest(TOPIC, payload).batch))
    return lines


def influx_rate(influxdb: InfluxDBServer, lines: Sequence[bytes], readings: int) -> InfluxLimit:
    bodies = [
        b"\n".join(lines[i : i + INFLUX_BATCH_LINES])
        for i in range(0, len(lines), INFLUX_BATCH_LINES)
    ]
    by_writers: dict[int, float] = {}
    for writers in INFLUX_WRITERS:
        database = f"limit_{uuid.uuid4().hex[:8]}"
        influxdb.create_database(database)
        try:
            elapsed = _post_all(influxdb, database, bodies, writers)
        finally:
            influxdb.drop_database(database)
        by_writers[writers] = readings / elapsed
    best = max(by_writers, key=lambda w: by_writers[w])
    rate = by_writers[best]
    return InfluxLimit(rate, rate * len(lines) / readings, best, by_writers)


def _post_all(influxdb: InfluxDBServer, database: str, bodies: list[bytes], writers: int) -> float:
    errors: list[str] = []

    def post(part: list[bytes]) -> None:
        params = {"db": database, "precision": "ms"}
        with httpx.Client(base_url=influxdb.url, timeout=HTTP_TIMEOUT_S, trust_env=False) as http:
            for body in part:
                response = http.post("/write", params=params, content=body)
                if response.status_code != httpx.codes.NO_CONTENT:
                    errors.append(response.text[:200])

    threads = [threading.Thread(target=post, args=(bodies[w::writers],)) for w in range(writers)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"influxdb refused a write: {errors[0]}")
    return elapsed


def bench_config(directory: Path, broker: MosquittoServer, influxdb: InfluxDBServer) -> Path:
    return write_bench_config(directory, broker.url, influxdb.store_url("unused"))
