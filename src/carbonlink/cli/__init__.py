"""The `carbonlink` command."""

from __future__ import annotations

import logging

import click

from carbonlink.cli._services import agent, demo, platform, query
from carbonlink.cli.api import api, recompute
from carbonlink.cli.coordinate import coordinate
from carbonlink.cli.factors import factors
from carbonlink.cli.policy import policy
from carbonlink.cli.simulate import simulate

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """carbonlink: factory carbon monitoring over an emulated industrial internet platform."""
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
):
    main.add_command(command)
