"""Handing freed memory back to the operating system: glibc's ``malloc_trim``.

Why a long-running service needs it: the platform frees nearly all it allocates for a
batch once the batch is written, but glibc keeps freed pages inside its heaps for reuse
and returns them only from a heap's top. With allocations of every size from several
threads (the asyncio loop, the store's writer threads, httpx and the JSON decoder), the
pages it keeps spread through the heaps, and RSS creeps up while nothing is in use: in
the 30-minute soak at 20,000 readings/s the platform's RSS floor rose +13.7 MiB per 10
minutes while the interpreter's own allocator stayed flat (85 pymalloc arenas, 77 MiB
allocated, ~185,000 live objects from start to end). ``malloc_trim(0)`` also releases
the free pages inside the heaps (``madvise(MADV_DONTNEED)``); called every 10 s it held
the same run flat on a quiet machine. It cannot return pymalloc's own arenas, which still
creep up when the cores are contended. Measured in docs/performance.md, "Flat memory".

A trim returns only memory that is free, so it changes RSS and nothing else; it holds
each arena's lock while it walks that arena (7 ms for a heap holding 60 MiB of free
4 KiB holes, tests/test_memory_trim.py), so it runs on a worker thread, never on the
event loop. Where the C library has no
``malloc_trim`` (musl, macOS) nothing is done and :attr:`AllocatorTrim.available` says so.

**jemalloc.** Trimming cannot fix what contention does: with the cores busy, more batches
are alive at once, their peaks claim new pymalloc arenas (and glibc heap pages), and
objects allocated meanwhile pin them. With a busy-looping process beside a 10-minute soak
at 20,000 readings/s the trimmed platform still grew +12.0 MiB/10 min (pymalloc arenas
81 -> 93 while its allocated bytes stayed put); the same run on jemalloc, with every
Python allocation going to it (``PYTHONMALLOC=malloc``), was flat (+1.36 MiB/10 min,
[anon] +0.1 MiB over eight minutes) at the same p99 (0.21 s against 0.22 s). jemalloc
keeps allocations of a size class together and hands unused pages back on its own
(``dirty_decay_ms``, 10 s by default). Both settings must be in place before the
interpreter starts, so :func:`exec_with_jemalloc` re-executes the process (same PID,
same arguments) with ``LD_PRELOAD`` and ``PYTHONMALLOC`` set; the trim is then skipped
(it reaches only glibc's heaps, which jemalloc leaves idle).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

__all__ = [
    "ALLOCATOR_ENV",
    "DEFAULT_TRIM_INTERVAL_S",
    "JEMALLOC_LIBRARY",
    "MALLOC_ARENAS",
    "Allocator",
    "AllocatorTrim",
    "TrimCounts",
    "exec_with_jemalloc",
    "find_jemalloc",
    "limit_arenas",
    "running_allocator",
]

Allocator = Literal["auto", "jemalloc", "system"]

log = logging.getLogger(__name__)

# Debian's libjemalloc2 (and most distributions' jemalloc 5): the soname to preload.
JEMALLOC_LIBRARY: Final = "libjemalloc.so.2"
# Where the dynamic linker looks on the systems we ship for (Debian's multiarch first).
_LIBRARY_DIRS: Final = (
    f"/usr/lib/{sys.implementation._multiarch}" if hasattr(sys.implementation, "_multiarch")
    else "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)  # fmt: skip
# Set in the re-executed process: it asked for jemalloc once, and never asks again.
ALLOCATOR_ENV: Final = "CARBONLINK_ALLOCATOR"

# Often enough that what a burst of batches freed goes back within seconds; rare enough
# that the arenas' locks are held well under 0.1% of the time (a trim takes milliseconds).
DEFAULT_TRIM_INTERVAL_S: Final = 10.0
_PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")
# glibc gives each new thread an arena of its own (up to 8 per core), and an arena's pages
# stay resident once a burst has used them: a thread pool that grows when a backlog first
# makes a large batch (InfluxDB's writer threads) lifted the soak's RSS by ~2.6 MiB at
# that moment, however late. The threads allocate under the GIL, so they gain nothing
# from arenas of their own: two (the main thread's and one the threads share) suffice.
MALLOC_ARENAS: Final = 2
_M_ARENA_MAX: Final = -8  # mallopt's parameter number, from glibc's malloc.h


@dataclass(slots=True)
class TrimCounts:
    """What the trims did since the service started (read by its metrics)."""

    trims: int = 0
    seconds: float = 0.0  # spent inside malloc_trim
    released_bytes: int = 0  # fall in resident memory across the trims


def _glibc(function: str, *argtypes: type[ctypes._SimpleCData[int]]) -> Any | None:
    """A glibc extension (``malloc_trim``, ``mallopt``), or None in another C library."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        found = getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):  # not glibc
        return None
    found.argtypes = list(argtypes)
    found.restype = ctypes.c_int
    return found


