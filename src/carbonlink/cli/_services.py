"""Service commands: demo, simulate, agent, platform, query."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from carbonlink._demo import DEFAULT_REFRESH_S, DEFAULT_SPEED, DemoOptions, run_demo
from carbonlink._mqtt import parse_broker_url
from carbonlink.agent import Agent
from carbonlink.cli._common import (
    broker_option,
    config_option,
    run_async,
    settings_from,
    store_url,
    time_option,
    user_errors,
)
from carbonlink.config import Settings
from carbonlink.platform import Ingestor, Platform, open_store
from carbonlink.platform.storage import SERIES_FIELDS


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
            start_ms=time_option(start, "--start"),
            end_ms=time_option(end, "--end"),
        )
    finally:
        store.close()
    if fmt == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", date_format="iso"))
    else:
        click.echo(frame.to_string(index=False) if len(frame) else "no data")
