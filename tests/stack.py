"""The docker-compose stack's files as the tests read them: the compose file, .env.example,
compose's ${VAR} interpolation, and the MQTT identities the broker is given."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Final

import yaml

from carbonlink.mqtt.access import password_variable as broker_password_variable

REPO: Final = Path(__file__).resolve().parents[1]
COMPOSE_FILE: Final = REPO / "docker-compose.yml"
ENV_EXAMPLE: Final = REPO / ".env.example"
MOSQUITTO_DIR: Final = REPO / "config" / "mosquitto"
CARBONLINK_IMAGE: Final = "carbonlink:local"
USERS_VARIABLE: Final = "CARBONLINK_MQTT_USERS"
BROKER_ACCESS: Final = "broker-access"

# Compose's interpolation: $$ is a literal $, ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error} and $VAR (docs.docker.com/compose/how-tos/environment-variables/
# variable-interpolation/).
_VARIABLE: Final = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def carbonlink_services() -> dict[str, dict[str, Any]]:
    """The services that run carbonlink's services on its image (the others are Mosquitto,
    InfluxDB..., and broker-access, which writes the broker's logins once and stops)."""
    return {
        n: s
        for n, s in services().items()
        if s.get("image") == CARBONLINK_IMAGE and n != BROKER_ACCESS
    }


@cache
def env_example() -> dict[str, str]:
    """KEY=VALUE lines of .env.example (empty value: a secret to fill in)."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            found[key.strip()] = value.strip()
    return found


def filled_env() -> dict[str, str]:
    """.env.example with a made-up value for every secret: what compose would see."""
    return {k: v or f"test-{k.lower()}" for k, v in env_example().items()}


def strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def variables(text: str) -> Iterator[tuple[str, str | None]]:
    """(name, operator) of each variable reference; operator None, ':-', '-', ':?' or '?'."""
    for match in _VARIABLE.finditer(text):
        if match.group(0) == "$$":
            continue
        yield (match["braced"] or match["bare"], match["op"])


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute like compose; a required variable that is unset or empty raises."""

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match["braced"] or match["bare"], match["op"], match["arg"] or ""
        current = env.get(name)
        empty_counts = op is not None and op.startswith(":")
        missing = current is None or (empty_counts and current == "")
        if op in (":?", "?") and missing:
            raise KeyError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and missing:
            return arg
        return current or ""

    return _VARIABLE.sub(value, text)


def password_variable(username: str) -> str:
    """The variable `carbonlink broker-access` reads a username's password from."""
    return broker_password_variable(username)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as written (list or mapping form), not interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.partition("=") for item in raw)
        return {k: v for k, _, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def mqtt_users() -> list[str]:
    """The usernames the broker-access service gives the broker."""
    return environment(services()[BROKER_ACCESS])[USERS_VARIABLE].split()
