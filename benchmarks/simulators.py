"""Simulator throughput: meters x Hz per core, generation alone and with publishing.

Run: .venv/bin/python benchmarks/simulators.py [--meters 10000] [--seconds 60]
Publishing goes to a private Mosquitto this script starts (tests/servers.py).
`benchmarks/run` calls bench_generation and bench_publish for its simulator figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import MosquittoServer

from carbonlink.config import MeterConfig, PlantConfig, ReadingKind
from carbonlink.core.clock import SimClock
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.simulators import Fleet, emission_factors, simulate

START_MS = 1_780_000_000_000


def synthetic_plants(meters: int, per_plant: int, period_s: float) -> list[PlantConfig]:
    plants = []
    for p in range(max(1, meters // per_plant)):
        plant_meters = tuple(
            MeterConfig(
                id=f"m{j}",
                activity="electricity",
                unit="kWh",
                sample_period_s=period_s,
                reading=ReadingKind.COUNTER if j % 2 else ReadingKind.INTERVAL,
                nominal_per_hour=100.0,
                rated_per_hour=150.0,
            )
            for j in range(per_plant)
        )
        plants.append(
            PlantConfig(
                id=f"bench-{p}",
                name="bench",
                archetype="bench",
                grid_region="CN",
                factor_set="ipcc2006-cn2023",
                meters=plant_meters,
            )
        )
    return plants


def bench_generation(meters: int, per_plant: int, seconds: int) -> float:
    fleet = Fleet(synthetic_plants(meters, per_plant, 1.0), 0, START_MS, emission_factors())
    began = time.perf_counter()
    samples = sum(len(t.meters) for t in fleet.advance(START_MS + seconds * 1000))
    return samples / (time.perf_counter() - began)


def bench_publish(
    url: str, meters: int, per_plant: int, seconds: int, batch: int
) -> tuple[float, float]:
    plants = synthetic_plants(meters, per_plant, 1.0)
    clock = SimClock(START_MS, speed=None)
    began = time.perf_counter()
    stats = asyncio.run(
        simulate(
            plants, parse_broker_url(url), clock, duration_ms=seconds * 1000, batch_samples=batch
        )
    )
    wall = time.perf_counter() - began
    return stats.published_samples / wall, stats.published_messages / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--per-plant", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=30, help="simulated seconds at 1 Hz")
    args = parser.parse_args()
    rate = bench_generation(args.meters, args.per_plant, args.seconds)
    print(
        f"generation: {args.meters} meters at 1 Hz -> {rate:,.0f} samples/s per core "
        f"({rate / args.meters:.1f}x real time)"
    )
    fleet = Fleet(synthetic_plants(200, 10, 60.0), 0, START_MS, emission_factors())
    began = time.perf_counter()
    n = sum(len(t.meters) for t in fleet.advance(START_MS + 7 * 86_400_000))
    week = time.perf_counter() - began
    print(
        f"backfill generation, 20 plants x 10 meters at 1/min: one week in {week:.2f}s "
        f"({n:,} samples, {n / week:,.0f} samples/s; a year ~ {week * 52:.0f}s)"
    )
    with tempfile.TemporaryDirectory() as tmp, MosquittoServer(Path(tmp)) as server:
        for batch in (1, 10, 60):
            seconds = args.seconds if batch > 1 else max(5, args.seconds // 6)
            samples, messages = bench_publish(
                server.url, args.meters, args.per_plant, seconds, batch
            )
            print(
                f"generation + publish (QoS 1, mosquitto, batch {batch:>2} samples/message): "
                f"{samples:,.0f} samples/s in {messages:,.0f} messages/s "
                f"= {samples / args.meters:.2f}x real time for {args.meters} meters at 1 Hz"
            )


if __name__ == "__main__":
    main()
