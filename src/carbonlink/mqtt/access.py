"""Who may publish, subscribe and receive what on the stack's broker: Mosquitto's
dynamic-security file, written from the stack's logins and their passwords.

Mosquitto's classic ``acl_file`` checks what a login may publish and what the broker may
deliver to it, but never what it may *subscribe* to. For a shared subscription that is a
hole: any login could join the platform's group, the broker would deal it its share of the
telemetry, refuse to deliver it, and those readings would be lost. The dynamic-security
plugin checks SUBSCRIBE too (``subscribePattern``), so only platform logins can join.

Each login gets one role of its own (docs/architecture.md, "Access control"):

- ``PLANT`` (the plant's agent): publishes its telemetry, status and dead letters; reads its
  meters, its directives, its status and dead letters;
- ``PLANT.meters`` (its simulator or meter gateway): publishes its readings, its simulator
  status and the dead letters of directives it refuses; reads its directives;
- ``carbonlink.platform.N``: reads every plant's telemetry (also as ``$share/GROUP/...``) and
  status, and every carbonlink topic to count what nobody listens to; dead-letters; sends
  its startup probe;
- ``carbonlink.coordination``: publishes directives and the ledger anchor; reads the anchor;
- ``carbonlink.monitor``: reads status, simulator status, dead letters, directives and
  the ledger anchor; publishes nothing.

Passwords are stored as Mosquitto stores them: PBKDF2-HMAC-SHA512 over a random salt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from carbonlink import wire
from carbonlink.config import ID_PATTERN
from carbonlink.errors import ConfigError

USERS_VARIABLE: Final = "CARBONLINK_MQTT_USERS"
PBKDF2_ITERATIONS: Final = 101  # what mosquitto_ctrl writes (Mosquitto 2.0's default)
SALT_BYTES: Final = 12
PLATFORM_LOGIN: Final = re.compile(r"carbonlink\.platform\.[0-9a-z_-]+")
COORDINATION_LOGIN: Final = "carbonlink.coordination"
MONITOR_LOGIN: Final = "carbonlink.monitor"
_ROOT: Final = wire.TOPIC_ROOT


@dataclass(frozen=True, slots=True)
class Grant:
    """Topic filters a login may publish to, subscribe to, and receive messages on."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    receive: tuple[str, ...] = ()


def grant(username: str) -> Grant:
    """What ``username`` may do; a name that is no stack login is a ConfigError."""
    if PLATFORM_LOGIN.fullmatch(username):
        telemetry, status = wire.TELEMETRY_SUBSCRIPTION, wire.STATUS_SUBSCRIPTION
        return Grant(
            # PROBE_TOPIC: the startup probe of its telemetry subscription.
            publish=(f"{_ROOT}/+/{wire.Kind.DEADLETTER}", wire.PROBE_TOPIC),
            subscribe=(telemetry, wire.shared("+", telemetry), status, wire.EVERYTHING),
            receive=(wire.EVERYTHING,),
        )
    if username == COORDINATION_LOGIN:
        return Grant(
            publish=(f"{_ROOT}/+/{wire.Kind.DIRECTIVES}", wire.LEDGER_ANCHOR_TOPIC),
            subscribe=(wire.LEDGER_ANCHOR_TOPIC,),
            receive=(wire.LEDGER_ANCHOR_TOPIC,),
        )
    if username == MONITOR_LOGIN:
        kinds = (wire.Kind.STATUS, wire.Kind.SIM_STATUS, wire.Kind.DEADLETTER, wire.Kind.DIRECTIVES)
        watched = (*(f"{_ROOT}/+/{kind}" for kind in kinds), wire.LEDGER_ANCHOR_TOPIC)
        return Grant(subscribe=watched, receive=watched)
    plant, _, role = username.partition(".")
    if not re.fullmatch(ID_PATTERN, plant) or role not in ("", "meters"):
        raise ConfigError(
            None, USERS_VARIABLE, f"{username!r} is no stack login (a plant id, PLANT.meters, "
            f"carbonlink.platform.N, {COORDINATION_LOGIN} or {MONITOR_LOGIN})",
        )  # fmt: skip
    if role == "meters":
        directives = wire.directive_topic(plant)
        return Grant(
            publish=(
                wire.meter_subscription(plant),
                wire.sim_status_topic(plant),
                wire.deadletter_topic(plant),
            ),
            subscribe=(directives,),
            receive=(directives,),
        )
    own = (wire.status_topic(plant), wire.deadletter_topic(plant))
    heard = (wire.meter_subscription(plant), wire.directive_topic(plant), *own)
    return Grant(publish=(wire.telemetry_topic(plant), *own), subscribe=heard, receive=heard)


def password_hash(password: str, salt: bytes | None = None) -> dict[str, Any]:
    """A password as the dynamic-security file keeps it."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


def dynamic_security(passwords: Mapping[str, str]) -> dict[str, Any]:
    """The plugin's whole file: one client and one role per login, nothing by default."""
    clients, roles = [], []
    for username, password in sorted(passwords.items()):
        access = grant(username)
        rolename = f"login:{username}"
        clients.append({"username": username, "textName": rolename,
                        **password_hash(password), "roles": [{"rolename": rolename}]})  # fmt: skip
        acls = (
            [{"acltype": "publishClientSend", "topic": t, "allow": True} for t in access.publish]
            + [{"acltype": "subscribePattern", "topic": t, "allow": True}
               for t in access.subscribe]
            + [{"acltype": "publishClientReceive", "topic": t, "allow": True}
               for t in access.receive]
        )  # fmt: skip
        roles.append({"rolename": rolename, "acls": acls})
    return {
        "clients": clients,
        "roles": roles,
        "groups": [],
        # Whatever a role does not grant is refused, receiving included: a login sees
        # only the topics its role names.
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


def password_variable(username: str) -> str:
    """Where a login's password is: MQTT_PASSWORD_ and the name in upper case, every
    character other than A-Z and 0-9 as "_" (cement-01.meters: MQTT_PASSWORD_CEMENT_01_METERS)."""
    return "MQTT_PASSWORD_" + re.sub(r"[^A-Z0-9]", "_", username.upper())


def passwords_from(environ: Mapping[str, str]) -> dict[str, str]:
    """Every login named in $CARBONLINK_MQTT_USERS, with its password from the environment."""
    users = environ.get(USERS_VARIABLE, "").split()
    if not users:
        raise ConfigError(None, USERS_VARIABLE, "lists no MQTT usernames")
    passwords = {}
    for user in users:
        grant(user)  # a name the stack does not know stops here, before any file is written
        password = environ.get(password_variable(user), "")
        if not password:
            raise ConfigError(
                None, password_variable(user), "is empty: set it in .env (scripts/stack-env)"
            )
        passwords[user] = password
    return passwords


def write_dynamic_security(path: Path, passwords: Mapping[str, str]) -> None:
    """Write the file readable by its owner only (it holds password hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(dynamic_security(passwords), out, indent=1)
    partial.replace(path)
