"""Where the platform's memory goes during a soak: which mappings grow, and whether the
Python heap does.

`benchmarks/run` gives the verdict (flat or not); this is the diagnosis behind it, and
the figures in docs/performance.md come from it.

  .venv/bin/python -m benchmarks.memory [--rate 14000] [--seconds 480] [--pymalloc]
      [--tracemalloc] [--malloc-trim SECONDS] [--env NAME=VALUE ...]

Every SAMPLE_S it reads the platform's /proc status (RssAnon, RssFile, threads) and, with
``--pymalloc``, the interpreter's own allocator figures (pymalloc arenas, bytes in
allocated blocks, live objects), which a hook injected through ``sitecustomize`` prints
into the platform's log. ``--tracemalloc`` snapshots the platform's Python heap every
minute (tracing halves its throughput: offer less) and prints what grew. At the end it
prints RSS growth per mapping kind after the warm-up. ``--malloc-trim`` makes the hook
call glibc's malloc_trim(0) that often, to tell memory that is free but kept by the
allocator from memory still in use; ``--env`` passes allocator tunables such as
MALLOC_ARENA_MAX=2 to the platform. The platform's log is kept as carbonlink-memory.log
in the temporary directory (/tmp unless $TMPDIR says otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import AGENT_BATCH, proc_status, servers
from benchmarks.ingest import PlatformProcess
from benchmarks.latency import offered_load
from benchmarks.soak import describe, verdict

SAMPLE_S: Final = 30.0
WARMUP_S: Final = 90.0
KIB: Final = 1024
STATUS_FIELDS: Final = ("VmRSS", "RssAnon", "RssFile", "Threads")
PYMALLOC_LINES: Final = {
    "arenas": re.compile(r"# arenas allocated current\s+=\s+([\d,]+)"),
    "allocated_bytes": re.compile(r"# bytes in allocated blocks\s+=\s+([\d,]+)"),
}
MARK: Final = "@@pymalloc"  # starts each block of allocator figures in the log
HOOK_HEAD: Final = re.compile(r" t=(?P<t>[\d.]+) objects=(?P<objects>\d+)")

# Runs inside the platform: the only way to read its interpreter's allocator.
HOOK: Final = textwrap.dedent("""
    import gc, os, reprlib, sys, threading, time
    def _sample(every, trim):
        libc = None
        if trim:
            import ctypes
            libc = ctypes.CDLL("libc.so.6")
        began = time.monotonic()
        next_stats = every
        while True:
            time.sleep(min(every, trim) if trim else every)
            if libc is not None:
                libc.malloc_trim(0)
            if every and time.monotonic() - began >= next_stats:
                next_stats += every
                sys.stderr.write("MARK t=%.0f objects=%d\\n" % (
                    time.monotonic() - began, len(gc.get_objects())))
                sys.stderr.flush()
                sys._debugmallocstats()
    _traces = os.environ.get("BENCH_TRACEMALLOC_DIR")
    if _traces:
        import tracemalloc
        tracemalloc.start(4)
        def _snapshots(every):
            n = 0
            while True:
                time.sleep(every)
                n += 1
                tracemalloc.take_snapshot().dump(os.path.join(_traces, "%03d.snapshot" % n))
        threading.Thread(target=_snapshots, args=(60.0,), daemon=True).start()
    _marks = os.environ.get("BENCH_SURVIVORS")
    if _marks:
        def _survivors(marks):
            # Containers born between the first two marks and still in use at the third:
            # long-lived objects allocated in steady state pin pymalloc's arenas. Those
            # born are held from the second mark on; at the third, one is in use if
            # something besides this hook (and other held objects) refers to it.
            began = time.monotonic()
            def wait(mark):
                time.sleep(max(0.0, mark - (time.monotonic() - began)))
            wait(marks[0])
            before = {id(o) for o in gc.get_objects()}
            wait(marks[1])
            held = [o for o in gc.get_objects() if id(o) not in before]
            del before
            wait(marks[2])
            inside = {}
            for o in held:
                for child in gc.get_referents(o):
                    inside[id(child)] = inside.get(id(child), 0) + 1
            kept = {}
            for o in held:
                # held list + getrefcount's argument + the loop variable
                if sys.getrefcount(o) - 3 - inside.get(id(o), 0) > 0:
                    kept.setdefault(type(o).__qualname__, []).append(o)
            sys.stderr.write("SURVIVORS %d born %s-%s s, in use at %s s:\\n" % (
                len(held), *marks))
            for name, objs in sorted(kept.items(), key=lambda kv: -len(kv[1]))[:15]:
                sys.stderr.write("SURVIVORS %7d %s e.g. %s\\n" % (
                    len(objs), name, reprlib.repr(objs[-1])))
            sys.stderr.flush()
            del held, kept
        threading.Thread(
            target=_survivors, args=([float(m) for m in _marks.split(",")],), daemon=True
        ).start()
    _every = float(os.environ.get("BENCH_PYMALLOC_EVERY_S", "0"))
    _trim = float(os.environ.get("BENCH_MALLOC_TRIM_S", "0"))
    if _every or _trim:
        threading.Thread(target=_sample, args=(_every, _trim), daemon=True).start()
