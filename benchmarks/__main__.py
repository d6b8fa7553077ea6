"""`benchmarks/run`: limits, the naive baseline and carbonlink, measured in one run.

  benchmarks/run                 the whole run (under 10 minutes on 2 cores)
  benchmarks/run --json out.json and the figures and ratios as JSON
  benchmarks/run --soak 600      the full 10-minute memory soak (default 120 s)
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

from benchmarks import backtest, limits, queries, scaling
from benchmarks import simulators as sim
from benchmarks._common import AGENT_BATCH, Workload, load_average, servers
from benchmarks.ingest import IngestResult, platform_process, throughput
from benchmarks.latency import LatencyResult, SoakVerdict, offered_load, soak_verdict

MIB: Final = 2**20
TARGET_BATCHED_VS_INFLUX: Final = 0.5
TARGET_PER_READING_VS_BROKER: Final = 0.3
TARGET_VS_NAIVE: Final = 10.0
TARGET_P99_S: Final = 2.0
LATENCY_OFFERED_PER_S: Final = 50_000
SOAK_SHARE_OF_BATCHED: Final = 0.5  # soak load: this share of the batched rate measured
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
    latency_s: float
    soak_s: float
    soak_per_s: float
    sim_meters: int
    sim_seconds: int
    query_days: int  # history the query-cost benchmark writes (a year in the full run)


# InfluxDB's raw rate is measured over as many readings as the batched run writes: its
# cache snapshots and compactions are part of what a sustained write costs.
FULL = Sizes(100_000, 1_000_000, 4_000, 100_000, 1_000_000, 20.0, 120.0, 20_000, 10_000, 20, 365)
QUICK = Sizes(5_000, 50_000, 500, 5_000, 50_000, 4.0, 10.0, 5_000, 1_000, 3, 14)


@dataclass(slots=True)
class Run:
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write figures and ratios here")
    parser.add_argument("--soak", type=float, help="soak seconds (600 for the full soak)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a harness check")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.soak is not None:
        sizes = Sizes(**{**_fields(sizes), "soak_s": args.soak})
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

        with platform_process(scratch / "latency", broker, influxdb) as platform:
            latency = _step(
                f"latency at {LATENCY_OFFERED_PER_S:,}/s offered", offered_load, platform,
                broker, influxdb, LATENCY_OFFERED_PER_S, sizes.latency_s, AGENT_BATCH,
            )  # fmt: skip
        figures["latency"] = _latency_figures(latency)

        # A soak looks for leaks, so it runs at a load the machine sustains today: a
        # saturated pipeline makes RSS swing with the backlog and hides any trend.
        soak_rate = min(
            sizes.soak_per_s, SOAK_SHARE_OF_BATCHED * figures["batched"]["readings_per_s"]
        )
        soak_rate = max(AGENT_BATCH, round(soak_rate / AGENT_BATCH) * AGENT_BATCH)
        with platform_process(scratch / "soak", broker, influxdb) as platform:
            soaked = _step(
                f"memory soak, {sizes.soak_s:.0f} s at {soak_rate:,}/s", offered_load, platform,
                broker, influxdb, soak_rate, sizes.soak_s, AGENT_BATCH,
            )  # fmt: skip
        figures["soak"] = _soak_figures(soaked, soak_verdict(soaked.rss_samples))

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


def _latency_figures(result: LatencyResult) -> dict[str, float]:
    return {
        "offered_per_s": result.offered_per_s,
        "stored_per_s": result.stored_per_s,
        "p50_s": result.p50_s,
        "p99_s": result.p99_s,
        "max_s": result.max_s,
        "messages": result.messages,
        "cores": result.cpu_s / result.wall_s,
        "peak_rss_mib": result.peak_rss / MIB,
    }


def _soak_figures(result: LatencyResult, verdict: SoakVerdict) -> dict[str, float | bool]:
    return {
        "seconds": verdict.seconds,
        "offered_per_s": result.offered_per_s,
        "stored_per_s": result.stored_per_s,
        "p50_s": result.p50_s,
        "p99_s": result.p99_s,
        "median_rss_mib": verdict.median_rss_mib,
        "slope_mib_per_10min": verdict.slope_mib_per_10min,
        "upper95_mib_per_10min": verdict.upper_mib_per_10min,
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
        "p99_s": figures["latency"]["p99_s"],
    }


def _verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def _table(f: dict[str, Any], r: dict[str, float]) -> str:
    lat, soak, sims = f["latency"], f["soak"], f["simulators"]
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
        (f"latency at {lat['offered_per_s']:,.0f}/s offered",
         f"p50 {lat['p50_s']:.2f} s, p99 {lat['p99_s']:.2f} s",
         f"stored {lat['stored_per_s']:,.0f}/s; max {lat['max_s']:.2f} s; "
         f"{lat['cores']:.2f} cores, peak {lat['peak_rss_mib']:.0f} MiB"),
        (f"latency at {soak['offered_per_s']:,.0f}/s offered (soak)",
         f"p50 {soak['p50_s']:.2f} s, p99 {soak['p99_s']:.2f} s", ""),
        (f"memory soak {soak['seconds']:.0f} s at {soak['offered_per_s']:,.0f}/s",
         f"{soak['slope_mib_per_10min']:+.1f} MiB/10 min",
         f"RSS floor; 95% upper {soak['upper95_mib_per_10min']:+.1f}; median RSS "
         f"{soak['median_rss_mib']:.0f} MiB; {'flat' if soak['flat'] else 'GROWING'}"),
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
        ("p99_s", r["p99_s"], f"< {TARGET_P99_S:.0f} s at {LATENCY_OFFERED_PER_S:,}/s",
         r["p99_s"] < TARGET_P99_S and lat["offered_per_s"] >= 0.95 * LATENCY_OFFERED_PER_S),
        ("memory flat (soak)", soak["upper95_mib_per_10min"], "no growth trend", soak["flat"]),
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
