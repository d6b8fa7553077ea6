"""`carbonlink simulate`: publish simulated plant meters over MQTT."""

from __future__ import annotations

from pathlib import Path

import click

from carbonlink._clock import SimClock, wall_clock_ms
from carbonlink._mqtt import parse_broker_url
from carbonlink.cli._common import (
    broker_option,
    config_option,
    parse_duration_s,
    run_async,
    settings_from,
    time_option,
    user_errors,
)
from carbonlink.simulators import simulate as run_simulators


@click.command()
@config_option
@broker_option
@click.option("--plants", default=None, help="Comma-separated plant ids [default: all].")
@click.option("--seed", type=int, default=0, help="Seed for every random draw of the run.")
@click.option("--speed", default="1", help="Simulated seconds per second, or `max`.")
@click.option("--duration", default=None, help="Simulated time to run: 90s, 30m, 12h, 7d.")
@click.option(
    "--start",
    default=None,
    help="Simulated start (RFC 3339 or epoch ms) [default: now; with --speed max, now "
    "minus --duration, so a backfill ends at the present].",
)
@user_errors
def simulate(
    config_path: Path | None,
    broker: str | None,
    plants: str | None,
    seed: int,
    speed: str,
    duration: str | None,
    start: str | None,
) -> None:
    """Publish simulated plant meters over MQTT."""
    settings = settings_from(config_path)
    selected = (
        [settings.plant(p) for p in plants.split(",")] if plants else list(settings.plants.values())
    )
    duration_ms = round(parse_duration_s(duration) * 1000) if duration else None
    start_ms = time_option(start, "--start")
    if speed == "max":
        if start_ms is None and duration_ms is not None:
            start_ms = wall_clock_ms() - duration_ms
        clock = SimClock(start_ms, speed=None)
    else:
        try:
            clock = SimClock(start_ms, speed=float(speed))
        except ValueError as exc:
            raise click.BadParameter(f"--speed: {exc}") from exc
    address = parse_broker_url(broker or settings.services.broker.url, settings.services.broker)
    stats = run_async(run_simulators(selected, address, clock, seed=seed, duration_ms=duration_ms))
    if stats is not None:
        click.echo(
            f"published {stats.published_samples} samples in {stats.published_messages} messages"
        )
