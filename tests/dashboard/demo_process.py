"""``carbonlink demo`` as its own process, its output lines followed as they come."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tests.servers import HOST, free_port

REPO: Final = Path(__file__).resolve().parents[2]
# "  dashboard http://HOST:PORT/", whatever follows it on the line.
ADDRESS: Final = re.compile(r"^\s+dashboard (http://[^\s/]+)")
START_TIMEOUT_S: Final = 90.0  # two cores shared with other work: start-up can take a while
STOP_TIMEOUT_S: Final = 60.0


class DemoProcess:
    """A demo with its dashboard on a free port and its run kept in ``keep``."""

    def __init__(self, keep: Path, *options: str, env: dict[str, str] | None = None) -> None:
        self.keep = keep
        self._env = os.environ | (env or {})
        self.command = [
            sys.executable, "-m", "carbonlink", "demo", *options,
            "--http", f"{HOST}:{free_port()}", "--keep", str(keep),
        ]  # fmt: skip
        self.lines: list[str] = []
        self._fresh: queue.Queue[str] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(  # our own argv, no shell
            self.command, cwd=REPO, env=self._env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.url = self.wait_for(ADDRESS, START_TIMEOUT_S)[1]
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._fresh.put(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        """The first line from now on that matches, or TimeoutError with the output."""
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                line = self._fresh.get(timeout=max(0.0, deadline - time.monotonic()))
                if found := pattern.search(line):
                    return found
        except queue.Empty:
            tail = "\n".join(self.lines[-20:])
            raise TimeoutError(f"no line matching {pattern.pattern!r}; last:\n{tail}") from None

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; the exit code."""
        process = self._process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT_S)
        return process.returncode
