"""Latency at a fixed offered load, and the memory soak.

Agent-sized telemetry messages go to the broker on a fixed schedule (the offered load);
each message's readings fill one InfluxDB time bucket, polled every 50 ms. A message's
latency is from the moment its line went to `mosquitto_pub` until the poll that first
found all its readings queryable, so it includes up to one poll interval and the
query's own time: an upper bound.

The soak offers a steady load for a while and samples the platform's RSS once a second;
memory is flat if the slope of its floor (the lowest RSS of each 5 s) over time, fitted
after a warm-up, has a 95% upper bound below SOAK_GROWTH_LIMIT of the median RSS per ten
minutes. RSS samples a second
apart are autocorrelated, which makes the bound narrower than it should be: a "flat"
close to the limit deserves the full ``--soak 600``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import stats
from tests.servers import InfluxDBServer, MosquittoServer

from benchmarks._common import POLL_INTERVAL_S, CpuWindow, Feeder, Queryable, memory_bytes
from benchmarks.ingest import PlatformProcess

DRAIN_TIMEOUT_S: Final = 60.0
# RSS climbs for a while as pools, buffers and allocator arenas fill; the fit starts
# after max(SOAK_WARMUP_S, SOAK_WARMUP_SHARE of the run).
SOAK_WARMUP_S: Final = 30.0
SOAK_WARMUP_SHARE: Final = 0.3
SOAK_WINDOW_S: Final = 5.0
SOAK_GROWTH_LIMIT: Final = 0.05  # of median RSS per 10 minutes, upper 95% bound
TEN_MINUTES_S: Final = 600.0
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


@dataclass(frozen=True, slots=True)
class SoakVerdict:
    seconds: float
    slope_mib_per_10min: float
    upper_mib_per_10min: float  # upper 95% bound of the slope
    median_rss_mib: float
    flat: bool


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
    )


def _lines(platform: PlatformProcess, messages: int, per_message: int) -> Iterator[bytes]:
    """Built as they are sent: a long soak would not fit in memory pre-built."""
    for n in range(messages):
        yield from platform.workload.messages(n * per_message, per_message, per_message, n + 1)


def soak_verdict(samples: tuple[tuple[float, int], ...]) -> SoakVerdict:
    """Is RSS flat? Fit its floor against time after the warm-up, bound the slope.

    The floor is the lowest RSS in each SOAK_WINDOW_S: batches in flight make RSS jump
    up and down by tens of MiB, a leak raises the floor.
    """
    start = min(max(SOAK_WARMUP_S, samples[-1][0] * SOAK_WARMUP_SHARE), samples[-1][0] / 2)
    windows: dict[int, tuple[float, int]] = {}
    for t_s, rss in samples:
        if t_s >= start:
            window = int((t_s - start) // SOAK_WINDOW_S)
            if window not in windows or rss < windows[window][1]:
                windows[window] = (t_s, rss)
    kept = sorted(windows.values())
    if len(kept) < 3:  # too short a run to fit a line
        return SoakVerdict(float(samples[-1][0]), math.nan, math.nan, math.nan, False)
    t = np.array([s[0] for s in kept])
    rss_mib = np.array([s[1] for s in kept]) / 2**20
    fit = stats.linregress(t, rss_mib)
    t_crit = stats.t.ppf(0.975, len(kept) - 2)
    upper = (fit.slope + t_crit * fit.stderr) * TEN_MINUTES_S
    median = float(np.median(rss_mib))
    return SoakVerdict(
        seconds=float(samples[-1][0]),
        slope_mib_per_10min=float(fit.slope * TEN_MINUTES_S),
        upper_mib_per_10min=float(upper),
        median_rss_mib=median,
        flat=bool(upper < SOAK_GROWTH_LIMIT * median),
    )
