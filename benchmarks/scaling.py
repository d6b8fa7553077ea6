"""Intake scaling: readings per second with 1, 2 and 3 platform workers, on NATS JetStream
(a three-node cluster, the stream replicated three times, one durable pull consumer) and
on Mosquitto shared subscriptions (one broker, ``$share/GROUP``), in the same run.

Each run starts its workers as `carbonlink platform` processes on a fresh InfluxDB
database (and, on JetStream, a fresh stream), warms them up, publishes the batched
workload as fast as the publisher goes and stops the clock at the poll that finds the
last reading queryable, as benchmarks/ingest.py does for one worker. The publishers:
``mosquitto_pub -l`` for MQTT (C), and for JetStream nats-py with up to
``JS_PUBLISH_WINDOW`` publishes awaiting their acknowledgement at once.

  python -m benchmarks.scaling [--readings N]     (or through benchmarks/run)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nats
import yaml
from tests.servers import InfluxDBServer, MosquittoServer, NatsCluster

from benchmarks._common import (
    AGENT_BATCH,
    PLANT,
    PLATFORM_START_TIMEOUT_S,
    Feeder,
    Queryable,
    Workload,
    servers,
    write_bench_config,
)

WORKERS: Final = (1, 2, 3)
WARMUP_ROWS: Final = 20
WARMUP_RETRY_S: Final = 1.0
STOP_TIMEOUT_S: Final = 20.0
JS_PUBLISH_WINDOW: Final = 256  # publishes in flight at once: the publisher is not the limit
TIMEOUT_S: Final = 240.0


@dataclass(frozen=True, slots=True)
class ScalingResult:
    path: str  # "jetstream" or "mqtt_shared"
    workers: int
    readings: int
    wall_s: float
    stored: int  # less than readings: the run timed out (TIMEOUT_S) with this many stored

    @property
    def rate(self) -> float:
        return self.stored / self.wall_s


class _Publisher:
    """Sends telemetry payloads on one path; ``send`` returns once all are handed over."""

    def __init__(self, broker: MosquittoServer, cluster: NatsCluster, jetstream: bool,
                 subject: str) -> None:  # fmt: skip
        self._broker = broker
        self._cluster = cluster
        self._jetstream = jetstream
        self._subject = subject
        self._feeder: Feeder | None = None

    def send(self, lines: Sequence[bytes]) -> None:
        if self._jetstream:
            asyncio.run(_js_publish(self._cluster.urls, self._subject, lines))
        else:
            self._feeder = Feeder(self._broker)
            self._feeder.send_all(lines)

    def close(self) -> None:
        if self._feeder is not None:
            self._feeder.close()
            self._feeder = None


async def _js_publish(urls: list[str], subject: str, lines: Sequence[bytes]) -> None:
    client = await nats.connect(urls)
    try:
        js = client.jetstream(publish_async_max_pending=JS_PUBLISH_WINDOW)
        acks = [await js.publish_async(subject, line) for line in lines]
        # A publish the stream did not take (no leader yet, while warming up) is sent
        # again by the caller's warm-up loop; gathered here so none goes unretrieved.
        await asyncio.gather(*acks, return_exceptions=True)
    finally:
        await client.close()


@contextlib.contextmanager
def _workers(
    directory: Path, broker: MosquittoServer, influxdb: InfluxDBServer, cluster: NatsCluster,
    *, jetstream: bool, count: int,
) -> Iterator[tuple[Workload, str, _Publisher]]:  # fmt: skip
    """``count`` platform workers on a fresh database, warmed up: (workload, database,
    a publisher on their path)."""
    directory.mkdir(parents=True, exist_ok=True)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    store_url = influxdb.store_url(database)
    config = write_bench_config(directory, broker.url, store_url)
    raw = yaml.safe_load(config.read_text())
    prefix = f"bench{uuid.uuid4().hex[:6]}"  # a fresh stream on subjects of its own
    if jetstream:
        raw["platform"]["intake"] = "jetstream"
        raw["jetstream"] = {"servers": cluster.urls, "stream": prefix.upper(),
                            "subject_prefix": prefix}  # fmt: skip
    config.write_text(yaml.safe_dump(raw))
    workload = Workload.from_config(config)
    influxdb.create_database(database)
    group = [] if jetstream else ["--shared-group", prefix]
    processes, logs = [], []
    for n in range(1, count + 1):
        log = (directory / f"platform-{n}.log").open("wb")
        logs.append(log)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "carbonlink", "platform", "--config", str(config),
             "--store", store_url, "--worker", str(n), "--no-audit", *group,
             "--spill", str(directory / f"spill-{n}.sqlite")],
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
    publisher = _Publisher(broker, cluster, jetstream, f"{prefix}.{PLANT}.telemetry")
    try:
        _warm_up(workload, influxdb, database, publisher, processes, count)
        yield workload, database, publisher
    finally:
        publisher.close()
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
        with contextlib.suppress(Exception):
            influxdb.drop_database(database)


def _warm_up(workload: Workload, influxdb: InfluxDBServer, database: str,
             publisher: _Publisher, processes: list[subprocess.Popen[bytes]],
             count: int) -> None:  # fmt: skip
    """Readings before the measured range, one small message per worker and more, until
    all are queryable: every worker is then up, subscribed or pulling, and imported."""
    rows = WARMUP_ROWS * workload.per_row
    lines = workload.messages(-rows, rows, max(1, rows // (4 * count)))
    queryable = Queryable(influxdb, database, workload, 1)
    deadline = time.monotonic() + PLATFORM_START_TIMEOUT_S * 2
    try:
        while queryable.total() < rows:
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a platform worker exited while warming up")
            if time.monotonic() > deadline:
                raise RuntimeError("platform workers not storing after warm-up")
            publisher.send(lines)
            time.sleep(WARMUP_RETRY_S)
            publisher.close()
    finally:
        queryable.close()


def measure_one(
    directory: Path, broker: MosquittoServer, influxdb: InfluxDBServer, cluster: NatsCluster,
    *, jetstream: bool, count: int, readings: int,
) -> ScalingResult:  # fmt: skip
    with _workers(directory, broker, influxdb, cluster, jetstream=jetstream,
                  count=count) as (workload, database, publisher):  # fmt: skip
        lines = workload.messages(0, readings, AGENT_BATCH)
        bucket_rows = AGENT_BATCH // workload.per_row
        buckets = readings // (bucket_rows * workload.per_row)
        queryable = Queryable(influxdb, database, workload, bucket_rows)
        try:
            began = time.perf_counter()
            publisher.send(lines)
            finished = queryable.wait_for(buckets, TIMEOUT_S)
            # A run that times out is reported as such, with what it stored, and the
            # other runs go on.
            stored = readings if finished is not None else queryable.total()
            wall_s = (finished if finished is not None else time.perf_counter()) - began
        finally:
            queryable.close()
    return ScalingResult("jetstream" if jetstream else "mqtt_shared", count, readings,
                         wall_s, stored)  # fmt: skip


def measure(scratch: Path, broker: MosquittoServer, influxdb: InfluxDBServer,
            readings: int) -> list[ScalingResult]:  # fmt: skip
    """Every path with 1, 2 and 3 workers, paths interleaved per worker count so that a
    change in the machine's load falls on both alike."""
    results = []
    with NatsCluster(scratch / "nats") as cluster:
        for count in WORKERS:
            for jetstream in (True, False):
                name = f"{'jetstream' if jetstream else 'mqtt'}-{count}"
                results.append(measure_one(scratch / name, broker, influxdb, cluster,
                                           jetstream=jetstream, count=count,
                                           readings=readings))  # fmt: skip
                done = results[-1]
                short = "" if done.stored == done.readings else (
                    f" TIMED OUT: {done.stored:,} of {done.readings:,} stored"
                )  # fmt: skip
                print(f"  {name}: {done.rate:,.0f} readings/s{short}", file=sys.stderr)
    return results


