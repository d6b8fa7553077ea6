"""Service commands: demo, simulate, agent, platform, query."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import click

from carbonlink._clock import SimClock, wall_clock_ms
from carbonlink._demo import DEFAULT_REFRESH_S, DEFAULT_SPEED, DemoOptions, run_demo
from carbonlink._exceptions import ConfigError
from carbonlink._mqtt import parse_broker_url
from carbonlink.agent import Agent
from carbonlink.cli._common import (
    broker_option,
    config_option,
    run_async,
    settings_from,
    store_url,
    user_errors,
)
from carbonlink.config import Settings
from carbonlink.platform import Ingestor, Platform, open_store
from carbonlink.platform.storage import SERIES_FIELDS
from carbonlink.simulators import simulate as run_simulators
from carbonlink.wire import parse_timestamp

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d`` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"expected a duration like 90s, 30m, 12h, 7d; got {text!r}")
    return float(match[1]) * _DURATION_UNITS_S[match[2] or "s"]


def _broker(settings: Settings, override: str | None) -> str:
    return override or settings.services.broker.url


@click.command()
@config_option
@click.option("--plants", default=None, help="Comma-separated plant ids [default: all].")
@click.option("--speed", type=float, default=DEFAULT_SPEED, help="Simulated seconds per second.")
@click.option("--seed", type=int, default=0, help="Seed for every random draw of the run.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--refresh", type=float, default=DEFAULT_REFRESH_S, help="Seconds between tables.")
@click.option("--port", type=int, default=None, help="Embedded broker port [default: a free one].")
@click.option("--store", "store_override", default=None, help="Store URL [default: a temp file].")
@user_errors
def demo(
    config_path: Path | None,
    plants: str | None,
    speed: float,
    seed: int,
    duration: float | None,
    refresh: float,
    port: int | None,
    store_override: str | None,
) -> None:
    """Run plants, agents and the platform on an embedded broker; print live emissions."""
    settings = settings_from(config_path)
    plant_ids = plants.split(",") if plants else list(settings.plants)
    with tempfile.TemporaryDirectory(prefix="carbonlink-demo-") as scratch:
        url = store_override or f"sqlite:///{Path(scratch) / 'demo.sqlite'}"
        options = DemoOptions(plant_ids, url, speed, seed, duration, refresh, port)
        run_async(run_demo(settings, options, open_store, sys.stdout))


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
    start_ms = _time_option(start, "--start")
    if speed == "max":
        if start_ms is None and duration_ms is not None:
            start_ms = wall_clock_ms() - duration_ms
        clock = SimClock(start_ms, speed=None)
    else:
        try:
            clock = SimClock(start_ms, speed=float(speed))
        except ValueError as exc:
            raise click.BadParameter(f"--speed: {exc}") from exc
    address = parse_broker_url(_broker(settings, broker), settings.services.broker)
    stats = run_async(run_simulators(selected, address, clock, seed=seed, duration_ms=duration_ms))
    if stats is not None:
        click.echo(
            f"published {stats.published_samples} samples in {stats.published_messages} messages"
        )


@click.command()
@config_option
@broker_option
@click.option("--plant", "plant_id", required=True, help="The plant this agent serves.")
@user_errors
def agent(config_path: Path | None, broker: str | None, plant_id: str) -> None:
    """Run the factory-side agent of one plant."""
    settings = settings_from(config_path)
    plant = settings.plant(plant_id)
    address = parse_broker_url(_broker(settings, broker), settings.services.broker)
    run_async(Agent(plant, address, settings.services.agent).run())


@click.command()
@config_option
@broker_option
@click.option(
    "--store", "store_override", default=None, help="sqlite:///PATH or influxdb://HOST:PORT/DB"
)
@click.option("--shared-group", default=None, help="Join an MQTT 5 shared subscription group.")
@user_errors
def platform(
    config_path: Path | None,
    broker: str | None,
    store_override: str | None,
    shared_group: str | None,
) -> None:
    """Run the platform: ingest telemetry, compute emissions, store them."""
    settings = settings_from(config_path)
    address = parse_broker_url(_broker(settings, broker), settings.services.broker)
    store = open_store(store_url(settings, store_override))
    service = Platform(
        Ingestor.from_settings(settings),
        store,
        address,
        settings.services.platform,
        shared_group=shared_group,
    )
    try:
        run_async(service.run())
    finally:
        service.close()
        store.close()


@click.command()
@config_option
@click.option(
    "--store", "store_override", default=None, help="sqlite:///PATH or influxdb://HOST:PORT/DB"
)
@click.option("--plant", "plant_id", required=True)
@click.option("--meter", default=None)
@click.option("--field", type=click.Choice(SERIES_FIELDS), default="co2e_kg")
@click.option("--start", default=None, help="RFC 3339 time or epoch ms.")
@click.option("--end", default=None, help="RFC 3339 time or epoch ms.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@user_errors
def query(
    config_path: Path | None,
    store_override: str | None,
    plant_id: str,
    meter: str | None,
    field: str,
    start: str | None,
    end: str | None,
    fmt: str,
) -> None:
    """Print a stored series (one row per reading)."""
    url = store_override or store_url(settings_from(config_path), None)
    store = open_store(url)
    try:
        frame = store.series(
            plant_id,
            field=field,
            meter=meter,
            start_ms=_time_option(start, "--start"),
            end_ms=_time_option(end, "--end"),
        )
    finally:
        store.close()
    if fmt == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", date_format="iso"))
    else:
        click.echo(frame.to_string(index=False) if len(frame) else "no data")


def _time_option(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    raw: object = int(text) if text.isdigit() else text
    try:
        return parse_timestamp(raw)
    except Exception as exc:
        raise ConfigError(None, name, str(exc)) from exc
