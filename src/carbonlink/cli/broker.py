"""`carbonlink broker-access`: the stack broker's logins and what each may do."""

from __future__ import annotations

import os
from pathlib import Path

import click

from carbonlink.cli._common import user_errors
from carbonlink.mqtt.access import passwords_from, write_dynamic_security


@click.command("broker-access")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write Mosquitto's dynamic-security file.",
)
@user_errors
def broker_access(out: Path) -> None:
    """Write Mosquitto's dynamic-security file for the stack: one login per name in
    $CARBONLINK_MQTT_USERS, each with its password from MQTT_PASSWORD_<NAME> and the topics
    its role may publish, subscribe to and receive (docs/architecture.md)."""
    passwords = passwords_from(os.environ)
    write_dynamic_security(out, passwords)
    click.echo(f"broker-access: {len(passwords)} logins in {out}", err=True)
