"""Helpers shared by the CLI commands."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

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
        except* CarbonlinkError as group:
            # except*: a service that fails at startup (a subscription that delivers
            # nothing, say) does so inside the task groups that run it beside its HTTP
            # server; a bare error arrives as a group of one.
            for error in _leaves(group):
                click.echo(f"carbonlink: error: {error}", err=True)
            sys.exit(EXIT_USAGE_ERROR)

    return wrapper


def _leaves(group: BaseExceptionGroup[CarbonlinkError]) -> list[CarbonlinkError]:
    leaves: list[CarbonlinkError] = []
    for error in group.exceptions:
        leaves.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return leaves


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
    """``90``, ``90s``, ``30m``, ``1h30m``, ``12h``, ``7d`` -> seconds."""
    try:
        return _parse_duration_s(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# click >= 8.3 makes ParamType generic; the pinned floor (8.1) does not subscript it.
class DurationType(click.ParamType):  # type: ignore[type-arg]
    """Every duration option of the CLI: seconds as a number or ``90s``, ``1h30m``, ``7d``
    (one parser, core.durations, for the CLI and the config files alike)."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = _parse_duration_s(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail(f"must be more than 0, got {value!r}", param, ctx)
        return seconds


class SpeedType(click.ParamType):  # type: ignore[type-arg]
    """Simulated seconds per second (a positive number), or ``max``: as fast as possible
    (None)."""

    name = "speed"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | None:
        if value is None or isinstance(value, float):
            return value
        if isinstance(value, str) and value.strip().lower() == "max":
            return None
        try:
            speed = float(str(value))
        except ValueError:
            self.fail(f"expected a number of simulated seconds per second or `max`, got {value!r}",
                      param, ctx)  # fmt: skip
        if not speed > 0 or speed == float("inf"):
            self.fail(f"must be more than 0, got {value!r}", param, ctx)
        return speed


DURATION: Final = DurationType()
SPEED: Final = SpeedType()

FORMATS: Final = ("table", "csv", "json")


def format_option(command: Callable[..., T]) -> Callable[..., T]:
    """``--format table|csv|json`` on a command that prints data (the command receives
    ``fmt``); ``--json``, which some commands took before, stays as a hidden alias."""

    @functools.wraps(command)
    def wrapper(*args: Any, as_json: bool = False, fmt: str = "table", **kwargs: Any) -> T:
        return command(*args, fmt="json" if as_json else fmt, **kwargs)

    wrapper = click.option("--json", "as_json", is_flag=True, hidden=True)(wrapper)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        help="Print a table for people, or CSV or JSON for programs.",
    )(wrapper)


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
    """A carbonlink command as the user can paste it where they are: the program as a
    path (``.venv/bin/carbonlink`` after the README's setup, which puts nothing on PATH),
    arguments shell-quoted."""
    return " ".join(shlex.quote(part) for part in (*program_words(), *args))


def program_words() -> list[str]:
    """How to run carbonlink again from the working directory: the script beside this
    Python (``.venv/bin/carbonlink``), else the one that was run, else ``python -m``."""
    beside = Path(sys.executable).parent / "carbonlink"
    if beside.is_file():
        return [shown_path(beside, resolve=False)]
    program = sys.argv[0] if sys.argv else ""
    if program and Path(program).name != "__main__.py":
        found = program if "/" in program else shutil.which(program)
        if found:
            return [shown_path(Path(found), resolve=False)]
    return [shown_path(Path(sys.executable), resolve=False), "-m", "carbonlink"]


def shown_path(path: Path, *, resolve: bool = True) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to
    read, the same to paste), else absolute. ``resolve=False`` keeps symlinks (a venv's
    python), only making the path absolute."""
    resolved = path.resolve() if resolve else Path(os.path.abspath(path))
    cwd = Path.cwd().resolve() if resolve else Path(os.path.abspath(Path.cwd()))
    try:
        relative = str(resolved.relative_to(cwd))
    except ValueError:
        return str(resolved)
    # A bare name would be looked up on PATH by the shell: keep it a path.
    return relative if "/" in relative else f"./{relative}"
