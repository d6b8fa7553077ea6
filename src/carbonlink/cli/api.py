"""Query-side commands: ``api`` (read-only HTTP API over a store) and ``recompute``."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import click

from carbonlink.cli._common import (
    command_line,
    config_option,
    parse_host_port,
    run_async,
    settings_from,
    store_option,
    store_url,
    time_option,
    user_errors,
)
from carbonlink.core.clock import wall_clock_ms
from carbonlink.errors import ConfigError
from carbonlink.platform.recompute import recompute as recompute_emissions
from carbonlink.storage import open_store
from carbonlink.web.api import create_app, serve
from carbonlink.web.dashboard import mount_dashboard

__all__ = ["DEFAULT_HTTP", "api", "recompute"]

DEFAULT_HTTP: Final = "127.0.0.1:8080"


@click.command()
@config_option
@store_option
@click.option("--http", "http", default=DEFAULT_HTTP, help="HOST:PORT to listen on.")
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="RFC 3339 time or epoch ms the dashboard takes as now (what 'today' means), "
    "e.g. a kept demo run's end [default: the wall clock].",
)
@user_errors
def api(config_path: Path | None, store_override: str | None, http: str, as_of: str | None) -> None:
    """Serve the read-only HTTP API over a store (OpenAPI at /openapi.json)."""
    settings = settings_from(config_path)
    host, port = parse_host_port(http)
    now_ms = time_option(as_of, "--as-of")
    store = open_store(store_url(settings, store_override))
    try:
        click.echo(
            f"carbonlink api on http://{host}:{port}/api/v1 (docs: /docs), "
            f"dashboard on http://{host}:{port}/",
            err=True,
        )
        app = create_app(store, settings, journal_path=settings.journal_path())
        # A recorded run's "today" is its own last day, not the wall clock's.
        clock = wall_clock_ms if now_ms is None else (lambda: now_ms)
        mount_dashboard(app, store, settings, clock=clock)
        run_async(serve(app, host, port))
    except OSError as exc:
        raise ConfigError(None, "--http", f"cannot listen on {host}:{port}: {exc}") from exc
    finally:
        store.close()


@click.command()
@config_option
@store_option
@click.option("--plant", "plant_id", required=True, help="The plant whose emissions to redo.")
@click.option("--start", required=True, help="RFC 3339 time or epoch ms (inclusive).")
@click.option("--end", required=True, help="RFC 3339 time or epoch ms (exclusive).")
@click.option(
    "--factor-set", default=None, help="Factor set name [default: the plant's, as it is now]."
)
@user_errors
def recompute(
    config_path: Path | None,
    store_override: str | None,
    plant_id: str,
    start: str,
    end: str,
    factor_set: str | None,
) -> None:
    """Recompute a plant's stored emissions under the current version of a factor set.

    New points carry the new version; points of other versions stay as they are.
    """
    settings = settings_from(config_path)
    start_ms, end_ms = time_option(start, "--start"), time_option(end, "--end")
    store = open_store(store_url(settings, store_override))
    try:
        result = recompute_emissions(
            store, settings, plant_id, start_ms=start_ms, end_ms=end_ms, factor_set=factor_set
        )
    finally:
        store.close()
    click.echo(
        f"{result.plant}: {result.readings} readings recomputed under "
        f"{result.factor_set} {result.factor_version} ({result.co2e_kg / 1000:.3f} tCO2e); "
        f"{result.skipped} without emissions skipped"
    )
    current = settings.factor_set(plant_id)
    if (current.name, current.version) != (result.factor_set, result.factor_version):
        # Stored beside the plant's own version, never counted with it.
        read_them = command_line("query", "--plant", plant_id, "--factor-set", result.factor_set)
        click.echo(
            f"{result.plant} counts under {current.name} {current.version} (its config); the "
            f"{result.factor_set} {result.factor_version} figures are kept beside them, read "
            f"them with `{read_them}` or make them count "
            f"by naming that set in the plant's file"
        )
