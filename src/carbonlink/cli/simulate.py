"""`carbonlink simulate`: publish simulated plant meters (or a recorded series) over MQTT."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from carbonlink.cli._common import (
    broker_option,
    config_option,
    parse_duration_s,
    run_async,
    settings_from,
    time_option,
    user_errors,
)
from carbonlink.core.clock import SimClock, run_clock
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.simulators import (
    load_faults,
    load_replay,
    load_replay_from_store,
    parse_fault,
    replay,
)
from carbonlink.simulators import simulate as run_simulators
from carbonlink.storage import open_store

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
    default="1",
    help="Simulated seconds per second, or `max`. Faster than 1 is a backfill ending now: "
    "the data never runs ahead of the wall clock.",
)
@click.option("--duration", default=None, help="Simulated time to run: 90s, 30m, 12h, 7d.")
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
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@user_errors
def simulate(
    config_path: Path | None,
    broker: str | None,
    plants: str | None,
    seed: int,
    speed: str,
    duration: str | None,
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
    duration_ms = round(parse_duration_s(duration) * 1000) if duration else None
    start_ms = time_option(start, "--start")
    address = parse_broker_url(broker or settings.services.broker.url, settings.services.broker)
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
        stats = run_async(
            run_simulators(
                selected,
                address,
                clock,
                seed=seed,
                duration_ms=duration_ms,
                faults=faults,
                batch_samples=batch,
                factor_set=settings.factor_set,
                progress=None if quiet else sys.stderr,
            )
        )
    if stats is not None:
        click.echo(
            f"published {stats.published_samples} samples in {stats.published_messages} messages"
            + (f", faults {stats.faults}" if stats.faults else "")
        )


def _clock(speed: str, start_ms: int | None, duration_ms: int | None) -> SimClock:
    if speed == "max":
        return run_clock(None, start_ms=start_ms, duration_ms=duration_ms)
    try:
        return run_clock(float(speed), start_ms=start_ms, duration_ms=duration_ms)
    except ValueError as exc:
        raise click.BadParameter(f"--speed: {exc}") from exc
