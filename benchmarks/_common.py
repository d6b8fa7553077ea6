"""What every benchmark shares: quiet private servers, the workload, a C publisher, a
queryability clock on InfluxDB, and CPU/memory figures of a process tree from /proc."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
import yaml
from tests.configs import write_config
from tests.servers import InfluxDBServer, MosquittoServer

from carbonlink import wire
from carbonlink.config import AgentConfig, load_config

PLANT: Final = "bench-cement"
TOPIC: Final = wire.telemetry_topic(PLANT)
AGENT: Final = f"agent-{PLANT}"
# Readings are laid out in rows: one reading per meter per row, rows one second apart,
# from midnight UTC (so InfluxDB's GROUP BY time() buckets start on a row boundary) far
# enough back that a long run stays in the past: the platform refuses readings from the
# future, and a 30-minute soak at 5,000 readings/s needs 23 days of rows. (A fixed date
# two weeks back once made a soak stall after 14 days of rows, as readings turned future.)
DAY_MS: Final = 86_400_000
HISTORY_DAYS: Final = 90  # 7.8 million rows: 38.9 million readings of five meters
BASE_TS_MS: Final = (time.time_ns() // 1_000_000 // DAY_MS - HISTORY_DAYS) * DAY_MS
ROW_STEP_MS: Final = 1_000
DURATION_MS: Final = 1_000
POLL_INTERVAL_S: Final = 0.05
POLL_WINDOW_BUCKETS: Final = 8
HTTP_TIMEOUT_S: Final = 30.0
WORKLOAD_RATED_PER_HOUR: Final = 1e6  # above any reading of the workload, per hour
PLATFORM_START_TIMEOUT_S: Final = 60.0
AGENT_BATCH: Final = AgentConfig().batch_max_readings  # readings per message an agent sends
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")


class QuietMosquitto(MosquittoServer):
    """The tests' broker without per-packet debug logging, which would be the bottleneck:
    logging every PUBLISH and PUBACK to a file halves Mosquitto's delivery rate."""

    def _write_config(self) -> list[str]:
        args = super()._write_config()
        text = self.config_path.read_text()
        text = text.replace("log_type all\n", "log_type error\nlog_type warning\n")
        text = text.replace("connection_messages true\n", "connection_messages false\n")
        self.config_path.write_text(text)
        return args