""").replace("MARK", MARK)


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    status_kib: dict[str, int]
    mappings_kib: dict[str, int]


def status(pid: int) -> dict[str, int]:
    figures = proc_status(pid)
    return {name: figures[name] for name in STATUS_FIELDS}


def mappings(pid: int) -> dict[str, int]:
    """Resident KiB per mapping kind: [heap], [anon], [stack] or the mapped file's name."""
    resident: dict[str, int] = {}
    kind = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = fields[5] if len(fields) > 5 else "[anon]"
            kind = os.path.basename(name) if name.startswith("/") else name
        elif fields and fields[0] == "Rss:":
            resident[kind] = resident.get(kind, 0) + int(fields[1])
    return resident


@contextlib.contextmanager
def environment(extra: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def pymalloc_series(log: str) -> list[tuple[float, dict[str, int]]]:
    series: list[tuple[float, dict[str, int]]] = []
    for block in log.split(MARK)[1:]:
        head = HOOK_HEAD.match(block)
        if head is None:  # a line of the platform's own log cut into the block
            continue
        t_s, figures = float(head["t"]), {"objects": int(head["objects"])}
        for name, pattern in PYMALLOC_LINES.items():
            found = pattern.search(block)
            if found:
                figures[name] = int(found.group(1).replace(",", ""))
        series.append((t_s, figures))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=14_000.0, help="readings/s offered")
    parser.add_argument("--seconds", type=float, default=480.0)
    parser.add_argument("--pymalloc", action="store_true", help="sample pymalloc too")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="snapshot Python's heap every minute"
    )
    parser.add_argument("--malloc-trim", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument(
        "--survivors",
        metavar="T1,T2,T3",
        help="list the containers born between T1 and T2 s that are still alive at T3",
    )
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    child_env = dict(item.split("=", 1) for item in args.env)
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="carbonlink-memory-") as scratch_name:
        scratch = Path(scratch_name)
        if args.survivors:
            child_env["BENCH_SURVIVORS"] = args.survivors
        if args.pymalloc or args.malloc_trim or args.tracemalloc or args.survivors:
            (scratch / "hook").mkdir()
            (scratch / "hook" / "sitecustomize.py").write_text(HOOK)
            child_env["PYTHONPATH"] = f"{scratch / 'hook'}:{os.environ.get('PYTHONPATH', '')}"
            child_env["BENCH_PYMALLOC_EVERY_S"] = str(SAMPLE_S if args.pymalloc else 0)
            child_env["BENCH_MALLOC_TRIM_S"] = str(args.malloc_trim)
            if args.tracemalloc:
                (scratch / "traces").mkdir()
                child_env["BENCH_TRACEMALLOC_DIR"] = str(scratch / "traces")
        with servers(scratch) as (broker, influxdb), contextlib.ExitStack() as stack:
            (scratch / "soak").mkdir()
            with environment(child_env):  # the platform subprocess inherits them
                platform = stack.enter_context(PlatformProcess(scratch / "soak", broker, influxdb))
            stop = threading.Event()

            def sample() -> None:
                began = time.monotonic()
                while not stop.wait(SAMPLE_S):
                    samples.append(
                        Sample(
                            time.monotonic() - began, status(platform.pid), mappings(platform.pid)
                        )
                    )

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            result = offered_load(platform, broker, influxdb, args.rate, args.seconds, AGENT_BATCH)
            stop.set()
            sampler.join()
            log_path = scratch / "soak" / "platform.log"
            log = log_path.read_text(errors="replace")
            shutil.copy(log_path, Path(tempfile.gettempdir()) / "carbonlink-memory.log")
            heap = compare_snapshots(sorted((scratch / "traces").glob("*.snapshot")))
    report(samples, pymalloc_series(log), result.p50_s, result.p99_s)
    print(heap, end="")
    print(
        "".join(
            line[len("SURVIVORS ") :] + "\n"
            for line in log.splitlines()
            if line.startswith("SURVIVORS ")
        ),
        end="",
    )
    print(describe(verdict(result.rss_samples, WARMUP_S), result.offered_per_s))


