"""The memory soak: a steady offered load for a while, and is the platform's RSS flat?

  .venv/bin/python -m benchmarks.soak [--minutes 30] [--rate 10000] [--warmup-minutes 3]

The platform runs as `carbonlink platform` on the private Mosquitto and InfluxDB, fed
500-reading telemetry messages by `mosquitto_pub -l` on a fixed schedule; its RSS is
read from /proc once a second. The verdict: the least-squares slope of RSS over time
after the warm-up, in MiB per ten minutes, against FLAT_LIMIT_MIB_PER_10MIN. RSS jumps
by a few MiB as batches come and go, a leak raises its floor: the fit is over the
lowest RSS of each FLOOR_WINDOW_S. The 95% interval of the slope is printed beside it.

Run it at a load the machine sustains (well under the capacity `benchmarks.capacity`
finds): a saturated pipeline makes RSS swing with its backlog and hides any trend.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from scipy import stats

from benchmarks._common import AGENT_BATCH, servers
from benchmarks.ingest import platform_process
from benchmarks.latency import LatencyResult, offered_load

MIB: Final = 2**20
TEN_MINUTES_S: Final = 600.0
FLAT_LIMIT_MIB_PER_10MIN: Final = 2.0  # issue 18: no growth trend beyond this
FLOOR_WINDOW_S: Final = 10.0
# Pools, buffers, allocator arenas and InfluxDB's first shard fill in the first minutes.
DEFAULT_WARMUP_S: Final = 180.0
DEFAULT_RATE_PER_S: Final = 10_000.0
PRINT_EVERY_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class SoakVerdict:
    seconds: float
    warmup_s: float
    slope_mib_per_10min: float
    lower95_mib_per_10min: float
    upper95_mib_per_10min: float
    first_rss_mib: float  # the fitted floor at the end of the warm-up
    last_rss_mib: float  # and at the end of the run
    median_rss_mib: float
    flat: bool


def rss_floors(
    samples: Iterable[tuple[float, int]], warmup_s: float, window_s: float = FLOOR_WINDOW_S
) -> list[tuple[float, int]]:
    """The lowest (time, RSS) sample of each ``window_s`` after ``warmup_s``, in time order:
    RSS jumps with each batch in flight, and a leak lifts the floor."""
    floors: dict[int, tuple[float, int]] = {}
    for t_s, rss in samples:
        if t_s >= warmup_s:
            window = int((t_s - warmup_s) // window_s)
            if window not in floors or rss < floors[window][1]:
                floors[window] = (t_s, rss)
    return sorted(floors.values())


def verdict(
    samples: tuple[tuple[float, int], ...],
    warmup_s: float = DEFAULT_WARMUP_S,
    limit_mib_per_10min: float = FLAT_LIMIT_MIB_PER_10MIN,
) -> SoakVerdict:
    """Fit the floor of RSS (bytes, sampled at seconds) after ``warmup_s``."""
    end = samples[-1][0] if samples else 0.0
    kept = rss_floors(samples, warmup_s)
    if len(kept) < 3:  # too short a run to fit a line: never called flat
        nan = math.nan
        return SoakVerdict(end, warmup_s, nan, nan, nan, nan, nan, nan, False)
    t = np.array([s[0] for s in kept])
    rss_mib = np.array([s[1] for s in kept]) / MIB
    fit = stats.linregress(t, rss_mib)
    half = stats.t.ppf(0.975, len(kept) - 2) * fit.stderr
    slope = float(fit.slope * TEN_MINUTES_S)
    return SoakVerdict(
        seconds=end,
        warmup_s=warmup_s,
        slope_mib_per_10min=slope,
        lower95_mib_per_10min=float((fit.slope - half) * TEN_MINUTES_S),
        upper95_mib_per_10min=float((fit.slope + half) * TEN_MINUTES_S),
        first_rss_mib=float(fit.intercept + fit.slope * t[0]),
        last_rss_mib=float(fit.intercept + fit.slope * t[-1]),
        median_rss_mib=float(np.median(rss_mib)),
        flat=slope <= limit_mib_per_10min,
    )


def describe(v: SoakVerdict, rate_per_s: float) -> str:
    word = "flat" if v.flat else "GROWING"
    return (
        f"memory soak, {v.seconds / 60:.1f} min at {rate_per_s:,.0f} readings/s: RSS floor "
        f"{v.slope_mib_per_10min:+.2f} MiB/10 min after {v.warmup_s / 60:.1f} min of warm-up "
        f"(95% interval {v.lower95_mib_per_10min:+.2f} to {v.upper95_mib_per_10min:+.2f}; "
        f"fitted {v.first_rss_mib:.1f} -> {v.last_rss_mib:.1f} MiB): {word} "
        f"(limit {FLAT_LIMIT_MIB_PER_10MIN:.0f} MiB/10 min)"
    )


def rss_table(samples: tuple[tuple[float, int], ...], every_s: float = PRINT_EVERY_S) -> str:
    """RSS (MiB) every ``every_s``: what docs/performance.md shows of a soak."""
    shown, next_t = [], 0.0
    for t_s, rss in samples:
        if t_s >= next_t:
            shown.append(f"{t_s:6.0f} s {rss / MIB:7.1f}")
            next_t += every_s
    return "\n".join(shown)


def run(minutes: float, rate_per_s: float, scratch: Path) -> LatencyResult:
    with (
        servers(scratch) as (broker, influxdb),
        platform_process(scratch / "soak", broker, influxdb) as platform,
    ):
        return offered_load(platform, broker, influxdb, rate_per_s, minutes * 60, AGENT_BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_PER_S, help="readings/s")
    parser.add_argument("--warmup-minutes", type=float, default=DEFAULT_WARMUP_S / 60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="carbonlink-soak-") as scratch:
        result = run(args.minutes, args.rate, Path(scratch))
    v = verdict(result.rss_samples, args.warmup_minutes * 60)
    print(rss_table(result.rss_samples))
    print(
        f"offered {result.offered_per_s:,.0f}/s, stored {result.stored_per_s:,.0f}/s, "
        f"p50 {result.p50_s:.2f} s, p99 {result.p99_s:.2f} s, "
        f"{result.cpu_s / result.wall_s:.2f} cores"
    )
    print(describe(v, result.offered_per_s))


if __name__ == "__main__":
    main()
