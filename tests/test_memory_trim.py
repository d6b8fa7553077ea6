"""core.memory: freed heap pages go back to the OS, and only freed ones.

The platform-level promise (its RSS floor stays flat in a long soak) is a benchmark
(`benchmarks/run`, docs/performance.md "Flat memory"); the platform's trims counted on
its /metrics are checked through the real processes in tests/test_metrics.py. Here: the
mechanism itself, in a child interpreter, on the fragmentation that made RSS creep.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

from carbonlink.core.memory import MALLOC_ARENAS, AllocatorTrim

glibc = pytest.mark.skipif(not AllocatorTrim().available, reason="no glibc malloc_trim here")

# 64 MiB in 4 KiB blocks (over pymalloc's 512-byte limit, so from glibc malloc), of which
# one in sixteen is kept: the heap's top is never free, so free() alone returns nothing.
FRAGMENTED = textwrap.dedent("""
    import json, sys
    from carbonlink.core.memory import AllocatorTrim, _resident_bytes
    blocks = [bytearray(4000) for _ in range(16_384)]
    for block in blocks:
        block[::512] = b"x" * len(block[::512])  # touch every page
    kept = blocks[::16]
    del blocks
    freed = _resident_bytes()
    trim = AllocatorTrim()
    released = trim.trim()
    assert all(block[0] == ord("x") for block in kept)  # what is in use is untouched
    print(json.dumps({"freed_rss": freed, "released": released,
                      "after": _resident_bytes(), "trims": trim.counts.trims,
                      "seconds": trim.counts.seconds}))
""")


@glibc
def test_a_trim_returns_the_free_pages_inside_a_fragmented_heap() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, check=True
    )
    figures = json.loads(out.stdout)
    assert figures["trims"] == 1
    assert figures["seconds"] > 0
    # ~60 MiB were free but still resident; most of it goes back.
    assert figures["released"] > 32 * 2**20, figures
    assert figures["after"] < figures["freed_rss"] - 32 * 2**20


@glibc
def test_the_trim_loop_trims_every_interval_until_cancelled() -> None:
    trim = AllocatorTrim(interval_s=0.01)

    async def run_a_while() -> None:
        loop, third = asyncio.get_running_loop(), asyncio.Event()
        trim_now = trim.trim

        def counted() -> int:  # runs on the trim's thread
            released = trim_now()
            if trim.counts.trims >= 3:
                loop.call_soon_threadsafe(third.set)
            return released

        trim.trim = counted  # type: ignore[method-assign]
        task = asyncio.create_task(trim.run())
        await asyncio.wait_for(third.wait(), timeout=30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_a_while())
    assert trim.counts.trims >= 3


def test_an_interval_of_zero_never_trims() -> None:
    trim = AllocatorTrim(interval_s=0)
    asyncio.run(asyncio.wait_for(trim.run(), timeout=5))  # returns at once
    assert trim.counts.trims == 0


ARENAS = textwrap.dedent("""
    import threading
    from carbonlink.core.memory import limit_arenas
    assert limit_arenas(COUNT)
    def work():
        blocks = [bytearray(4000) for _ in range(2_000)]
        del blocks
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads: t.start()
    for t in threads: t.join()
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_stats()  # per arena, to stderr
""")


@glibc
def test_limited_arenas_are_shared_by_every_thread() -> None:
    def arenas(count: int) -> int:
        out = subprocess.run(
            [sys.executable, "-c", ARENAS.replace("COUNT", str(count))],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stderr.count("Arena ")

    assert arenas(MALLOC_ARENAS) == MALLOC_ARENAS
    assert arenas(64) > MALLOC_ARENAS  # six threads at once: arenas of their own
