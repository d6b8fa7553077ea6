"""Latency at a fixed offered load (what the capacity ramp and the memory soak run).

Agent-sized telemetry messages go to the broker on a fixed schedule (the offered load);
each message's readings fill one InfluxDB time bucket, polled every 50 ms. A message's
latency is from the moment its line went to `mosquitto_pub` until the poll that first
found all its readings queryable, so it includes up to one poll interval and the
query's own time: an upper bound.

The platform's RSS is sampled once a second throughout, for the soak's verdict
(benchmarks/soak.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from tests.servers import InfluxDBServer, MosquittoServer

from benchmarks._common import POLL_INTERVAL_S, CpuWindow, Feeder, Queryable, memory_bytes
from benchmarks.ingest import PlatformProcess

DRAIN_TIMEOUT_S: Final = 60.0
RSS_SAMPLE_S: Final = 1.0
# Latency runs send pre-built messages; longer soaks build them as they go.
PREBUILT_MESSAGES: Final = 5_000


@dataclass(frozen=True, slots=True)
class LatencyResult:
    offered_per_s: float  # readings/s actually handed to the publisher
    stored_per_s: float  # readings/s over the whole run, publish to last queryable
    p50_s: float
    p99_s: float
    max_s: float
    messages: int
    cpu_s: float
    wall_s: float
    peak_rss: int
    rss_samples: tuple[tuple[float, int], ...]
    # Median latency of the last quarter of messages minus that of the first: near 0
    # while the pipeline keeps up, growing with the run while a backlog builds.
    backlog_growth_s: float = 0.0


def offered_load(
    platform: PlatformProcess,
    broker: MosquittoServer,
    influxdb: InfluxDBServer,
    rate_per_s: float,
    duration_s: float,
    per_message: int,
) -> LatencyResult:
    """Offer ``rate_per_s`` readings/s in messages of ``per_message`` for ``duration_s``."""
    workload = platform.workload
    bucket_rows = per_message // workload.per_row
    messages = max(1, round(rate_per_s * duration_s / per_message))
    ahead_h = (workload.row_ms(messages * per_message) - time.time() * 1000) / 3.6e6
    if ahead_h > 0:
        raise ValueError(
            f"{messages * per_message:,} readings reach {ahead_h:,.0f} h into the future, "
            "which the platform refuses: a shorter run or a lower rate"
        )
    queryable = Queryable(influxdb, platform.database, workload, bucket_rows)
    feeder = Feeder(broker)
    cpu = CpuWindow(platform.pid)
    samples: list[tuple[float, int]] = []
    try:
        cpu.start()
        lines = _lines(platform, messages, per_message)
        if messages <= PREBUILT_MESSAGES:  # building as they go might fall behind schedule
            lines = iter(list(lines))
        began = time.perf_counter()
        feeder.send_paced(lines, per_message / rate_per_s)
        next_sample = began
        deadline = began + duration_s + DRAIN_TIMEOUT_S
        while len(queryable.done_at) < messages:
            now = time.perf_counter()
            if now > deadline:
                raise RuntimeError(
                    f"latency run: {len(queryable.done_at)} of {messages} messages queryable "
                    f"{DRAIN_TIMEOUT_S:.0f}s after the last was offered"
                )
            if now >= next_sample:
                samples.append((now - began, memory_bytes(platform.pid)[0]))
                next_sample += RSS_SAMPLE_S
            queryable.poll(len(feeder.sent_at))
            time.sleep(POLL_INTERVAL_S)
        cpu.stop()
    finally:
        feeder.close()
        queryable.close()
    sent = feeder.sent_at
    latencies = np.array([queryable.done_at[n] - sent[n] for n in range(messages)])
    readings = messages * per_message
    offered_span = max(sent[-1] - sent[0], 1e-9)
    return LatencyResult(
        offered_per_s=(messages - 1) * per_message / offered_span if messages > 1 else 0.0,
        stored_per_s=readings / (max(queryable.done_at.values()) - sent[0]),
        p50_s=float(np.percentile(latencies, 50)),
        p99_s=float(np.percentile(latencies, 99)),
        max_s=float(latencies.max()),
        messages=messages,
        cpu_s=cpu.cpu_s,
        wall_s=cpu.wall_s,
        peak_rss=memory_bytes(platform.pid)[1],
        rss_samples=tuple(samples),
        backlog_growth_s=_backlog_growth(latencies),
    )


def _backlog_growth(latencies: npt.NDArray[np.float64]) -> float:
    quarter = max(1, len(latencies) // 4)
    return float(np.median(latencies[-quarter:]) - np.median(latencies[:quarter]))


def _lines(platform: PlatformProcess, messages: int, per_message: int) -> Iterator[bytes]:
    """Built as they are sent: a long soak would not fit in memory pre-built."""
    for n in range(messages):
        yield from platform.workload.messages(n * per_message, per_message, per_message, n + 1)
