"""`carbonlink factors`: list the emission factor library and compute emissions."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any

import click

from carbonlink.cli._common import format_option
from carbonlink.emissions import EmissionResult, FactorLibrary
from carbonlink.errors import CarbonlinkError

_GWP_CHOICES = ("AR4", "AR5", "AR6")
_SECTOR_CHOICES = ("manufacturing", "energy")
_SOURCE_WIDTH = 90


def _fail(error: CarbonlinkError) -> None:
    # User mistakes get one readable line and exit code 1, never a traceback.
    click.echo(f"error: {error}", err=True)
    raise SystemExit(1)


@click.group()
def factors() -> None:
    """Emission factor library: activities, factors and their sources."""


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@factors.command("list")
@format_option
def list_activities(fmt: str) -> None:
    """Show every activity with its kind, canonical unit and source."""
    activities = FactorLibrary.builtin().activities()
    if fmt != "table":
        rows = [asdict(a) | {"aliases": " ".join(a.aliases)} for a in activities]
        click.echo(json.dumps(rows, indent=2) if fmt == "json" else _csv(rows), nl=fmt == "json")
        return
    id_width = max(len(a.id) for a in activities)
    header = f"{'ACTIVITY':<{id_width}}  {'KIND':<11}  {'UNIT':<4}  SOURCE"
    click.echo(header)
    click.echo("-" * len(header))
    for activity in activities:
        source = activity.source
        if len(source) > _SOURCE_WIDTH:
            source = source[: _SOURCE_WIDTH - 3] + "..."
        click.echo(f"{activity.id:<{id_width}}  {activity.kind:<11}  {activity.unit:<4}  {source}")


def _print_result(result: EmissionResult) -> None:
    click.echo(f"{result.activity}: {result.amount:g} {result.unit}")
    click.echo(f"  converted      {result.converted_amount:.6g} {result.converted_unit}")
    click.echo(f"  CO2            {result.co2_kg:.6g} kg")
    click.echo(f"  CH4            {result.ch4_kg:.6g} kg")
    click.echo(f"  N2O            {result.n2o_kg:.6g} kg")
    click.echo(f"  CO2e ({result.gwp_set})    {result.co2e_kg:.6g} kg")
    if result.biogenic_co2_kg:
        click.echo(f"  biogenic CO2   {result.biogenic_co2_kg:.6g} kg (not in CO2e)")
    if result.co2e_range_kg is not None:
        low, high = result.co2e_range_kg
        click.echo(f"  CO2e 95% range {low:.6g} .. {high:.6g} kg")
    click.echo(f"  scope {result.scope}, category {result.category}")
    year = "" if result.factor_year is None else f", {result.factor_year}"
    click.echo(f"  factor version {result.factor_version}{year} ({result.data_quality})")
    click.echo(f"  source         {result.factor_source}")


# ignore_unknown_options: "-1" is the amount (refused with a reason), not an unknown option.
@factors.command("compute", context_settings={"ignore_unknown_options": True})
@click.argument("activity")
@click.argument("amount", type=float)
@click.argument("unit")
@click.option("--gwp", type=click.Choice(_GWP_CHOICES), default="AR5", show_default=True)
@click.option("--region", default=None, help="Grid region for electricity, e.g. CN, CN-East, US.")
@click.option("--year", type=int, default=None, help="Latest factor year not after this.")
@click.option(
    "--sector", type=click.Choice(_SECTOR_CHOICES), default="manufacturing", show_default=True
)
@format_option
def compute(
    activity: str,
    amount: float,
    unit: str,
    gwp: str,
    region: str | None,
    year: int | None,
    sector: str,
    fmt: str,
) -> None:
    """Emissions for AMOUNT UNIT of ACTIVITY (e.g. `natural_gas 1200 Nm3`)."""
    try:
        result = FactorLibrary.builtin().compute(
            activity, amount, unit, gwp=gwp, region=region, year=year, sector=sector
        )
    except CarbonlinkError as error:
        _fail(error)
        return
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif fmt == "csv":
        row = result.to_dict()
        low_high = row.pop("co2e_range_kg") or (None, None)
        row |= {"co2e_low_kg": low_high[0], "co2e_high_kg": low_high[1]}
        click.echo(_csv([row]), nl=False)
    else:
        _print_result(result)
