"""Placeholder replaced by the emission factor CLI."""

import click


@click.group()
def factors() -> None:
    """Emission factor library."""