def compare_snapshots(paths: list[Path]) -> str:
    """Python's traced heap, snapshot by snapshot, and what grew from the second (the
    first is still warming up) to the last."""
    if len(paths) < 3:
        return ""
    snapshots = [tracemalloc.Snapshot.load(str(path)) for path in paths]
    totals = [sum(stat.size for stat in s.statistics("filename")) / 2**20 for s in snapshots]
    out = ["traced Python heap, MiB, a minute apart: " + " ".join(f"{t:.1f}" for t in totals)]
    for stat in snapshots[-1].compare_to(snapshots[1], "traceback")[:5]:
        out.append(f"  {stat.size_diff / KIB:+9.1f} KiB {stat.count_diff:+7d} blocks at")
        out.extend(f"      {line}" for line in stat.traceback.format()[-2:])
    return "\n".join(out) + "\n"


def report(
    samples: list[Sample], pymalloc: list[tuple[float, dict[str, int]]], p50: float, p99: float
) -> None:
    print(f"latency p50 {p50:.2f} s, p99 {p99:.2f} s")
    print(f"{'t s':>6} {'RSS MiB':>8} {'anon':>7} {'file':>7} {'threads':>7}")
    for s in samples:
        st = s.status_kib
        print(
            f"{s.t_s:6.0f} {st['VmRSS'] / KIB:8.1f} {st['RssAnon'] / KIB:7.1f} "
            f"{st['RssFile'] / KIB:7.1f} {st['Threads']:7d}"
        )
    after = [s for s in samples if s.t_s >= WARMUP_S]
    if len(after) >= 2:
        first, last = after[0].mappings_kib, after[-1].mappings_kib
        growth = {k: last.get(k, 0) - first.get(k, 0) for k in first.keys() | last.keys()}
        print(f"resident growth per mapping kind, {after[0].t_s:.0f} s to {after[-1].t_s:.0f} s:")
        changed = [(kind, kib) for kind, kib in growth.items() if kib]
        for kind, kib in sorted(changed, key=lambda item: -abs(item[1]))[:5]:
            print(f"  {kib / KIB:+7.1f} MiB  {kind} (now {last.get(kind, 0) / KIB:.1f} MiB)")
    if pymalloc:
        print(f"{'t s':>6} {'arenas':>7} {'allocated MiB':>14} {'objects':>9}")
        for t_s, figures in pymalloc:
            print(
                f"{t_s:6.0f} {figures.get('arenas', 0):7d} "
                f"{figures.get('allocated_bytes', 0) / 2**20:14.1f} {figures['objects']:9,}"
            )


if __name__ == "__main__":
    main()