# --- the workload -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """Readings of one cement plant's five meters, laid out so that reading k is
    identified by its index alone: row k // meters, meter k % meters."""

    meters: tuple[tuple[str, str], ...]  # (meter id, unit)

    @classmethod
    def from_config(cls, config_path: Path) -> Workload:
        plant = load_config(config_path).plant(PLANT)
        return cls(tuple((m.id, m.unit) for m in plant.meters))

    @property
    def per_row(self) -> int:
        return len(self.meters)

    def readings(self, first: int, count: int) -> tuple[wire.Reading, ...]:
        width = self.per_row
        return tuple(
            wire.Reading(
                self.meters[k % width][0],
                BASE_TS_MS + (k // width) * ROW_STEP_MS,
                # 1.8-4.7 units/h: under every meter's rated_per_hour (the lowest,
                # kiln-petcoke, is 7 t/h), so the platform's plausibility check passes.
                round(0.0005 + (k % 17) * 0.00005, 6),
                self.meters[k % width][1],
                DURATION_MS,
            )
            for k in range(first, first + count)
        )

    def messages(self, first: int, count: int, per_message: int, seq: int = 1) -> list[bytes]:
        """Telemetry payloads as an agent sends them, ``per_message`` readings each."""
        out = []
        for n, start in enumerate(range(first, first + count, per_message)):
            readings = self.readings(start, min(per_message, first + count - start))
            batch = wire.TelemetryBatch(PLANT, AGENT, seq + n, BASE_TS_MS, readings)
            out.append(wire.encode_telemetry(batch))
        return out

    def row_ms(self, index: int) -> int:
        return BASE_TS_MS + (index // self.per_row) * ROW_STEP_MS


def write_bench_config(
    directory: Path, broker_url: str, store_url: str, **platform: object
) -> Path:
    """A services config with the benchmark plant (a copy of cement-01)."""
    path = write_config(
        directory, plants={PLANT: "cement-01"}, broker_url=broker_url, store=store_url,
        client_id=f"bench-platform-{directory.name}",
    )  # fmt: skip
    # The workload's amounts (0.2-0.36 of a unit a second) are arbitrary: rate the meters
    # so that the plausibility check passes them all, or every reading is refused.
    plant_file = directory / "plants" / f"{PLANT}.yaml"
    plant = yaml.safe_load(plant_file.read_text())
    for meter in plant["meters"]:
        meter["rated_per_hour"] = WORKLOAD_RATED_PER_HOUR
    plant_file.write_text(yaml.safe_dump(plant))
    services = yaml.safe_load(path.read_text())
    services["platform"]["spill_path"] = str(directory / "spill.sqlite")
    services["platform"].update(platform)
    path.write_text(yaml.safe_dump(services))
    return path


# --- publishing ----------------------------------------------------------------------


class Feeder:
    """``mosquitto_pub -l``: one QoS 1 message per line of its stdin, published by C code
    so the publisher is never what a benchmark measures.

    mosquitto_pub 2.0.11 drops messages still queued inside it when stdin closes, so the
    pipe stays open until :meth:`close`, called once the consumer has everything.
    """

    def __init__(self, broker: MosquittoServer, topic: str = TOPIC) -> None:
        self._process = subprocess.Popen(
            ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
             "-t", topic, "-l", "-i", f"bench-pub-{os.getpid()}-{id(self)}"],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        self._writer: threading.Thread | None = None
        self.sent_at: list[float] = []

    def send_all(self, lines: Sequence[bytes]) -> None:
        """Hand every line over at once (from a thread: the pipe blocks when full)."""
        data = b"\n".join(lines) + b"\n"
        self._writer = threading.Thread(target=self._write, args=(data,), daemon=True)
        self._writer.start()

    def send_paced(self, lines: Iterable[bytes], interval_s: float) -> None:
        """One line every ``interval_s``, on a fixed schedule; records when each went."""

        def pace() -> None:
            assert self._process.stdin is not None
            start = time.perf_counter()
            for n, line in enumerate(lines):
                delay = start + n * interval_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                self.sent_at.append(time.perf_counter())
                self._process.stdin.write(line + b"\n")
                self._process.stdin.flush()

        self._writer = threading.Thread(target=pace, daemon=True)
        self._writer.start()

    def _write(self, data: bytes) -> None:
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.write(data)
            self._process.stdin.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.join()
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


# --- the queryability clock ------------------------------------------------------------


class Queryable:
    """When did each bucket of readings become queryable in InfluxDB?

    Buckets are consecutive ranges of rows; a bucket is done once a count over its time
    range returns every reading in it. One GROUP BY time() query checks the oldest
    pending buckets, so a poll costs the same however far ingest is behind.
    """

    def __init__(
        self, influxdb: InfluxDBServer, database: str, workload: Workload, bucket_rows: int
    ) -> None:
        self._http = httpx.Client(base_url=influxdb.url, timeout=HTTP_TIMEOUT_S, trust_env=False)
        self._database = database
        self._per_bucket = bucket_rows * workload.per_row
        self._bucket_ms = bucket_rows * ROW_STEP_MS
        # GROUP BY time() buckets start at multiples of their length since the epoch.
        assert BASE_TS_MS % self._bucket_ms == 0, "bucket_rows must divide a day of rows"
        self.done_at: dict[int, float] = {}  # bucket number -> perf_counter time
        self._first_pending = 0

    def close(self) -> None:
        self._http.close()

    def bucket_of(self, reading_index: int) -> int:
        return reading_index // self._per_bucket

    def wait_for(self, buckets: int, timeout_s: float) -> float | None:
        """Poll until buckets 0..buckets-1 are all done; the time the last one was seen."""
        deadline = time.perf_counter() + timeout_s
        while len(self.done_at) < buckets:
            if time.perf_counter() > deadline:
                return None
            self.poll(buckets)
            if len(self.done_at) < buckets:
                time.sleep(POLL_INTERVAL_S)
        return max(self.done_at.values())

    def poll(self, buckets: int) -> None:
        # Only the oldest few pending buckets: counting the whole backlog every 50 ms
        # scanned more points per second than were being written, and slowed the very
        # writes being timed. Ingest is nearly in order, so a bucket finished early is
        # seen a little late (an upper bound on its latency).
        pending = [b for b in range(self._first_pending, buckets) if b not in self.done_at]
        pending = pending[:POLL_WINDOW_BUCKETS]
        if not pending:
            return
        self._first_pending = pending[0]
        start = BASE_TS_MS + pending[0] * self._bucket_ms
        end = BASE_TS_MS + (pending[-1] + 1) * self._bucket_ms
        query = (
            f'SELECT count("value") FROM "activity" WHERE time >= {start}ms AND time < {end}ms '
            f"GROUP BY time({self._bucket_ms}ms) fill(0)"
        )
        response = self._http.get(
            "/query", params={"db": self._database, "q": query, "epoch": "ms"}
        )
        seen = time.perf_counter()
        response.raise_for_status()
        for series in response.json()["results"][0].get("series", []):
            for ts, count in series["values"]:
                bucket = (ts - BASE_TS_MS) // self._bucket_ms
                if count >= self._per_bucket and bucket not in self.done_at:
                    self.done_at[bucket] = seen

    def total(self) -> int:
        response = self._http.get(
            "/query",
            params={"db": self._database, "q": 'SELECT count("value") FROM "activity"'},
        )
        response.raise_for_status()
        series = response.json()["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0


# --- process figures ---------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for parent in found:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
                found.extend(int(c) for c in children if int(c) not in found)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants, from /proc."""
    total = 0
    for member in _descendants(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def memory_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) summed over a process and its descendants."""
    rss = peak = 0
    for member in _descendants(pid):
        with contextlib.suppress(OSError):
            figures = proc_status(member)
            rss += figures.get("VmRSS", 0) * 1024
            peak += figures.get("VmHWM", 0) * 1024
    return rss, peak


def proc_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/PID/status (sizes in KiB, counts as they are)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        head = value.split(maxsplit=1)
        if head and head[0].isdigit():
            figures[name] = int(head[0])
    return figures


@dataclass(slots=True)
class CpuWindow:
    """CPU used by a process tree between :meth:`start` and :meth:`stop`."""

    pid: int
    began_cpu: float = 0.0
    began_wall: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)

    def start(self) -> None:
        self.began_cpu, self.began_wall = cpu_seconds(self.pid), time.perf_counter()

    def stop(self) -> None:
        self.cpu_s = cpu_seconds(self.pid) - self.began_cpu
        self.wall_s = time.perf_counter() - self.began_wall


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


@contextlib.contextmanager
def servers(directory: Path) -> Iterator[tuple[QuietMosquitto, InfluxDBServer]]:
    with (
        QuietMosquitto(directory / "mosquitto") as broker,
        InfluxDBServer(directory / "influxdb") as influxdb,
    ):
        yield broker, influxdb