def figures(results: list[ScalingResult]) -> dict[str, dict[str, float]]:
    """{path: {workers: readings/s}}, and each path's 3-worker rate over its 1-worker."""
    out: dict[str, dict[str, float]] = {}
    for r in results:
        out.setdefault(r.path, {})[str(r.workers)] = r.rate
        if r.stored < r.readings:
            out[r.path][f"{r.workers}_timed_out_stored"] = r.stored
    for rates in out.values():
        if "1" in rates and "3" in rates:
            rates["3_vs_1"] = rates["3"] / rates["1"]
    return out


def table(scaling: dict[str, dict[str, float]]) -> list[tuple[str, str, str]]:
    rows = []
    for path, label in (("jetstream", "NATS JetStream, R3, pull consumer"),
                        ("mqtt_shared", "Mosquitto, $share subscription")):  # fmt: skip
        rates = scaling.get(path, {})
        figure = " / ".join(f"{rates[str(n)]:,.0f}" for n in WORKERS if str(n) in rates)
        ratio = rates.get("3_vs_1")
        detail = f"3 workers {ratio:.2f}x 1" if ratio is not None else ""
        short = [f"{n} workers timed out ({rates[f'{n}_timed_out_stored']:,.0f} stored)"
                 for n in WORKERS if f"{n}_timed_out_stored" in rates]  # fmt: skip
        rows.append((f"{label}: 1/2/3 workers", f"{figure} readings/s",
                     "; ".join([detail, *short]).strip("; ")))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling")
    parser.add_argument("--readings", type=int, default=250_000)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scaling-")))
        broker, influxdb = stack.enter_context(servers(scratch))
        results = measure(scratch, broker, influxdb, args.readings)
    for name, figure, detail in table(figures(results)):
        print(f"{name:<46} {figure:>26}  {detail}")


if __name__ == "__main__":
    main()
