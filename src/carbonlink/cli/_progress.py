"""Progress on long work (backfills, backtests, sweeps), in one place: a bar on a
terminal, plain periodic lines when the output is a file or a pipe (a log, CI), where a
redrawn bar would be a smear of carriage returns.

click's progress bar draws the bar: click is the CLI's library already, so it costs no
import at all, where tqdm or rich.progress would add one for a single bar. Measured with
``python -X importtime -c "import M"`` in a fresh venv (2026-12-07, a loaded 2-core
machine), cumulative: click 38 ms, tqdm 82 ms, rich.progress 71 ms.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Final, TextIO

import click

__all__ = ["PLAIN_EVERY_S", "progress"]

PLAIN_EVERY_S: Final = 5.0  # a line this often when not on a terminal


@contextlib.contextmanager
def progress(
    total: int,
    label: str,
    *,
    out: TextIO | None = None,
    every_s: float = PLAIN_EVERY_S,
    unit: str = "",
    describe: Callable[[int], str] | None = None,
) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(done)``, told how much of ``total`` is done so far.

    ``describe(done)`` adds what the bar's numbers do not say (e.g. the simulated time
    reached) to the plain lines.
    """
    stream = out if out is not None else sys.stderr
    if stream.isatty():
        with click.progressbar(length=max(total, 1), label=label, file=stream) as bar:
            seen = [0]

            def advance_bar(done: int) -> None:
                bar.update(min(done, total) - seen[0])
                seen[0] = min(done, total)

            yield advance_bar
        return
    started = time.monotonic()
    shown_at = [started]
    reached = [0]

    def line(done: int) -> None:
        share = f" {100 * done / total:5.1f}%" if total > 0 else ""
        more = f"  {describe(done)}" if describe is not None else ""
        elapsed = time.monotonic() - started
        print(f"{label}: {done:,}/{total:,}{unit}{share}{more}  ({elapsed:.0f} s)",
              file=stream, flush=True)  # fmt: skip
        shown_at[0] = time.monotonic()

    def advance_plain(done: int) -> None:
        reached[0] = done
        if time.monotonic() - shown_at[0] >= every_s:
            line(done)

    yield advance_plain
    line(reached[0])  # the last line always says where it ended
