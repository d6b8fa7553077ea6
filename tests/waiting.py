"""How tests wait: on an event or a condition, with a deadline and a message saying what.

A test never sleeps to let something happen; it waits for what shows that it happened: a
QoS 1 round trip through the broker behind the messages in question, a counter in a
health answer, a retained status, a log line, a port accepting. When the product offers
an awaitable (an ``asyncio.Event``, a future), await it with :func:`async_wait_for`; when
it offers only state (a counter, a file, an HTTP answer), :func:`wait_for` polls it.

A sleep is left only where time passing is itself what is tested: "nothing arrives while
paused" has no event to wait on. :func:`stays` says so, and checks the condition all
along rather than once at the end.

Hand-written, not tenacity or the like (neither is a dependency): what matters here is the
failure message, what was awaited and the last value seen, and the rest is a dozen lines.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S: Final = 30.0  # generous: the CI machine has two cores and many tests
# Polls start fast (most conditions hold within milliseconds) and back off, so a long
# wait on a loaded machine costs little CPU.
FIRST_PAUSE_S: Final = 0.01
MAX_PAUSE_S: Final = 0.25

Check = Callable[[], Any]
Detail = Callable[[], object]


class WaitTimeoutError(AssertionError):
    """What was awaited did not happen in time; ``last`` is the last value observed."""

    def __init__(self, what: str, timeout_s: float, last: object, detail: object = "") -> None:
        self.what = what
        self.last = last
        message = f"timed out after {timeout_s:g} s waiting for {what}; last observed: {last!r}"
        super().__init__(f"{message}\n{detail}" if detail else message)


class WaitAbortedError(AssertionError):
    """Waiting stopped early because what it waits on cannot happen any more."""


def exited(*processes: subprocess.Popen[Any], log: Detail | None = None) -> Detail:
    """For ``abort_if``: a description of the first of ``processes`` that has exited."""

    def check() -> object:
        for process in processes:
            if process.poll() is not None:
                tail = f"\n{log()}" if log is not None else ""
                return f"{process.args!r} exited with code {process.returncode}{tail}"
        return None

    return check


def _pauses() -> Iterator[float]:
    pause = FIRST_PAUSE_S
    while True:
        yield pause
        pause = min(pause * 2, MAX_PAUSE_S)


def _observe(check: Check, ignoring: tuple[type[BaseException], ...]) -> tuple[bool, object]:
    try:
        value = check()
    except ignoring as exc:  # not up yet, say: counts as "not yet"
        return False, exc
    return bool(value), value


def _fail(what: str, timeout: float, last: object, detail: Detail | None) -> WaitTimeoutError:
    return WaitTimeoutError(what, timeout, last, detail() if detail is not None else "")


def _abort(what: str, abort_if: Detail | None) -> None:
    if abort_if is not None and (reason := abort_if()):
        raise WaitAbortedError(f"gave up waiting for {what}: {reason}")


def wait_for(
    check: Check,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    ignoring: tuple[type[BaseException], ...] = (),
    abort_if: Detail | None = None,
    detail: Detail | None = None,
) -> Any:
    """Call ``check`` until it returns a truthy value, and return that value.

    ``ignoring``: exceptions that mean "not yet" (a connection refused before a server
    is up). ``abort_if``: returns a reason to give up at once (see :func:`exited`).
    ``detail``: what to add to the failure message (a log's tail, say)."""
    deadline = time.monotonic() + timeout_s
    for pause in _pauses():
        done, last = _observe(check, ignoring)
        if done:
            return last
        _abort(what, abort_if)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _fail(what, timeout_s, last, detail)
        time.sleep(min(pause, left))
    raise AssertionError("unreachable")  # _pauses() never ends


async def async_wait_for(
    awaited: Awaitable[T] | Check,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    ignoring: tuple[type[BaseException], ...] = (),
    abort_if: Detail | None = None,
    detail: Detail | None = None,
) -> Any:
    """The asyncio form: await ``awaited`` (an event's ``wait()``, a future) within
    ``timeout_s``, or poll it, if it is a callable, like :func:`wait_for`; a callable may
    return an awaitable, which is awaited each time."""
    if inspect.isawaitable(awaited):
        try:
            async with asyncio.timeout(timeout_s):
                return await awaited
        except TimeoutError:
            raise _fail(what, timeout_s, "not done", detail) from None
    check = awaited
    deadline = asyncio.get_running_loop().time() + timeout_s
    for pause in _pauses():
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
        except ignoring as exc:
            last = exc
        else:
            if last:
                return last
        _abort(what, abort_if)
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise _fail(what, timeout_s, last, detail)
        await asyncio.sleep(min(pause, left))
    raise AssertionError("unreachable")


def stays(check: Check, for_: float, what: str, *, detail: Detail | None = None) -> None:
    """Assert that ``check`` stays truthy for ``for_`` seconds, checking all along.

    For "nothing happens": the only place a test lets time pass on purpose, because the
    passing of time is what is tested. Keep ``for_`` short."""
    started = time.monotonic()
    for pause in _pauses():
        value = check()
        elapsed = time.monotonic() - started
        if not value:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"{what}: no longer so after {elapsed:.2f} s ({value!r}){extra}")
        if elapsed >= for_:
            return
        time.sleep(min(pause, for_ - elapsed))


async def async_stays(
    check: Check, for_: float, what: str, *, detail: Detail | None = None
) -> None:
    """The asyncio form of :func:`stays`: the loop keeps running while time passes."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for pause in _pauses():
        value = check()
        elapsed = loop.time() - started
        if not value:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"{what}: no longer so after {elapsed:.2f} s ({value!r}){extra}")
        if elapsed >= for_:
            return
        await asyncio.sleep(min(pause, for_ - elapsed))


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "WaitAbortedError",
    "WaitTimeoutError",
    "async_stays",
    "async_wait_for",
    "exited",
    "stays",
    "wait_for",
]
