"""Service commands: demo, agent, platform, query."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click
from fastapi import FastAPI

from carbonlink.agent import Agent, create_view_app
from carbonlink.cli._common import (
    DURATION,
    SPEED,
    broker_option,
    command_line,
    config_option,
    http_option,
    parse_host_port,
    run_async,
    serving_metrics,
    settings_from,
    shown_path,
    store_option,
    store_url,
    time_option,
    user_errors,
)
from carbonlink.cli._demo import (
    DEFAULT_HTTP_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_REFRESH_S,
    DEFAULT_SPEED,
    DEMO_JOURNAL,
    DEMO_PUBLIC_KEY,
    DemoOptions,
    demo_schedule,
    run_demo,
)
from carbonlink.cli.policy import BacktestWindow, backtest_warnings, render_backtest, run_backtest
from carbonlink.config import Settings
from carbonlink.core.memory import AllocatorTrim, exec_with_jemalloc, limit_arenas
from carbonlink.errors import ConfigError
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store, record_assignment
from carbonlink.storage import ACTIVITY_FIELDS, SERIES_FIELDS
from carbonlink.storage.series import FIELD_UNITS, series_table
from carbonlink.web.api import create_app, serve
from carbonlink.web.dashboard import mount_dashboard

# The demo shows the closed loop: stage 1 for two simulated hours, then stage 3, with the
# three fixed stages evaluated live beside it.
DEMO_POLICY = "policies/switch-1-to-3.yaml"
DEMO_SHADOWS = ("policies/stage1.yaml", "policies/stage2.yaml", "policies/stage3.yaml")
# Compared on the recording when the run ends (the README's backtest, step 3 of the tour).
COMPARED_POLICIES = (
    "policies/stage1.yaml",
    "policies/stage2-budget.yaml",
    "policies/stage3.yaml",
    "policies/carbon-price-path.yaml",
)
DEMO_BACKTEST_OUT = "../var/demo-backtest"  # beside the config, like policy backtest's


async def _with_http(
    service: Coroutine[Any, Any, None], app: FastAPI | None, listen: tuple[str, int] | None
) -> None:
    """Run a service, and its HTTP app beside it in the same loop when asked to."""
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(service)
        if app is not None and listen is not None:
            tasks.create_task(serve(app, *listen))
            click.echo(f"serving http://{listen[0]}:{listen[1]}/", err=True)


async def _running(*services: Coroutine[Any, Any, None]) -> None:
    """Run coroutines side by side until all have ended (the first error ends them all)."""
    async with asyncio.TaskGroup() as tasks:
        for service in services:
            tasks.create_task(service)


def _broker(settings: Settings, override: str | None) -> str:
    return override or settings.services.broker.url


@click.command()
@config_option
@click.option("--plants", default=None, help="Comma-separated plant ids [default: all].")
@click.option(
    "--speed",
    type=SPEED,
    default=str(DEFAULT_SPEED),
    help="Simulated seconds per second (the demo is live: `max` is for `simulate`).",
)
@click.option("--seed", type=int, default=0, help="Seed for every random draw of the run.")
@click.option(
    "--start",
    default=None,
    help="Simulated start, RFC 3339 or epoch ms: with --seed, the same plant data again "
    "[default: so that the run ends now].",
)
@click.option(
    "--duration",
    type=DURATION,
    default=None,
    help="Stop after this long (wall time: 60, 90s, 1h30m) [default: run until Ctrl-C].",
)
@click.option(
    "--refresh", type=DURATION, default=str(DEFAULT_REFRESH_S), help="Time between tables."
)
@click.option("--port", type=int, default=None, help="Embedded broker port [default: a free one].")
@click.option("--store", "store_override", default=None, help="Store URL [default: a temp file].")
@click.option(
    "--http",
    default=f"{DEFAULT_HTTP_HOST}:{DEFAULT_HTTP_PORT}",
    help="Dashboard HOST:PORT (a free port if taken); `off` for none.",
)
@click.option(
    "--keep",
    "keep_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the run's store and coordination journal in this folder (to backtest later).",
)
@click.option(
    "--policy",
    default=DEMO_POLICY,
    help="Coordination policy, relative to the config file's folder; `off` for none. "
    f"Shadows: {', '.join(DEMO_SHADOWS)}.",
)
@user_errors
def demo(
    config_path: Path | None,
    plants: str | None,
    speed: float | None,
    seed: int,
    start: str | None,
    duration: float | None,
    refresh: float,
    port: int | None,
    store_override: str | None,
    http: str,
    keep_dir: Path | None,
    policy: str,
) -> None:
    """Run plants, agents, the platform and a coordinator on an embedded broker; print
    live emissions and serve the dashboard."""
    if speed is None:
        raise ConfigError(
            None,
            "--speed",
            "the demo runs live beside its dashboard: give simulated seconds per second "
            f"(a backfill as fast as possible is `{command_line('simulate', '--speed', 'max')}`)",
        )
    settings = settings_from(config_path)
    plant_ids = plants.split(",") if plants else list(settings.plants)
    policy_path = None if policy == "off" else settings.path.parent / policy
    if policy_path is not None and not policy_path.is_file():
        raise ConfigError(None, "--policy", f"no policy file {policy_path}")
    shadows = [settings.path.parent / s for s in DEMO_SHADOWS] if policy_path else []
    with contextlib.ExitStack() as stack:
        if keep_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="carbonlink-demo-")))
        else:
            work = keep_dir.resolve()
            work.mkdir(parents=True, exist_ok=True)
        url = store_override or f"sqlite:///{work / 'demo.sqlite'}"
        listen = None if http == "off" else parse_host_port(http)
        period_s, switch_s = demo_schedule(duration, speed)
        options = DemoOptions(
            plant_ids, url, work, speed, seed, duration, refresh, port, listen,
            policy_path, [p for p in shadows if p.is_file()],
            start_ms=time_option(start, "--start"), period_s=period_s, switch_s=switch_s,
        )  # fmt: skip
        finished = run_async(run_demo(settings, options, open_store, sys.stdout))
        journal = work / DEMO_JOURNAL
        compared = [settings.path.parent / p for p in COMPARED_POLICIES]
        if finished is not None and policy_path is not None and journal.is_file():
            out_dir = work / "backtest" if keep_dir else settings.beside_config(DEMO_BACKTEST_OUT)
            _compare_policies(settings, url, compared, journal, out_dir, period_s)
        if keep_dir is not None:
            with_journal = ["--journal", shown_path(journal)] if policy_path else []
            with_policies = [w for p in compared for w in ("--policy", shown_path(p))]
            # The steps of the comparison above, so that the pasted command prints it again.
            with_step = ["--step", _duration_text(period_s)] if period_s else []
            backtest = command_line(
                "policy", "backtest", "--store", url, *with_journal, *with_policies, *with_step
            )
            click.echo(
                f"\nkept {work}: store {url}" + (f", journal {journal}" if policy_path else "")
                + f"\nbacktest it with:\n  {backtest}"
            )  # fmt: skip
            if policy_path:
                verify = command_line(
                    "coordinate", "--verify-ledger", shown_path(journal),
                    "--public-key", shown_path(work / DEMO_PUBLIC_KEY), "--store", url,
                )  # fmt: skip
                click.echo(f"check its ledger with:\n  {verify}")
        elif finished is not None:
            click.echo("\n(run with --keep DIR to keep the recording and its ledger)")


def _duration_text(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"


def _compare_policies(
    settings: Settings,
    url: str,
    policies: list[Path],
    journal: Path,
    out_dir: Path,
    step_s: float | None,
) -> None:
    """The end of the demo: the shipped policies replayed on what was just recorded,
    with the figures and units `policy backtest` prints."""
    step = step_s or settings.services.coordination.period_s
    click.echo(
        f"\ncomparing {len(policies)} policies on what was just recorded "
        f"(policy backtest, {step / 60:g} min steps):"
    )
    try:
        ran = run_backtest(
            settings, url, policies, BacktestWindow(step_s=step), journal_path=journal,
            out_dir=out_dir,
        )  # fmt: skip
    except ConfigError as exc:  # e.g. a run too short to hold one step
        click.echo(f"no comparison: {exc}")
        return
    click.echo(ran.headline)
    click.echo(render_backtest(ran.result.summary))
    for note in [*ran.notes, *backtest_warnings(ran.result.summary)]:
        click.echo(note)
    for path in ran.paths:
        click.echo(f"wrote {shown_path(path)}")


@click.command()
@config_option
@broker_option
@click.option("--plant", "plant_id", required=True, help="The plant this agent serves.")
@click.option(
    "--outbox",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Outbox file [default: agent.outbox_dir in the config / PLANT.sqlite].",
)
@http_option
@user_errors
def agent(
    config_path: Path | None,
    broker: str | None,
    plant_id: str,
    outbox: Path | None,
    http: str | None,
) -> None:
    """Run the factory-side agent of one plant (with --http: its local view at /view)."""
    listen = parse_host_port(http) if http else None
    settings = settings_from(config_path)
    plant = settings.plant(plant_id)
    address = parse_broker_url(_broker(settings, broker), settings.services.broker)
    service = Agent(
        plant,
        address,
        settings.services.agent,
        outbox_path=outbox or settings.outbox_path(plant_id),
        factor_set=settings.factor_set(plant.id),
        jetstream=settings.services.jetstream,
    )
    view = create_view_app(service) if listen else None
    config = settings.services.agent
    with serving_metrics(
        service.metrics, config.metrics_host, config.metrics_port, "agent.metrics_port"
    ):
        run_async(_with_http(service.run(), view, listen))


@click.command()
@config_option
@broker_option
@store_option
@click.option("--shared-group", default=None, help="Join an MQTT 5 shared subscription group.")
@click.option(
    "--worker",
    default=None,
    help="Worker name, appended to the MQTT client id; give each worker of a group its own.",
)
@click.option(
    "--spill",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Spill file [default: platform.spill_path in the config, with -WORKER].",
)
@click.option(
    "--audit/--no-audit",
    default=None,
    help="Count and dead-letter what is published where nobody listens [default: "
    "platform.audit_topics, and only without --shared-group: give one worker --audit].",
)
@http_option
@user_errors
def platform(
    config_path: Path | None,
    broker: str | None,
    store_override: str | None,
    shared_group: str | None,
    worker: str | None,
    spill: Path | None,
    audit: bool | None,
    http: str | None,
) -> None:
    """Run the platform: ingest telemetry, compute emissions, store them (--http: the API)."""
    listen = parse_host_port(http) if http else None
    settings = settings_from(config_path)
    config = settings.services.platform
    address = parse_broker_url(_broker(settings, broker), settings.services.broker)
    if spill is None:
        spill = settings.beside_config(config.spill_path)
        if worker:
            spill = spill.with_name(f"{spill.stem}-{worker}{spill.suffix}")
    # This process is the platform: it may choose the allocator for all of it, before it
    # opens anything (core.memory; docs/performance.md, "Flat memory").
    if _started_as_cli():
        try:
            exec_with_jemalloc(config.allocator, sys.argv[1:])
        except FileNotFoundError as exc:
            raise ConfigError(settings.path, "platform.allocator", str(exc)) from None
    store = open_store(store_url(settings, store_override))
    # On glibc's allocator: it keeps freed pages and gives each new thread an arena of its
    # own, and RSS creeps up without these two.
    memory = AllocatorTrim(config.memory_trim_s)
    if config.memory_trim_s > 0 and memory.allocator != "jemalloc":
        limit_arenas()
    service = Platform(
        Ingestor.from_settings(settings),
        store,
        address,
        config,
        spill_path=spill,
        shared_group=shared_group,
        client_id=f"{config.client_id}-{worker}" if worker else None,
        audit_topics=audit,
        jetstream=settings.services.jetstream,
        memory=memory,
    )
    api = None
    if listen:
        api = create_app(
            store,
            settings,
            health=service.health,
            journal_path=settings.journal_path(),
            metrics=service.metrics,
        )
        mount_dashboard(api, store, settings, health=service.health, status=service.agent_states)
    try:
        run_async(
            _with_http(
                _running(service.run(), record_assignment(store, settings.factor_versions())),
                api,
                listen,
            )
        )
    finally:
        service.close()
        store.close()


@click.command()
@config_option
@store_option
@click.option("--plant", "plant_id", required=True)
@click.option("--meter", default=None)
@click.option(
    "--field",
    type=click.Choice(SERIES_FIELDS),
    default="co2e_kg",
    help="value: the reading as metered (its unit in the unit column); *_kg: kg of the gas.",
)
@click.option("--start", default=None, help="RFC 3339 time or epoch ms.")
@click.option("--end", default=None, help="RFC 3339 time or epoch ms.")
@click.option(
    "--factor-set",
    default=None,
    help="Read emissions stored under another factor set [default: the plant's, as the "
    "config names it now].",
)
@click.option(
    "--factor-version", default=None, help="...and another version [default: its current one]."
)
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
    factor_set: str | None,
    factor_version: str | None,
    fmt: str,
) -> None:
    """Print a stored series, one row per reading, under one factor set version."""
    settings = settings_from(config_path)
    plant = settings.plant(plant_id)  # an unknown plant is an error naming the known ones
    if meter is not None and plant.meter(meter) is None:
        known = ", ".join(m.id for m in plant.meters)
        raise ConfigError(None, "--meter", f"plant {plant_id!r} has no meter {meter!r} ({known})")
    chosen = settings.factor_set(plant_id, name=factor_set)
    version = factor_version or chosen.version
    # Read-only: a mistyped path is an error, never a new empty store.
    store = open_store(store_url(settings, store_override), read_only=True)
    try:
        frame = series_table(
            store,
            plant_id,
            field,
            meter=meter,
            start_ms=time_option(start, "--start"),
            end_ms=time_option(end, "--end"),
            factor_set=chosen.name,
            factor_version=version,
        )
    finally:
        store.close()
    if field not in ACTIVITY_FIELDS:
        current = (
            "the plant's current" if factor_set is None and factor_version is None else "asked"
        )
        click.echo(
            f"{plant_id}: {field} in {FIELD_UNITS.get(field, 'the unit column')}, counted "
            f"once per reading under {chosen.name} {version} ({current} factor set)",
            err=True,
        )
    if fmt == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", date_format="iso"))
    else:
        click.echo(frame.to_string(index=False) if len(frame) else "no data")


def _started_as_cli() -> bool:
    """This process was started as ``carbonlink`` (the script or ``python -m``), so that
    re-running it with its own arguments runs the same command (not a test runner's)."""
    started = Path(sys.argv[0])
    return started.name == "carbonlink" or started.parts[-2:] == ("carbonlink", "__main__.py")
