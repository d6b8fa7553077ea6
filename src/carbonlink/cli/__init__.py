"""The `carbonlink` command."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from dotenv import load_dotenv

from carbonlink.cli._services import agent, demo, platform, query
from carbonlink.cli.api import api, recompute
from carbonlink.cli.broker import broker_access
from carbonlink.cli.coordinate import coordinate
from carbonlink.cli.factors import factors
from carbonlink.cli.policy import policy
from carbonlink.cli.simulate import simulate

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="carbonlink", prog_name="carbonlink")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".env"),
    help="Secrets file (KEY=value lines); what the environment already sets wins.",
)
def main(verbose: int, env_file: Path) -> None:
    """carbonlink: factory carbon monitoring over an emulated industrial internet platform."""
    # Secrets come from the environment or this file, never from config files.
    if env_file.is_file():
        load_dotenv(env_file, override=False)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for command in (
    demo,
    simulate,
    agent,
    platform,
    query,
    api,
    recompute,
    coordinate,
    policy,
    factors,
    broker_access,
):
    main.add_command(command)
