"""What the fault suite runs on: services as real processes, a TCP proxy the test controls,
a publisher that records exactly what it published, and the exact accounting.

Everything is real: Mosquitto and InfluxDB from tests/servers.py, the agent and the
platform started with the ``carbonlink`` command (so SIGKILL is a real crash), and the
readings compared one by one, per plant and meter, with what InfluxDB holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiomqtt
import httpx
import pandas as pd

from carbonlink import wire
from carbonlink.config import PlantConfig, ReadingKind
from carbonlink.platform import open_store
from tests.servers import HOST, _die_with_parent, free_port
from tests.waiting import WaitTimeoutError, wait_for

SETTLE_TIMEOUT_S: Final = 120.0
# Every report of this session, for the run's summary (tests/faults/conftest.py).
REPORTS: list[str] = []
STOP_TIMEOUT_S: Final = 15.0
PUBLISH_RETRY_S: Final = 0.2
CHUNK_BYTES: Final = 65_536


# --- a TCP proxy ------------------------------------------------------------------------


class TcpProxy:
    """Relays 127.0.0.1:``port`` to a target. ``cut()`` drops every connection and refuses
    new ones, like a pulled cable; ``restore()`` undoes it; ``delay_s`` holds every chunk
    that long each way, like a slow link or a slow server; ``hang_on`` holds forever every
    chunk that contains those bytes (an HTTP request line, say), like a server that
    accepts one kind of request and never answers it; the chunk is never delivered."""

    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.port = free_port()
        self.delay_s = 0.0
        self._hang_on: bytes | None = None
        self._held: set[asyncio.Event] = set()  # one per chunk held by hang_on
        self._target = (target_host, target_port)
        self._down = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def hang_on(self) -> bytes | None:
        return self._hang_on

    @hang_on.setter
    def hang_on(self, value: bytes | None) -> None:
        # Set from the test's thread: the held chunks re-check it in the proxy's loop.
        self._hang_on = value
        self._loop.call_soon_threadsafe(self._wake_held)

    def _wake_held(self) -> None:
        for woken in self._held:
            woken.set()

    def cut(self) -> None:
        self._call(self._cut)

    def restore(self) -> None:
        self._down = False

    def close(self) -> None:
        self._call(self._cut)

        def stop() -> None:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_soon(self._loop.stop)

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)

    def _call(self, function: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            function()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def _cut(self) -> None:
        self._down = True
        self._wake_held()
        for writer in list(self._writers):
            writer.transport.abort()  # no FIN, no goodbye: the cable is gone
        self._writers.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(self._accept, HOST, self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _hold(self) -> None:
        """Until ``hang_on`` is cleared or the link is cut."""
        woken = asyncio.Event()
        self._held.add(woken)
        try:
            while self._hang_on is not None and not self._down:
                await woken.wait()
                woken.clear()
        finally:
            self._held.discard(woken)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not self._down:
            chunk = await reader.read(CHUNK_BYTES)
            if not chunk:
                break
            if self.delay_s:
                await asyncio.sleep(self.delay_s)  # the slow link is the fault under test
            if self._hang_on is not None and self._hang_on in chunk:
                await self._hold()
                break  # never delivered: the connection ends as a reset
            if self._down:
                break
            writer.write(chunk)
            await writer.drain()


# --- services as processes ----------------------------------------------------------------


class Service:
    """A carbonlink service as its own process, logging to a file."""

    def __init__(self, name: str, args: Sequence[str], work: Path, env: dict[str, str]) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = work / f"{name}.log"
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "carbonlink", "-v", *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=self._env, preexec_fn=_die_with_parent,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, exactly a crash."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def service_env() -> dict[str, str]:
    # The services must see the repository's package, and no proxy setting of the machine.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- publishing, remembering what was published ----------------------------------------------


@dataclass(frozen=True, order=True)
class Published:
    plant: str
    meter: str
    ts_ms: int
    value: float


@dataclass
class Plan:
    """Meter messages to send, and the readings they carry."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    readings: list[Published] = field(default_factory=list)


def plan_readings(
    plants: Iterable[PlantConfig], per_meter: int, now_ms: int, samples_per_message: int = 10
) -> Plan:
    """``per_meter`` readings of every interval meter, one a second up to ``now_ms``, each
    over its one-second interval (``dur``) and with a value of its own (so a changed value
    would show)."""
    plan = Plan()
    for plant in plants:
        for meter in plant.meters:
            if meter.reading is not ReadingKind.INTERVAL:
                continue
            rows = [
                Published(plant.id, meter.id, now_ms - (per_meter - i) * 1000, _value(meter, i))
                for i in range(per_meter)
            ]
            plan.readings += rows
            for start in range(0, len(rows), samples_per_message):
                chunk = rows[start : start + samples_per_message]
                body = {
                    "v": wire.WIRE_VERSION,
                    "unit": meter.unit,
                    "samples": [{"ts": r.ts_ms, "value": r.value, "dur": 1} for r in chunk],
                }
                plan.messages.append(
                    (wire.meter_topic(plant.id, meter.id), json.dumps(body).encode())
                )
    # Interleave the meters, as a plant's meters report side by side.
    plan.messages.sort(key=lambda m: json.loads(m[1])["samples"][0]["ts"])
    return plan


