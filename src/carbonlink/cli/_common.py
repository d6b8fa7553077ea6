"""Helpers shared by the CLI commands."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shlex
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from carbonlink.config import Settings, load_config
from carbonlink.core.durations import parse_duration_s as _parse_duration_s
from carbonlink.core.metrics import CollectorRegistry, MetricsServer
from carbonlink.errors import CarbonlinkError, ConfigError
from carbonlink.wire import parse_query_time

P = ParamSpec("P")
T = TypeVar("T")

EXIT_USAGE_ERROR = 2

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Services config [default: $CARBONLINK_CONFIG or config/carbonlink.yaml].",
)
store_option = click.option(
    "--store",
    "store_override",
    default=None,
    help="sqlite:///PATH, influxdb://HOST:PORT/DB or influxdb2://HOST:PORT/BUCKET?org=ORG "
    "[default: platform.store in the config].",
)
broker_option = click.option(
    "--broker", default=None, help="mqtt://HOST:PORT [default: broker.url in the config]."
)


def user_errors(command: Callable[P, T]) -> Callable[P, T]:
    """Turn carbonlink errors into one clear line on stderr and exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except CarbonlinkError as error:
            click.echo(f"carbonlink: error: {error}", err=True)
            sys.exit(EXIT_USAGE_ERROR)

    return wrapper


@contextlib.contextmanager
def serving_metrics(
    registry: CollectorRegistry, host: str, port: int | None, key: str
) -> Iterator[None]:
    """Serve ``registry`` at /metrics while the block runs, when the config's ``key``
    names a port; a port in use is a ConfigError naming the key."""
    if port is None:
        yield
        return
    try:
        server = MetricsServer(registry, host, port)
    except OSError as exc:
        raise ConfigError(None, key, f"cannot serve metrics on {host}:{port}: {exc}") from exc
    click.echo(f"metrics at http://{host}:{server.port}/metrics", err=True)
    try:
        yield
    finally:
        server.close()


def run_async(main: Coroutine[Any, Any, T]) -> T | None:
    """Run a service; Ctrl-C is a normal way to stop it, not an error."""
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        return None


def settings_from(config_path: Path | None) -> Settings:
    return load_config(config_path)


def store_url(settings: Settings, override: str | None) -> str:
    """Relative SQLite paths in a config file are relative to that file, not the cwd."""
    if override:
        return override
    url = settings.services.platform.store
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(settings.beside_config(url[len(prefix) :]))
    return url


def parse_duration_s(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d`` -> seconds."""
    try:
        return _parse_duration_s(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def time_option(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_query_time(text)
    except Exception as exc:
        raise ConfigError(None, name, str(exc)) from exc


def required_time(text: str, name: str) -> int:
    """A time option that must be given: RFC 3339 or epoch ms."""
    value = time_option(text, name)
    if value is None:
        raise ConfigError(None, name, "a time is required")
    return value


def parse_host_port(text: str, option: str = "--http") -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); a bad value is a ConfigError on ``option``."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise ConfigError(None, option, f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


http_option = click.option(
    "--http", default=None, help="Serve HTTP on HOST:PORT (e.g. 127.0.0.1:8080)."
)


def command_line(*args: str) -> str:
    """A carbonlink command as the user can paste it: run the way this one was
    (``.venv/bin/carbonlink`` or ``python -m carbonlink``), arguments shell-quoted."""
    program = sys.argv[0] if sys.argv else "carbonlink"
    if Path(program).name == "__main__.py" or not program:
        prefix = [sys.executable, "-m", "carbonlink"]
    else:
        prefix = [program]
    return " ".join(shlex.quote(part) for part in (*prefix, *args))


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to
    read, the same to paste), else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)
