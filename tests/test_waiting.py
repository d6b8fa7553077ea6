"""The tests' one waiting helper (tests/waiting.py): it returns what it waited for, and
says what it waited for, and what it last saw, when that never came."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys

import pytest

from tests.waiting import (
    WaitAbortedError,
    WaitTimeoutError,
    async_stays,
    async_wait_for,
    exited,
    stays,
    wait_for,
)

SHORT_S = 0.2  # for conditions that never hold: the test is the timeout itself


def test_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_for(lambda: next(counter) >= 3 and "third", "the third call") == "third"


def test_a_timeout_names_what_was_awaited_and_the_last_value() -> None:
    with pytest.raises(WaitTimeoutError) as failed:
        wait_for(list, "a message", SHORT_S, detail=lambda: "the log's tail")
    assert failed.value.last == []
    assert str(failed.value).startswith(f"timed out after {SHORT_S:g} s waiting for a message")
    assert "last observed: []" in str(failed.value)
    assert str(failed.value).endswith("\nthe log's tail")


def test_ignored_exceptions_mean_not_yet_and_others_propagate() -> None:
    calls = itertools.count()

    def flaky() -> int:
        if next(calls) < 2:
            raise ConnectionError("not up yet")
        return 7

    assert wait_for(flaky, "the server", ignoring=(ConnectionError,)) == 7
    with pytest.raises(WaitTimeoutError) as failed:
        wait_for(lambda: 1 / 0, "a division", SHORT_S, ignoring=(ZeroDivisionError,))
    assert isinstance(failed.value.last, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        wait_for(lambda: 1 / 0, "a division")


def test_a_process_that_exits_ends_the_wait_at_once() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(WaitAbortedError, match="exited with code 3"):
        wait_for(lambda: False, "the service's answer", abort_if=exited(process))


def test_stays_checks_all_along() -> None:
    stays(lambda: True, SHORT_S, "true")
    counter = itertools.count()
    with pytest.raises(AssertionError, match="under three: no longer so"):
        stays(lambda: next(counter) < 3, 10.0, "under three")


def test_the_asyncio_forms_await_events_and_poll_state() -> None:
    async def scenario() -> None:
        event = asyncio.Event()
        asyncio.get_running_loop().call_soon(event.set)
        assert await async_wait_for(event.wait(), "the event") is True
        with pytest.raises(WaitTimeoutError, match="waiting for a second event"):
            await async_wait_for(asyncio.Event().wait(), "a second event", SHORT_S)

        counter = itertools.count()

        async def later() -> bool:
            return next(counter) >= 2

        assert await async_wait_for(later, "the third answer") is True
        await async_stays(lambda: True, SHORT_S, "true")

    asyncio.run(scenario())
