"""`carbonlink simulate`: publish simulated plant meters (or a recorded series) over MQTT."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

import click

from carbonlink.cli._common import (
    DURATION,
    SPEED,
    broker_option,
    config_option,
    run_async,
    settings_from,
    time_option,
    user_errors,
)
from carbonlink.cli._progress import progress
from carbonlink.core.clock import SimClock, run_clock
from carbonlink.errors import ConfigError
from carbonlink.mqtt.client import BrokerAddress, parse_broker_url
from carbonlink.simulators import (
    SimulationStats,
    load_faults,
    load_replay,
    load_replay_from_store,
    parse_fault,
    replay,
)
from carbonlink.simulators import simulate as run_simulators
from carbonlink.storage import open_store

BROKER_PROBE_S: Final = 5.0  # a broker that has not answered a TCP connect by then is not there
PROGRESS_POLL_S: Final = 0.5
MS_PER_MINUTE: Final = 60_000

FAULT_HELP = (
    "A fault: KIND:PLANT[/METER]@START[+DURATION][,key=value]; START is simulated time "
    "after the run starts. E.g. spike:cement-01/kiln-coal@10m+2m,factor=20. Repeatable."
)


@click.command()
@config_option
@broker_option
@click.option("--plants", default=None, help="Comma-separated plant ids [default: all].")
@click.option("--seed", type=int, default=0, help="Seed for every random draw of the run.")
@click.option(
    "--speed",
    type=SPEED,
    default="1",
    help="Simulated seconds per second, or `max`. Faster than 1 is a backfill ending now: "
    "the data never runs ahead of the wall clock.",
)
@click.option(
    "--duration", type=DURATION, default=None, help="Simulated time to run: 90s, 1h30m, 7d."
)
@click.option(
    "--start",
    default=None,
    help="Simulated start (RFC 3339 or epoch ms) [default: now at --speed 1; faster, so "
    "that the run reaches the present as it ends (without --duration: a day ago, then it "
    "follows the wall clock)].",
)
@click.option(
    "--faults",
    "faults_file",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML fault script (see config/faults/).",
)
@click.option("--fault", "fault_specs", multiple=True, help=FAULT_HELP)
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=1,
    help="Samples per message and meter (more: fewer, larger messages).",
)
@click.option(
    "--replay",
    "replay_source",
    default=None,
    help="Publish a recording instead: a CSV (time,plant,meter,value[,unit]) or a store "
    "URL (sqlite:///PATH, influxdb://HOST:PORT/DB) read over --from/--to.",
)
@click.option("--from", "replay_from", default=None, help="Store replay start (RFC 3339 or ms).")
@click.option("--to", "replay_to", default=None, help="Store replay end, exclusive.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@user_errors
def simulate(
    config_path: Path | None,
    broker: str | None,
    plants: str | None,
    seed: int,
    speed: float | None,
    duration: float | None,
    start: str | None,
    faults_file: Path | None,
    fault_specs: tuple[str, ...],
    batch: int,
    replay_source: str | None,
    replay_from: str | None,
    replay_to: str | None,
    quiet: bool,
) -> None:
    """Publish simulated plant meters over MQTT."""
    settings = settings_from(config_path)
    selected = (
        [settings.plant(p) for p in plants.split(",")] if plants else list(settings.plants.values())
    )
    duration_ms = round(duration * 1000) if duration else None
    start_ms = time_option(start, "--start")
    address = parse_broker_url(broker or settings.services.broker.url, settings.services.broker)
    if replay_source is not None or duration_ms is not None or speed is None or speed > 1:
        # A backfill has an end: a broker that is not there is an error now, not a retry
        # loop that never ends (a live plant, at --speed 1, waits for its broker instead).
        require_broker(address)
    if replay_source is not None:
        by_id = {p.id: p for p in selected}
        if "://" in replay_source:
            store = open_store(replay_source, read_only=True)
            try:
                rows = load_replay_from_store(
                    store,
                    by_id,
                    start_ms=time_option(replay_from, "--from"),
                    end_ms=time_option(replay_to, "--to"),
                )
            finally:
                store.close()
        else:
            rows = load_replay(replay_source, by_id)
        if not rows:
            raise click.UsageError(f"{replay_source}: nothing to replay")
        clock = _clock(speed, rows[0].ts_ms, None)
        stats = run_async(replay(rows, {p.id: p for p in selected}, address, clock))
    else:
        faults = list(load_faults(faults_file)) if faults_file else []
        faults += [parse_fault(spec) for spec in fault_specs]
        clock = _clock(speed, start_ms, duration_ms)
        run = run_simulators(
            selected,
            address,
            clock,
            seed=seed,
            duration_ms=duration_ms,
            faults=faults,
            batch_samples=batch,
            factor_set=settings.factor_set,
            stats=(stats := SimulationStats()),
        )
        shown = None if quiet else duration_ms
        stats = run_async(
            run if shown is None else with_progress(run, stats, clock.start_ms, shown)
        )
    if stats is not None:
        click.echo(
            f"published {stats.published_samples} samples in {stats.published_messages} messages"
            + (f", faults {stats.faults}" if stats.faults else "")
        )


def _clock(speed: float | None, start_ms: int | None, duration_ms: int | None) -> SimClock:
    return run_clock(speed, start_ms=start_ms, duration_ms=duration_ms)


async def with_progress(
    run: Coroutine[Any, Any, SimulationStats],
    stats: SimulationStats,
    start_ms: int,
    duration_ms: int,
) -> SimulationStats:
    """The backfill, with its progress (simulated time covered) on stderr."""
    task = asyncio.create_task(run)
    minutes = max(1, duration_ms // MS_PER_MINUTE)

    def describe(_: int) -> str:
        stats.refresh()
        return f"{stats.published_samples:,} samples sent"

    with progress(minutes, "backfill", unit=" simulated min", describe=describe) as advance:
        while not task.done():
            await asyncio.wait({task}, timeout=PROGRESS_POLL_S)
            advance(min(minutes, max(0, stats.sim_time_ms - start_ms) // MS_PER_MINUTE))
    return await task


def require_broker(address: BrokerAddress) -> None:
    """Fail in seconds, with the address, when nothing listens where the broker should."""
    try:
        socket.create_connection((address.host, address.port), timeout=BROKER_PROBE_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigError(
            None,
            "--broker",
            f"cannot reach the broker at {address.url}: {reason} (is it running? name "
            "another with --broker, or broker.url in the config)",
        ) from None
