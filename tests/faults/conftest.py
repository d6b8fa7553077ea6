"""The fault cases' accounting tables, printed in the run's summary: they are the suite's
result (what was published, stored, refused, lost, doubled or changed per plant and
meter), so they belong in the output whether or not pytest captures it."""

from __future__ import annotations

import pytest

from tests.faults import harness


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not harness.REPORTS:
        return
    terminalreporter.section("fault injection: published vs stored")
    for text in harness.REPORTS:
        terminalreporter.write_line(text.strip("\n"))
        terminalreporter.write_line("")
