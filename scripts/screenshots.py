"""Regenerate the README's and docs' pictures from a real demo run.

Runs ``carbonlink demo`` as a user would (its own process, the dashboard on the address it
prints, ``--keep var/screenshots-demo``, emptied first), opens the dashboard in headless
Chromium (Debian's, through Playwright), waits for the coordinator's stage switch and a
few settled periods after it, and saves:

- ``overview.png``, ``fleet.png``, ``plant.png`` (cement-01) and ``coordination.png``
  (after the switch), and
- ``demo.cast``: the demo's terminal output as an asciinema v2 recording, each line at
  the moment the demo printed it (``asciinema play docs/images/demo.cast``).

Usage: ``scripts/screenshots [--out docs/images] [--speed 120] [--duration 150]``.
The pictures are taken while the demo runs; the recording ends when the demo does.
Nothing here is hand-made: run it again and the pictures follow the code.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from playwright.sync_api import expect, sync_playwright

REPO: Final = Path(__file__).resolve().parents[1]
CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT: Final = {"width": 1440, "height": 900}
PLANT: Final = "cement-01"
START_TIMEOUT_S: Final = 60.0
# "  dashboard http://HOST:PORT/", whatever follows it on the line.
ADDRESS: Final = re.compile(r"^\s+dashboard (http://[^\s/]+)")
CAST_SIZE: Final = (110, 32)  # columns, rows: the player's terminal; longer lines wrap
IDLE_LIMIT_S: Final = 2.0  # the player skips longer pauses (start-up, the table's period)
KEEP: Final = "var/screenshots-demo"  # under the repository's ignored var/, as in the README
TRANSFER_POINTS: Final = 3  # periods settled in stage 3 on the coordination page's chart


@dataclass
class TimedOutput:
    """A process's output lines, each with the seconds since it started."""

    started: float = field(default_factory=time.monotonic)
    lines: list[tuple[float, str]] = field(default_factory=list)
    fresh: queue.Queue[str] = field(default_factory=queue.Queue)

    def follow(self, stream: IO[str]) -> threading.Thread:
        def read() -> None:
            for line in stream:
                line = line.rstrip("\n")
                self.lines.append((time.monotonic() - self.started, line))
                print(line, flush=True)  # so whoever runs the script sees it too
                self.fresh.put(line)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def wait_for(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                found = pattern.search(self.fresh.get(timeout=left))
            except queue.Empty:
                break
            if found:
                return found
        raise TimeoutError(f"the demo printed no line matching {pattern.pattern!r}")


def write_cast(path: Path, command: list[str], output: TimedOutput) -> None:
    """asciinema's v2 format: a JSON header line, then one [time, "o", text] per line."""
    width, height = CAST_SIZE
    header = {
        "version": 2,
        "width": width,
        "height": height,
        "idle_time_limit": IDLE_LIMIT_S,
        "timestamp": int(time.time()),
        "title": "carbonlink demo",
        "env": {"SHELL": "/bin/bash", "TERM": "xterm-256color"},
    }
    events = [[0.0, "o", f"$ {shlex.join(command)}\r\n"]]
    # Paths relative to the repository, as a user reads them in a checkout of their own.
    lines = [(t, line.replace(str(REPO), ".")) for t, line in output.lines]
    events += [[round(t, 3), "o", f"{line}\r\n"] for t, line in lines]
    text = "\n".join(json.dumps(item, ensure_ascii=False) for item in [header, *events])
    path.write_text(text + "\n")


def take(base: str, out: Path, wait_s: float) -> None:
    wait_ms = wait_s * 1000
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        page = context.new_page()
        # The switch first: every other picture is taken after it, on more data.
        page.goto(f"{base}/dashboard/coordination")
        expect(page.locator("#stage")).to_contain_text("stage 3", timeout=wait_ms)
        expect(page.locator("#ledger tbody tr").first.locator("td").nth(3)).to_have_text(
            "3", timeout=wait_ms
        )
        page.wait_for_function(
            "new Set(document.querySelector('#chart-transfers').data?.[0]?.x).size"
            f" >= {TRANSFER_POINTS}",
            timeout=wait_ms,
        )
        page.screenshot(path=out / "coordination.png", full_page=True)
        page.goto(f"{base}/")
        expect(page.locator('[data-field="today"]').last).not_to_have_text("\u2013")
        page.screenshot(path=out / "overview.png", full_page=True)
        page.goto(f"{base}/dashboard/fleet")
        page.wait_for_function(
            "document.querySelectorAll('#ranking svg.spark polyline').length > 0",
            timeout=wait_ms,
        )
        page.screenshot(path=out / "fleet.png", full_page=True)
        page.goto(f"{base}/dashboard/plants/{PLANT}")
        page.wait_for_function(
            "document.querySelector('#chart-energy').data?.[0]?.x.length > 2", timeout=wait_ms
        )
        page.screenshot(path=out / "plant.png", full_page=True)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    # The README's tour: five plant hours in two and a half minutes. Faster runs fall
    # behind on a busy machine (the pictures then show the agents' backlog).
    parser.add_argument("--speed", type=float, default=120.0)
    parser.add_argument("--duration", type=float, default=150.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(REPO / KEEP, ignore_errors=True)  # a fresh run: store, journal and key
    # The console script beside this interpreter, named as a user types it.
    carbonlink = Path(sys.executable).parent / "carbonlink"
    shown = carbonlink.relative_to(REPO) if carbonlink.is_relative_to(REPO) else carbonlink
    command = [
        str(shown), "demo", "--speed", f"{args.speed:g}", "--duration", f"{args.duration:g}",
        "--seed", str(args.seed), "--keep", KEEP,
    ]  # fmt: skip
    env = os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": str(CAST_SIZE[0])}
    env.pop("CARBONLINK_LEDGER_KEY", None)  # the demo makes a key for its folder
    demo = subprocess.Popen(  # noqa: S603  # our own argv, no shell
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    output = TimedOutput()
    reader = output.follow(demo.stdout)
    try:
        base = output.wait_for(ADDRESS, START_TIMEOUT_S)[1]
        take(base, args.out, wait_s=args.duration)
        demo.wait(timeout=args.duration + START_TIMEOUT_S)
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=START_TIMEOUT_S)
    reader.join(timeout=START_TIMEOUT_S)
    if demo.returncode != 0:
        print(f"screenshots: the demo exited with {demo.returncode}", file=sys.stderr)
        return 1
    write_cast(args.out / "demo.cast", command, output)
    print(f"screenshots: {len(output.lines)} lines recorded in {args.out / 'demo.cast'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
