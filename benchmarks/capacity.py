"""The pipeline's capacity on this machine, and its latency at 50% and 80% of it.

A latency figure only means something below capacity: above it the backlog, and so the
latency, grows for as long as the offer lasts, and p99 measures the run's length. So the
offered load is ramped first, one fresh platform per step, until a step is not sustained;
the capacity is the highest sustained step. Then p50/p99 publish-to-queryable are
measured at 50% and 80% of it, in the same run.

A step is sustained when the pipeline stored what was offered (at least
SUSTAINED_SHARE of it, publish of the first message to queryable of the last) and its
backlog stayed bounded: the median latency of the step's last quarter of messages is at
most BACKLOG_GROWTH_S above that of its first quarter.

  .venv/bin/python -m benchmarks.capacity [--start 5000] [--step-seconds 20]
      [--latency-seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import InfluxDBServer, MosquittoServer

from benchmarks._common import AGENT_BATCH, servers
from benchmarks.ingest import platform_process
from benchmarks.latency import LatencyResult, offered_load

# benchmarks/run starts the ramp at this share of the batched rate it measured just before.
RAMP_START_SHARE: Final = 0.5
RAMP_FACTOR: Final = 1.2  # each step offers this much more than the last
REFINE_STEPS: Final = 1  # steps halfway (geometrically) between last sustained and first not
RAMP_MAX_PER_S: Final = 400_000.0  # a ceiling far above any machine this runs on
SUSTAINED_SHARE: Final = 0.95  # stored / offered for a step to count as sustained
BACKLOG_GROWTH_S: Final = 1.0  # last quarter's median latency over the first quarter's
LATENCY_SHARES: Final = (0.5, 0.8)  # of the capacity
TARGET_P99_S: Final = 1.0  # at 80% of capacity
TARGET_SHARE: Final = 0.8
DEFAULT_START_PER_S: Final = 5_000.0
DEFAULT_STEP_S: Final = 20.0
DEFAULT_LATENCY_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Step:
    asked_per_s: float
    result: LatencyResult

    @property
    def sustained(self) -> bool:
        r = self.result
        return (
            r.stored_per_s >= SUSTAINED_SHARE * r.offered_per_s
            and r.backlog_growth_s <= BACKLOG_GROWTH_S
        )


@dataclass(frozen=True, slots=True)
class Capacity:
    capacity_per_s: float  # readings/s: the offered load of the highest sustained step
    steps: tuple[Step, ...]
    at_share: dict[float, LatencyResult]  # share of capacity -> latency there

    @property
    def target_met(self) -> bool:
        at = self.at_share.get(TARGET_SHARE)
        return at is not None and at.p99_s < TARGET_P99_S


@dataclass(frozen=True, slots=True)
class Options:
    start_per_s: float = DEFAULT_START_PER_S
    step_s: float = DEFAULT_STEP_S
    latency_s: float = DEFAULT_LATENCY_S


def measure(
    scratch: Path,
    broker: MosquittoServer,
    influxdb: InfluxDBServer,
    options: Options,
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
) -> Capacity:
    counter = iter(range(1_000_000))

    def offer(rate: float, seconds: float) -> LatencyResult:
        with platform_process(scratch / f"capacity-{next(counter)}", broker, influxdb) as p:
            return offered_load(p, broker, influxdb, rate, seconds, AGENT_BATCH)

    steps: list[Step] = []
    rate = options.start_per_s
    good: float | None = None
    bad: float | None = None
    while rate <= RAMP_MAX_PER_S:
        step = Step(rate, offer(rate, options.step_s))
        steps.append(step)
        say(_describe(step))
        if not step.sustained:
            bad = rate
            break
        good = rate
        rate *= RAMP_FACTOR
    for _ in range(REFINE_STEPS if good is not None and bad is not None else 0):
        assert good is not None
        assert bad is not None
        middle = (good * bad) ** 0.5
        step = Step(middle, offer(middle, options.step_s))
        steps.append(step)
        say(_describe(step))
        good, bad = (middle, bad) if step.sustained else (good, middle)
    if good is None:
        raise RuntimeError(
            f"capacity: not even {options.start_per_s:,.0f} readings/s sustained; "
            "start lower (--start)"
        )
    capacity = max(s.result.offered_per_s for s in steps if s.sustained)
    at_share = {}
    for share in LATENCY_SHARES:
        at_share[share] = offer(share * capacity, options.latency_s)
        r = at_share[share]
        say(f"    {share:.0%} of capacity, {r.offered_per_s:,.0f}/s: p50 {r.p50_s:.2f} s, "
            f"p99 {r.p99_s:.2f} s")  # fmt: skip
    return Capacity(capacity, tuple(steps), at_share)


def _describe(step: Step) -> str:
    r = step.result
    verdict = "sustained" if step.sustained else "NOT sustained"
    return (
        f"    offered {r.offered_per_s:,.0f}/s: stored {r.stored_per_s:,.0f}/s, p50 "
        f"{r.p50_s:.2f} s, p99 {r.p99_s:.2f} s, backlog growth {r.backlog_growth_s:+.2f} s: "
        f"{verdict}"
    )


def report(result: Capacity) -> str:
    lines = [f"capacity: {result.capacity_per_s:,.0f} readings/s sustained"]
    for share, r in result.at_share.items():
        lines.append(
            f"  at {share:.0%} ({r.offered_per_s:,.0f}/s offered): p50 {r.p50_s:.2f} s, "
            f"p99 {r.p99_s:.2f} s, max {r.max_s:.2f} s, stored {r.stored_per_s:,.0f}/s"
        )
    verdict = "MET" if result.target_met else "MISSED"
    lines.append(f"target p99 < {TARGET_P99_S:.0f} s at {TARGET_SHARE:.0%} of capacity: {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--start", type=float, default=DEFAULT_START_PER_S, help="readings/s")
    parser.add_argument("--step-seconds", type=float, default=DEFAULT_STEP_S)
    parser.add_argument("--latency-seconds", type=float, default=DEFAULT_LATENCY_S)
    args = parser.parse_args()
    options = Options(args.start, args.step_seconds, args.latency_seconds)
    with (
        tempfile.TemporaryDirectory(prefix="carbonlink-capacity-") as scratch,
        servers(Path(scratch)) as (broker, influxdb),
    ):
        result = measure(Path(scratch), broker, influxdb, options)
    print(report(result))


if __name__ == "__main__":
    main()
