"""carbonlink's ingest: readings per second from publish to stored-and-queryable.

The platform runs as `carbonlink platform` in its own process(es), on the real private
InfluxDB; `mosquitto_pub -l` publishes pre-built telemetry. The clock starts as the
first line goes to the publisher and stops at the poll that finds the last reading
queryable, so it covers broker, platform, InfluxDB and the visibility of the write.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.servers import InfluxDBServer, MosquittoServer

from benchmarks._common import (
    PLATFORM_START_TIMEOUT_S,
    CpuWindow,
    Feeder,
    Queryable,
    Workload,
    memory_bytes,
    write_bench_config,
)

WARMUP_ROWS: Final = 20
WARMUP_RETRY_S: Final = 1.0
STOP_TIMEOUT_S: Final = 20.0


@dataclass(frozen=True, slots=True)
class IngestResult:
    readings: int
    messages: int
    wall_s: float
    cpu_s: float
    peak_rss: int

    @property
    def rate(self) -> float:
        return self.readings / self.wall_s

    @property
    def cpu_us_per_reading(self) -> float:
        return self.cpu_s / self.readings * 1e6

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s


class PlatformProcess:
    """`carbonlink platform` in a subprocess on a fresh database, warmed up and subscribed.

    ``naive=True`` runs the tutorial-style consumer of benchmarks/naive.py instead.
    """

    def __init__(
        self,
        directory: Path,
        broker: MosquittoServer,
        influxdb: InfluxDBServer,
        extra_args: Sequence[str] = (),
        *,
        naive: bool = False,
        **platform_config: object,
    ) -> None:
        self.database = f"bench_{uuid.uuid4().hex[:8]}"
        self.store_url = influxdb.store_url(self.database)
        self.config_path = write_bench_config(
            directory, broker.url, self.store_url, **platform_config
        )
        self.workload = Workload.from_config(self.config_path)
        self._broker = broker
        self._influxdb = influxdb
        if naive:
            self._command = [
                sys.executable, "-m", "benchmarks.naive", "--config", str(self.config_path),
                "--broker-port", str(broker.port), "--influxdb", influxdb.url,
                "--database", self.database,
            ]  # fmt: skip
        else:
            self._command = [
                sys.executable, "-m", "carbonlink", "platform", "--config",
                str(self.config_path), "--store", self.store_url, *extra_args,
            ]  # fmt: skip
        self._log = (directory / "platform.log").open("wb")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> PlatformProcess:
        self._influxdb.create_database(self.database)
        self._process = subprocess.Popen(self._command, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._warm_up()
        except BaseException:
            self.__exit__()  # __exit__ is not called when __enter__ raises: no orphan
            raise
        return self

    def _warm_up(self) -> None:
        """Publish a few readings before the measured range until they are queryable: the
        platform is then subscribed, its imports done and the InfluxDB shard created."""
        rows = WARMUP_ROWS * self.workload.per_row
        lines = self.workload.messages(-rows, rows, self.workload.per_row)
        deadline = time.monotonic() + PLATFORM_START_TIMEOUT_S
        queryable = Queryable(self._influxdb, self.database, self.workload, 1)
        try:
            while queryable.total() < rows:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(f"platform exited: see {self._log.name}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"platform not storing after warm-up: {self._log.name}")
                feeder = Feeder(self._broker)
                feeder.send_all(lines)
                time.sleep(WARMUP_RETRY_S)
                feeder.close()
        finally:
            queryable.close()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
        with contextlib.suppress(Exception):
            self._influxdb.drop_database(self.database)


def throughput(
    platform: PlatformProcess,
    broker: MosquittoServer,
    influxdb: InfluxDBServer,
    lines: Sequence[bytes],
    readings: int,
    bucket_rows: int,
    timeout_s: float,
) -> IngestResult:
    """Publish ``lines`` as fast as the C publisher goes; time until all is queryable."""
    workload = platform.workload
    buckets = readings // (bucket_rows * workload.per_row)
    assert buckets * bucket_rows * workload.per_row == readings, "whole buckets only"
    queryable = Queryable(influxdb, platform.database, workload, bucket_rows)
    feeder = Feeder(broker)
    cpu = CpuWindow(platform.pid)
    try:
        cpu.start()
        began = time.perf_counter()
        feeder.send_all(lines)
        finished = queryable.wait_for(buckets, timeout_s)
        cpu.stop()
        if finished is None:
            stored = queryable.total()
            raise RuntimeError(f"timed out after {timeout_s}s: {stored} of {readings} stored")
    finally:
        feeder.close()
        queryable.close()
    return IngestResult(
        readings, len(lines), finished - began, cpu.cpu_s, memory_bytes(platform.pid)[1]
    )


@contextlib.contextmanager
def platform_process(
    directory: Path,
    broker: MosquittoServer,
    influxdb: InfluxDBServer,
    extra_args: Sequence[str] = (),
    *,
    naive: bool = False,
    **platform_config: object,
) -> Iterator[PlatformProcess]:
    directory.mkdir(parents=True, exist_ok=True)
    with PlatformProcess(
        directory, broker, influxdb, extra_args, naive=naive, **platform_config
    ) as process:
        yield process