def limit_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (``mallopt(M_ARENA_MAX)``); call it
    before the service starts its threads. False where that is not glibc."""
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, count))


def _resident_bytes() -> int:
    """This process's resident memory (the second field of /proc/self/statm, in pages)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


class AllocatorTrim:
    """Trims the C heap every ``interval_s`` while :meth:`run` runs (0: never)."""

    def __init__(self, interval_s: float = DEFAULT_TRIM_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.counts = TrimCounts()
        self.allocator = running_allocator()
        # On jemalloc, glibc's heaps lie idle: there is nothing for malloc_trim to do.
        self._malloc_trim: Callable[[int], int] | None = (
            None if self.allocator == "jemalloc" else _glibc("malloc_trim", ctypes.c_size_t)
        )

    @property
    def available(self) -> bool:
        return self._malloc_trim is not None

    def trim(self) -> int:
        """Release free heap pages now; the bytes by which resident memory fell."""
        if self._malloc_trim is None:
            return 0
        before = _resident_bytes()
        began = time.perf_counter()
        self._malloc_trim(0)
        self.counts.seconds += time.perf_counter() - began
        released = max(0, before - _resident_bytes())
        self.counts.trims += 1
        self.counts.released_bytes += released
        return released

    async def run(self) -> None:
        """Trim every ``interval_s`` until cancelled (returns at once if there is nothing
        to do: no glibc, or an interval of 0)."""
        if self._malloc_trim is None or self.interval_s <= 0:
            if self.allocator == "jemalloc":
                log.info("memory: on jemalloc, which hands freed pages back itself")
            elif self.interval_s > 0:
                log.info("memory: no malloc_trim in this C library; freed memory stays mapped")
            return
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.trim)


def find_jemalloc() -> str | None:
    """The path of jemalloc's shared library on this system, or None."""
    for directory in _LIBRARY_DIRS:
        candidate = Path(directory) / JEMALLOC_LIBRARY
        if candidate.is_file():
            return str(candidate)
    return None


def running_allocator() -> str:
    """``jemalloc`` when this process has jemalloc mapped, else ``system``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"


def exec_with_jemalloc(allocator: Allocator, argv: list[str]) -> None:
    """Run this process again on jemalloc (module docstring), unless it already is, or
    ``allocator`` is ``system``. ``auto`` falls back to the system allocator when jemalloc
    is not installed; ``jemalloc`` raises FileNotFoundError then. Returns only when
    nothing is to be done: otherwise the process is replaced (same PID, open files and
    arguments ``python -m carbonlink *argv``)."""
    if allocator == "system" or ALLOCATOR_ENV in os.environ:
        return
    library = find_jemalloc()
    if library is None:
        if allocator == "jemalloc":
            raise FileNotFoundError(
                f"{JEMALLOC_LIBRARY} not found in {', '.join(_LIBRARY_DIRS)} "
                "(Debian: apt-get install libjemalloc2)"
            )
        log.info("memory: no %s here; the system allocator it is", JEMALLOC_LIBRARY)
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [library, env.get("LD_PRELOAD")]))
    env["PYTHONMALLOC"] = "malloc"  # every Python object too, not only C allocations
    env[ALLOCATOR_ENV] = "jemalloc"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "carbonlink", *argv], env)  # noqa: S606 (argv is our own)
