"""``carbonlink coordinate``: run a coordination policy against the plants, or check
the ledger of reports it keeps (``--verify-ledger``).

The model is a differential-game model in the spirit of Qin et al. (2026), our own
formulation (docs/coordination.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import click

from carbonlink._mqtt import parse_broker_url
from carbonlink.cli._common import (
    broker_option,
    config_option,
    parse_duration_s,
    run_async,
    settings_from,
    store_option,
    store_url,
    user_errors,
)
from carbonlink.coordination import DEFAULT_PERIOD_S, Coordinator, Ledger, load_policy
from carbonlink.platform import open_store

__all__ = ["coordinate"]

DEFAULT_POLICY: Final = Path("config/policies/stage3.yaml")
DEFAULT_LEDGER: Final = "../var/coordination-ledger.sqlite"  # beside the outboxes
EXIT_BROKEN_LEDGER: Final = 1


def verify_ledger(path: Path) -> None:
    """Print OK or the first broken report; exit 1 when the chain is broken."""
    if not path.is_file():
        raise click.BadParameter(f"no ledger file {path}", param_hint="--verify-ledger")
    with Ledger(path) as ledger:
        check = ledger.verify()
    if check.ok:
        click.echo(f"OK: {check.reports} reports, chain intact")
        return
    click.echo(f"BROKEN at report {check.broken_at}: {check.reason}")
    sys.exit(EXIT_BROKEN_LEDGER)


@click.command()
@config_option
@broker_option
@store_option
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_POLICY,
    help="Policy file (YAML): parameters and stage or schedule.",
)
@click.option(
    "--ledger",
    "ledger_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Report ledger [default: {DEFAULT_LEDGER}, relative to the config file].",
)
@click.option("--period", default=f"{DEFAULT_PERIOD_S:g}s", help="Reporting period (90s, 15m).")
@click.option(
    "--verify-ledger",
    "verify_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Only check this ledger's hash chain: print OK or the first broken report.",
)
@user_errors
def coordinate(
    config_path: Path | None,
    broker: str | None,
    store_override: str | None,
    policy_path: Path,
    ledger_path: Path | None,
    period: str,
    verify_path: Path | None,
) -> None:
    """Publish each plant's efforts for the policy's stage and report every period."""
    if verify_path is not None:
        verify_ledger(verify_path)
        return
    period_s = parse_duration_s(period)
    settings = settings_from(config_path)
    policy = load_policy(policy_path)
    address = parse_broker_url(broker or settings.services.broker.url, settings.services.broker)
    store = open_store(store_url(settings, store_override))
    ledger = Ledger(ledger_path or settings.beside_config(DEFAULT_LEDGER))
    service = Coordinator(
        tuple(settings.plants.values()), store, address, policy, ledger, period_s=period_s
    )
    try:
        run_async(service.run())
    finally:
        ledger.close()
        store.close()