def _value(meter: object, i: int) -> float:
    """About the meter's nominal draw over one second."""
    nominal = float(getattr(meter, "nominal_per_hour", 1.0))
    return round(nominal / 3600 * (0.9 + (i % 97) / 1000), 9)


async def publish(
    host: str,
    port: int,
    messages: Sequence[tuple[str, bytes]],
    *,
    during: Callable[[int], None] | None = None,
    pace_s: float = 0.0,
) -> int:
    """Send every message at QoS 1, as meters would; a lost broker is waited out and the
    message sent again (the agent refuses the repeat as a duplicate if it had arrived).
    ``during(i)`` runs before message i: where the test injects its fault."""
    sent = 0
    index = 0
    while index < len(messages):
        try:
            async with aiomqtt.Client(host, port, identifier=f"meters-{port}", timeout=5) as client:
                while index < len(messages):
                    if during is not None:
                        during(index)
                    topic, payload = messages[index]
                    await client.publish(topic, payload, qos=1)
                    sent += 1
                    index += 1
                    if pace_s:  # meters report over time, so that a fault strikes mid-stream
                        await asyncio.sleep(pace_s)
        except aiomqtt.MqttError:
            # A meter's pause before it reconnects, not a wait for anything to happen.
            await asyncio.sleep(PUBLISH_RETRY_S)
    return sent


# --- the accounting -------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    plant: str
    meter: str
    published: int
    stored: int
    lost: int
    extra: int
    changed: int
    refused: int = 0

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.extra == 0 and self.changed == 0


def stored_readings(store_url: str, plants: Iterable[str]) -> set[Published]:
    store = open_store(store_url)
    try:
        found = set()
        for plant in plants:
            frame = store.activity(plant)
            epoch = pd.Timestamp(0, tz="UTC")
            ms = ((frame["time"] - epoch) // pd.Timedelta(milliseconds=1)).tolist()
            for meter, ts, value in zip(frame["meter"], ms, frame["value"], strict=True):
                found.add(Published(plant, str(meter), int(ts), float(value)))
        return found
    finally:
        store.close()


def account(
    published: Sequence[Published],
    stored: set[Published],
    refused: dict[tuple[str, str], int] | None = None,
) -> list[Account]:
    """Per plant and meter: what was published, stored, lost, stored but never published,
    and stored with another value; ``refused`` (dead-lettered with a reason) is counted
    as accounted for, not as lost."""
    rows = []
    refused = refused or {}
    stored_by_key = {(s.plant, s.meter, s.ts_ms): s.value for s in stored}
    for plant, meter in sorted({(p.plant, p.meter) for p in published}):
        mine = [p for p in published if (p.plant, p.meter) == (plant, meter)]
        keys = {(p.plant, p.meter, p.ts_ms) for p in mine}
        here = {k for k in stored_by_key if k[:2] == (plant, meter)}
        changed = sum(
            1 for p in mine
            if (p.plant, p.meter, p.ts_ms) in stored_by_key
            and abs(stored_by_key[p.plant, p.meter, p.ts_ms] - p.value) > 1e-9
        )  # fmt: skip
        refused_here = refused.get((plant, meter), 0)
        lost = len(keys - here) - refused_here
        rows.append(
            Account(
                plant,
                meter,
                len(mine),
                len(here & keys),
                lost,
                len(here - keys),
                changed,
                refused_here,
            )
        )
    return rows


def report(case: str, rows: Sequence[Account], note: str = "") -> str:
    lines = [f"\nfault: {case}", f"  {'plant':<22}{'meter':<16}{'published':>10}{'stored':>8}"
             f"{'refused':>8}{'lost':>6}{'extra':>6}{'changed':>8}"]  # fmt: skip
    for r in rows:
        lines.append(
            f"  {r.plant:<22}{r.meter:<16}{r.published:>10}{r.stored:>8}{r.refused:>8}"
            f"{r.lost:>6}{r.extra:>6}{r.changed:>8}"
        )
    total = sum(r.published for r in rows), sum(r.stored for r in rows)
    lines.append(f"  total: {total[0]} published, {total[1]} stored")
    if note:
        lines.append(f"  {note}")
    text = "\n".join(lines)
    print(text)
    REPORTS.append(text)
    return text


def settle(
    store_url: str, plants: Iterable[str], expected: int, *, timeout_s: float = SETTLE_TIMEOUT_S
) -> set[Published]:
    """Wait until the store holds ``expected`` readings; return what it holds then, or at
    the timeout (the accounting then shows what is missing)."""
    plants = list(plants)

    def complete() -> set[Published] | None:
        found = stored_readings(store_url, plants)
        return found if len(found) >= expected else None

    try:
        done: set[Published] = wait_for(complete, f"{expected} readings in the store", timeout_s)
    except WaitTimeoutError:
        return stored_readings(store_url, plants)
    return done


def platform_health(port: int) -> dict[str, object]:
    with contextlib.suppress(httpx.HTTPError):
        answer = httpx.get(f"http://{HOST}:{port}/api/v1/health", timeout=3, trust_env=False)
        data: dict[str, object] = answer.json()
        return data
    return {}
