"""A running platform with its dashboard: broker <- simulators -> agents -> platform -> SQLite.

Everything but the broker runs on an asyncio loop in a background thread, so a test
can drive the browser through Playwright's sync API from the main thread meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from carbonlink.agent import Agent
from carbonlink.config import Settings
from carbonlink.coordination import Coordinator, Journal, Policy
from carbonlink.coordination._signing import Ed25519PrivateKey
from carbonlink.core.clock import SimClock
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from carbonlink.simulators import simulate
from carbonlink.web.api import create_app
from carbonlink.web.dashboard import mount_dashboard
from carbonlink.web.server import serve
from tests.servers import HOST, free_port

# Five simulated minutes per second: a 1-minute window completes several times a second.
SPEED: Final = 300.0
REFRESH_S: Final = 0.3
START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0
CANCEL_RETRY_S: Final = 0.5
# With a coordinator: five-minute periods, one wall second each at this speed.
COORDINATION_PERIOD_S: Final = 300.0


class LiveDashboard:
    def __init__(
        self,
        settings: Settings,
        broker_url: str,
        work: Path,
        status: Mapping[str, str],
        coordination: tuple[Policy, Sequence[Policy]] | None = None,
        coordination_period_s: float = COORDINATION_PERIOD_S,
    ) -> None:
        """``coordination`` = (active policy, shadows): run a coordinator as well, with
        periods of ``coordination_period_s`` simulated seconds."""
        self.settings = settings
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.store = open_store(f"sqlite:///{work / 'store.sqlite'}")
        self.clock = SimClock(speed=SPEED)
        self._address = parse_broker_url(broker_url)
        self._work = work
        self._status = dict(status)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._main: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-dashboard", daemon=True)
        self.platform: Platform | None = None
        self.coordination = coordination
        self.coordination_period_s = coordination_period_s
        self.journal_path = work / "journal.sqlite"
        # The coordinator signs its reports; the API checks them with the public half.
        self.ledger_key = Ed25519PrivateKey.generate()
        self.coordinator: Coordinator | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._error is not None:
            self.__exit__(None, None, None)
            raise RuntimeError(f"the live dashboard did not start: {self._error!r}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._main is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)
        self._thread.join(STOP_TIMEOUT_S)
        self.store.close()
        if self._thread.is_alive():
            raise RuntimeError(f"the live dashboard did not stop within {STOP_TIMEOUT_S} s")

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported to the test through __enter__
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._main = asyncio.current_task()
        settings, clock = self.settings, self.clock
        platform = Platform(
            Ingestor.from_settings(settings), self.store, self._address,
            settings.services.platform, spill_path=self._work / "spill.sqlite",
            now_ms=clock.now_ms,
        )  # fmt: skip
        self.platform = platform
        agents = [
            Agent(
                plant,
                self._address,
                settings.services.agent,
                outbox_path=self._work / "outbox" / f"{plant.id}.sqlite",
                now_ms=clock.now_ms,
            )
            for plant in settings.plants.values()
        ]
        journal_path = self.journal_path if self.coordination is not None else None
        app = create_app(
            self.store, settings, health=platform.counters.as_dict, journal_path=journal_path,
            ledger_public_key=self.ledger_key.public_key(),
        )  # fmt: skip
        mount_dashboard(
            app, self.store, settings, health=platform.counters.as_dict,
            status=lambda: self._status, clock=clock.now_ms, refresh_s=REFRESH_S,
        )  # fmt: skip
        tasks = [asyncio.create_task(platform.run())]
        tasks += [asyncio.create_task(agent.run()) for agent in agents]
        tasks.append(asyncio.create_task(serve(app, HOST, self.port, shutdown_timeout_s=1)))
        simulator: list[asyncio.Task[object]] = []
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await platform.connected.wait()
                await asyncio.gather(*(agent.connected.wait() for agent in agents))
            plants = list(settings.plants.values())
            simulator.append(asyncio.create_task(simulate(plants, self._address, clock)))
            journal = coordinator_store = None
            if self.coordination is not None:
                policy, shadows = self.coordination
                # Its own store handle: it reads from a thread of its own.
                coordinator_store = open_store(self.store.url)
                journal = Journal(self.journal_path, signing_key=self.ledger_key)
                self.coordinator = Coordinator(
                    settings, coordinator_store, self._address, policy, journal,
                    shadows=shadows, clock_ms=clock.now_ms,
                    period_s=self.coordination_period_s,
                    wall_period_s=self.coordination_period_s / SPEED, read_lag_s=60.0,
                )  # fmt: skip
                tasks.append(asyncio.create_task(self.coordinator.run()))
            self._ready.set()
            try:
                await asyncio.gather(*tasks, *simulator)
            finally:
                if journal is not None:
                    await _stop(simulator)
                    await _stop(tasks)
                    journal.close()
                if coordinator_store is not None:
                    coordinator_store.close()
        finally:
            await _stop(simulator)
            await _stop(tasks)
            platform.close()


async def _stop(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    # Python 3.11's asyncio.wait_for (the agent's batching uses it) can swallow a
    # cancellation that lands just as a reading arrives; that child task then keeps its
    # TaskGroup, and so the agent, from ever finishing. Cancel stragglers again.
    myself = asyncio.current_task()
    while not all(task.done() for task in tasks):
        await asyncio.wait(tasks, timeout=CANCEL_RETRY_S)
        for straggler in asyncio.all_tasks():
            if straggler is not myself and not straggler.done():
                straggler.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
