"""`benchmarks/run`: limits, the naive baseline and carbonlink, measured in one run.

  benchmarks/run                 the whole run (15-20 minutes on 2 cores)
  benchmarks/run --json out.json and the figures and ratios as JSON
  benchmarks/run --soak-minutes 30  the full 30-minute memory soak (default 5 minutes)
  benchmarks/run --quick         small sizes, to check the harness (figures meaningless)

See docs/performance.md for what each figure means and what bounds it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from benchmarks import backtest, capacity, limits, queries, scaling, soak
from benchmarks import simulators as sim
from benchmarks._common import AGENT_BATCH, Workload, load_average, servers
from benchmarks.ingest import IngestResult, platform_process, throughput
from benchmarks.latency import LatencyResult, offered_load

MIB: Final = 2**20
TARGET_BATCHED_VS_INFLUX: Final = 0.5
TARGET_PER_READING_VS_BROKER: Final = 0.3
TARGET_VS_NAIVE: Final = 10.0
SOAK_SHARE_OF_CAPACITY: Final = 0.5  # soak load: this share of the capacity measured
SOAK_WARMUP_SHARE: Final = 0.3  # of a soak shorter than 10 minutes
INGEST_TIMEOUT_S: Final = 240.0
SCALING_SHARE_OF_BATCHED: Final = 4  # each of the six scaling runs takes a quarter as many
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sizes:
    broker_messages: int
    influx_readings: int
    naive_messages: int
    per_reading_messages: int
    batched_readings: int
    ramp_step_s: float
    latency_s: float
    soak_s: float
    soak_per_s: float
    sim_meters: int
    sim_seconds: int
    query_days: int  # history the query-cost benchmark writes (a year in the full run)


# InfluxDB's raw rate is measured over as many readings as the batched run writes: its
# cache snapshots and compactions are part of what a sustained write costs.
FULL = Sizes(
    100_000, 1_000_000, 4_000, 100_000, 1_000_000, 20.0, 30.0, 300.0, 20_000, 10_000, 20, 365
)
QUICK = Sizes(5_000, 50_000, 500, 5_000, 50_000, 4.0, 4.0, 20.0, 5_000, 1_000, 3, 14)


@dataclass(slots=True)
class Run:
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write figures and ratios here")
    parser.add_argument(
        "--soak-minutes", type=float, help="memory soak length (30 for the full soak)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a harness check")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.soak_minutes is not None:
        sizes = Sizes(**{**_fields(sizes), "soak_s": args.soak_minutes * 60})
    began = time.perf_counter()
    run = Run()
    run.figures["machine"] = _machine()
    machine = run.figures["machine"]
    _say(f"carbonlink benchmarks, {machine['date']}: load {machine['load_start']}")
    with tempfile.TemporaryDirectory(prefix="carbonlink-bench-") as scratch:
        measure(Path(scratch), sizes, run)
    run.figures["machine"]["load_end"] = _load()
    run.figures["machine"]["wall_s"] = round(time.perf_counter() - began, 1)
    ratios = _ratios(run.figures)
    print(_table(run.figures, ratios))
    for note in run.notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps({"figures": run.figures, "ratios": ratios}, indent=2))
        print(f"wrote {args.json}")


def measure(scratch: Path, sizes: Sizes, run: Run) -> None:
    figures = run.figures
    with servers(scratch) as (broker, influxdb):
        config = limits.bench_config(scratch / "limits", broker, influxdb)
        workload = Workload.from_config(config)
        one_per_message = workload.messages(0, sizes.per_reading_messages, 1)

        figures["broker_msgs_per_s"] = _step(
            "broker C-to-C", limits.broker_rate, broker, one_per_message[: sizes.broker_messages]
        )
        lines = limits.platform_lines(config, workload, sizes.influx_readings)
        influx = _step("InfluxDB raw", limits.influx_rate, influxdb, lines, sizes.influx_readings)
        figures["influx_readings_per_s"] = influx.readings_per_s
        figures["influx_lines_per_s"] = influx.lines_per_s
        figures["influx_by_writers"] = influx.by_writers
        lines.clear()

        naive_lines = one_per_message[: sizes.naive_messages]
        with platform_process(scratch / "naive", broker, influxdb, naive=True) as naive:
            result = _step(
                "naive baseline", throughput, naive, broker, influxdb, naive_lines,
                len(naive_lines), 100, INGEST_TIMEOUT_S,
            )  # fmt: skip
        figures["naive"] = _ingest_figures(result)

        with platform_process(scratch / "per-reading", broker, influxdb) as platform:
            result = _step(
                "carbonlink, one reading per message", throughput, platform, broker, influxdb,
                one_per_message, len(one_per_message), 200, INGEST_TIMEOUT_S,
            )  # fmt: skip
        figures["per_reading"] = _ingest_figures(result)
        one_per_message.clear()

        batched_lines = workload.messages(0, sizes.batched_readings, AGENT_BATCH)
        with platform_process(scratch / "batched", broker, influxdb) as platform:
            result = _step(
                "carbonlink, batched telemetry", throughput, platform, broker, influxdb,
                batched_lines, sizes.batched_readings, AGENT_BATCH // workload.per_row,
                INGEST_TIMEOUT_S,
            )  # fmt: skip
        figures["batched"] = _ingest_figures(result)
        batched_lines.clear()

        # 1, 2 and 3 workers on JetStream and on Mosquitto shared subscriptions.
        figures["scaling"] = scaling.figures(_step(
            "intake scaling (JetStream, MQTT shared)", scaling.measure, scratch / "scaling",
            broker, influxdb, sizes.batched_readings // SCALING_SHARE_OF_BATCHED,
        ))  # fmt: skip

        # Latency means something only below capacity: find it, then measure at 50% and
        # 80% of it (benchmarks/capacity.py).
        start = capacity.RAMP_START_SHARE * figures["batched"]["readings_per_s"]
        options = capacity.Options(start, sizes.ramp_step_s, sizes.latency_s)
        found = _step("capacity ramp, then latency at 50% and 80%", capacity.measure,
                      scratch, broker, influxdb, options)  # fmt: skip
        figures["capacity"] = _capacity_figures(found)

        # A soak looks for leaks, so it runs at a load the machine sustains today: a
        # saturated pipeline makes RSS swing with the backlog and hides any trend.
        soak_rate = min(sizes.soak_per_s, SOAK_SHARE_OF_CAPACITY * found.capacity_per_s)
        soak_rate = max(AGENT_BATCH, round(soak_rate / AGENT_BATCH) * AGENT_BATCH)
        with platform_process(scratch / "soak", broker, influxdb) as platform:
            soaked = _step(
                f"memory soak, {sizes.soak_s / 60:.0f} min at {soak_rate:,}/s", offered_load,
                platform, broker, influxdb, soak_rate, sizes.soak_s, AGENT_BATCH,
            )  # fmt: skip
        warmup = min(soak.DEFAULT_WARMUP_S, SOAK_WARMUP_SHARE * sizes.soak_s)
        figures["soak"] = _soak_figures(soaked, soak.verdict(soaked.rss_samples, warmup))

        figures["simulators"] = _step("simulators", _simulators, broker.url, sizes)
        influxdb.create_database("queries")
        figures["queries"] = _step(
            f"query cost, {sizes.query_days} days of {len(queries.PLANTS)} plants",
            _queries, scratch, influxdb.store_url("queries"), sizes.query_days,
        )  # fmt: skip
    measured, why = backtest.measure()
    figures["backtest"] = None if measured is None else {
        "policy_plant_hours_per_s": measured.rate,
        "policies": measured.policies, "plants": measured.plants,
        "one_policy_one_plant_hours_per_s": measured.baseline_rate,
        "vs_one_by_one": measured.vs_one_by_one,
    }  # fmt: skip
    if measured is None:
        _say(why)
        run.notes.append(why)


def _simulators(broker_url: str, sizes: Sizes) -> dict[str, float]:
    generation = sim.bench_generation(sizes.sim_meters, 500, sizes.sim_seconds)
    samples, messages = sim.bench_publish(broker_url, sizes.sim_meters, 500, sizes.sim_seconds, 60)
    return {
        "generation_meter_hz_per_core": generation,
        "publish_samples_per_s": samples,
        "publish_messages_per_s": messages,
    }


def _queries(scratch: Path, influx_url: str, days: int) -> dict[str, dict[str, float]]:
    results = queries.measure_both(scratch / "queries", influx_url, days, say=_say)
    return {
        r.store: {
            "days": days, "readings": r.readings, "write_readings_per_s": r.readings / r.write_s,
            "kpis_s": r.kpis_s, "kpis_cpu_s": r.kpis_cpu_s, "kpis_raw_s": r.kpis_raw_s,
            "totals_s": r.totals_s, "totals_cpu_s": r.totals_cpu_s,
            "totals_raw_s": r.totals_raw_s,
        }
        for r in results
    }  # fmt: skip


def _ingest_figures(result: IngestResult) -> dict[str, float]:
    return {
        "readings_per_s": result.rate,
        "readings": result.readings,
        "wall_s": result.wall_s,
        "cpu_us_per_reading": result.cpu_us_per_reading,
        "cores": result.cores,
        "peak_rss_mib": result.peak_rss / MIB,
    }


def _capacity_figures(found: capacity.Capacity) -> dict[str, Any]:
    return {
        "readings_per_s": found.capacity_per_s,
        "steps": [
            {**_latency_figures(step.result), "sustained": step.sustained} for step in found.steps
        ],
        **{f"at_{share:.0%}": _latency_figures(r) for share, r in found.at_share.items()},
        "target_met": found.target_met,
    }


def _latency_figures(result: LatencyResult) -> dict[str, float]:
    return {
        "offered_per_s": result.offered_per_s,
        "stored_per_s": result.stored_per_s,
        "p50_s": result.p50_s,
        "p99_s": result.p99_s,
        "max_s": result.max_s,
        "backlog_growth_s": result.backlog_growth_s,
        "messages": result.messages,
        "cores": result.cpu_s / result.wall_s,
        "peak_rss_mib": result.peak_rss / MIB,
    }


def _soak_figures(result: LatencyResult, verdict: soak.SoakVerdict) -> dict[str, float | bool]:
    return {
        "seconds": verdict.seconds,
        "warmup_s": verdict.warmup_s,
        "offered_per_s": result.offered_per_s,
        "stored_per_s": result.stored_per_s,
        "p50_s": result.p50_s,
        "p99_s": result.p99_s,
        "median_rss_mib": verdict.median_rss_mib,
        "slope_mib_per_10min": verdict.slope_mib_per_10min,
        "lower95_mib_per_10min": verdict.lower95_mib_per_10min,
        "upper95_mib_per_10min": verdict.upper95_mib_per_10min,
        "flat": verdict.flat,
    }


def _ratios(figures: dict[str, Any]) -> dict[str, float]:
    return {
        "batched_vs_influx": figures["batched"]["readings_per_s"]
        / figures["influx_readings_per_s"],
        "per_reading_vs_broker": (
            figures["per_reading"]["readings_per_s"] / figures["broker_msgs_per_s"]
        ),
        "vs_naive": figures["per_reading"]["readings_per_s"] / figures["naive"]["readings_per_s"],
        "p99_s_at_80pct_capacity": figures["capacity"]["at_80%"]["p99_s"],
    }


def _verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def _table(f: dict[str, Any], r: dict[str, float]) -> str:
    cap, soaked, sims = f["capacity"], f["soak"], f["simulators"]
    at50, at80 = cap["at_50%"], cap["at_80%"]
    by_writers = ", ".join(f"{w}: {v:,.0f}" for w, v in f["influx_by_writers"].items())
    rows = [
        ("LIMITS", "", ""),
        ("broker C-to-C, QoS 1, one reading/message", f"{f['broker_msgs_per_s']:,.0f} msg/s",
         "mosquitto_pub -l -> mosquitto_sub"),
        ("InfluxDB raw write, 5,000-line batches", f"{f['influx_readings_per_s']:,.0f} readings/s",
         f"{f['influx_lines_per_s']:,.0f} lines/s; by writers {by_writers}"),
        ("NAIVE BASELINE", "", ""),
        ("paho loop_start, json.loads, 1 write/msg",
         f"{f['naive']['readings_per_s']:,.0f} readings/s", _cost(f["naive"])),
        ("CARBONLINK (publish -> queryable)", "", ""),
        ("one reading per message", f"{f['per_reading']['readings_per_s']:,.0f} readings/s",
         _cost(f["per_reading"])),
        ("batched telemetry (500/message)", f"{f['batched']['readings_per_s']:,.0f} readings/s",
         _cost(f["batched"])),
        ("capacity (sustained, bounded backlog)", f"{cap['readings_per_s']:,.0f} readings/s",
         "ramp: " + ", ".join(f"{s['offered_per_s']:,.0f}{'' if s['sustained'] else ' (not)'}"
                              for s in cap["steps"])),
        *((f"latency at {name} of capacity, {at['offered_per_s']:,.0f}/s",
           f"p50 {at['p50_s']:.2f} s, p99 {at['p99_s']:.2f} s",
           f"stored {at['stored_per_s']:,.0f}/s; max {at['max_s']:.2f} s; "
           f"{at['cores']:.2f} cores, peak {at['peak_rss_mib']:.0f} MiB")
          for name, at in (("50%", at50), ("80%", at80))),
        (f"latency at {soaked['offered_per_s']:,.0f}/s offered (soak)",
         f"p50 {soaked['p50_s']:.2f} s, p99 {soaked['p99_s']:.2f} s", ""),
        (f"memory soak {soaked['seconds'] / 60:.1f} min at {soaked['offered_per_s']:,.0f}/s",
         f"{soaked['slope_mib_per_10min']:+.2f} MiB/10 min",
         f"RSS floor after {soaked['warmup_s'] / 60:.1f} min; 95% interval "
         f"{soaked['lower95_mib_per_10min']:+.2f} to {soaked['upper95_mib_per_10min']:+.2f}; "
         f"median RSS {soaked['median_rss_mib']:.0f} MiB; "
         f"{'flat' if soaked['flat'] else 'GROWING'}"),
        ("INTAKE SCALING (publish -> queryable, batched)", "", ""),
        *scaling.table(f["scaling"]),
        ("SIMULATORS", "", ""),
        ("generation (meters x Hz per core)", f"{sims['generation_meter_hz_per_core']:,.0f}", ""),
        ("generation + publish, 60 samples/msg", f"{sims['publish_samples_per_s']:,.0f} samples/s",
         f"{sims['publish_messages_per_s']:,.0f} msg/s"),
        *_query_rows(f["queries"]),
        ("backtest (policy x plant x sim-hours / s)",
         "n/a" if f["backtest"] is None else f"{f['backtest']['policy_plant_hours_per_s']:,.0f}",
         "not available in this build" if f["backtest"] is None else
         (f"{f['backtest']['policies']} policies x {f['backtest']['plants']} plants; "
          f"{f['backtest']['vs_one_by_one']:.2f}x the rate of 1 x 1")),
    ]  # fmt: skip
    lines = [f"{name:<46} {figure:>26}  {detail}".rstrip() for name, figure, detail in rows]
    targets = [
        ("batched_vs_influx", r["batched_vs_influx"], f">= {TARGET_BATCHED_VS_INFLUX}",
         r["batched_vs_influx"] >= TARGET_BATCHED_VS_INFLUX),
        ("per_reading_vs_broker", r["per_reading_vs_broker"], f">= {TARGET_PER_READING_VS_BROKER}",
         r["per_reading_vs_broker"] >= TARGET_PER_READING_VS_BROKER),
        ("vs_naive", r["vs_naive"], f">= {TARGET_VS_NAIVE:.0f}",
         r["vs_naive"] >= TARGET_VS_NAIVE),
        ("p99_s_at_80pct_capacity", r["p99_s_at_80pct_capacity"],
         f"< {capacity.TARGET_P99_S:.0f} s", cap["target_met"]),
        ("memory slope, MiB/10 min (soak)", soaked["slope_mib_per_10min"],
         f"<= {soak.FLAT_LIMIT_MIB_PER_10MIN:.0f}", soaked["flat"]),
        *(
            (f"{store} {what}, {q['days']} days (s)", q[f"{what}_s"],
             f"< {queries.TARGET_S:.0f} s", q[f"{what}_s"] < queries.TARGET_S)
            for store, q in f["queries"].items() for what in ("kpis", "totals")
        ),
    ]  # fmt: skip
    lines += ["", "RATIOS (same run)", *(
        f"{name:<46} {value:>26.2f}  target {target}: {_verdict(met)}"
        for name, value, target, met in targets
    )]  # fmt: skip
    machine = f["machine"]
    lines += ["", f"machine: {machine['cpu']}, {machine['cores']} cores; load "
              f"{machine['load_start']} at start, {machine['load_end']} at end; "
              f"run took {machine['wall_s']:.0f} s"]  # fmt: skip
    return "\n".join(lines)


def _query_rows(figures: dict[str, dict[str, float]]) -> list[tuple[str, str, str]]:
    rows = [("QUERIES (a year of five plants; rollups vs raw scan)", "", "")]
    for store, q in figures.items():
        rows += [
            (f"{store}: KPIs, one plant", f"{q['kpis_s']:.3f} s",
             f"raw scan {q['kpis_raw_s']:.2f} s; {q['kpis_cpu_s']:.3f} s CPU"),
            (f"{store}: totals, five plants", f"{q['totals_s']:.3f} s",
             f"raw scan {q['totals_raw_s']:.2f} s; {q['totals_cpu_s']:.3f} s CPU"),
            (f"{store}: write with rollups", f"{q['write_readings_per_s']:,.0f} readings/s",
             f"{q['readings']:,.0f} readings, {q['days']:.0f} days"),
        ]  # fmt: skip
    return rows


def _cost(figures: dict[str, float]) -> str:
    return (
        f"{figures['cpu_us_per_reading']:.1f} us CPU/reading, {figures['cores']:.2f} cores, "
        f"peak {figures['peak_rss_mib']:.0f} MiB"
    )


def _step(what: str, action: Callable[..., T], *args: Any) -> T:
    began = time.perf_counter()
    _say(f"... {what}")
    result = action(*args)
    _say(f"    done in {time.perf_counter() - began:.1f} s")
    return result


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in load_average())


def _machine() -> dict[str, Any]:
    cpu = host.processor() or host.machine()
    with_model = Path("/proc/cpuinfo")
    if with_model.exists():
        for line in with_model.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": host.python_version(),
        "load_start": _load(),
    }


def _fields(sizes: Sizes) -> dict[str, Any]:
    return {name: getattr(sizes, name) for name in Sizes.__dataclass_fields__}


if __name__ == "__main__":
    main()
