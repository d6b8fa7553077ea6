"""`carbonlink demo`: the whole pipeline in one process, with no external service.

embedded broker (amqtt) <- simulators -> agents -> platform -> SQLite -> coordinator ->
directives -> simulators, and a live per-plant summary read back from storage, so what
is printed has made the full trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from carbonlink.agent import Agent
from carbonlink.cli._story import (
    Drop,
    drop_line,
    measured_drop,
    period_line,
    stage_phrase,
    switch_ms,
)
from carbonlink.config import MqttVersion, PlantConfig, Settings
from carbonlink.coordination import (
    DROP_STATE_KEY,
    STATUS_STATE_KEY,
    Coordinator,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    Journal,
    Policy,
    PolicySwitch,
    generate_key_pair,
    key_id,
    load_policy,
    private_key_from_text,
    public_pem,
    settings_signing_key,
)
from carbonlink.core.clock import SimClock, run_clock
from carbonlink.errors import CarbonlinkError, ConfigError
from carbonlink.mqtt.broker import EmbeddedBroker, free_port
from carbonlink.mqtt.client import BrokerAddress, parse_broker_url
from carbonlink.platform import Ingestor, Platform, Store
from carbonlink.simulators import (
    SimulationStats,
    emission_factors,
    simulate,
    without_changes_from,
)
from carbonlink.storage import FactorVersions
from carbonlink.web.api import create_app
from carbonlink.web.dashboard import DASHBOARD_PREFIX, mount_dashboard
from carbonlink.web.server import serve
from carbonlink.wire import format_timestamp

log = logging.getLogger(__name__)

DEFAULT_SPEED: Final = 60.0  # one simulated minute per second: every meter reports each second
DEFAULT_REFRESH_S: Final = 5.0
RATE_WINDOW_MS: Final = 15 * 60 * 1000  # CO2e rate is averaged over the last 15 simulated min
STARTUP_TIMEOUT_S: Final = 15.0
DEFAULT_HTTP_HOST: Final = "127.0.0.1"
DEFAULT_HTTP_PORT: Final = 8080  # taken: a free port instead, printed at start
DEMO_JOURNAL: Final = "coordination-journal.sqlite"  # in the demo's work folder
#: The key that signs the demo's reports when the config names none, made for the run
#: and kept in its work folder (readable by its owner only); FILE.pub is its public key.
DEMO_SIGNING_KEY: Final = "ledger-key"
DEMO_PUBLIC_KEY: Final = f"{DEMO_SIGNING_KEY}.pub"
#: A run with a duration is cut into this many coordinator periods; the policy's switch
#: comes at a third of them, so the end of the run has twice as many periods after it.
DEMO_PERIODS: Final = 12
DEMO_SWITCH_PERIOD: Final = DEMO_PERIODS // 3
READ_LAG_WALL_S: Final = 2.0  # batching and the agent's outbox hold a reading ~1 s
MIN_DEMO_PERIOD_S: Final = 60.0  # a period shorter than a minute holds too few readings


def demo_schedule(duration_s: float | None, speed: float) -> tuple[float | None, float | None]:
    """(period_s, switch_s) in simulated seconds for a run of ``duration_s`` wall
    seconds at ``speed``: twelve periods, the switch after four. (None, None) without a
    duration: the config's period and the policy's own schedule."""
    if duration_s is None:
        return None, None
    period = max(MIN_DEMO_PERIOD_S, round(duration_s * speed / DEMO_PERIODS))
    return period, period * DEMO_SWITCH_PERIOD


@dataclass(frozen=True, slots=True)
class DemoOptions:
    plants: Sequence[str]
    store_url: str
    work_dir: Path  # agents' outboxes and the platform's spill file
    speed: float = DEFAULT_SPEED
    seed: int = 0
    duration_s: float | None = None
    refresh_s: float = DEFAULT_REFRESH_S
    port: int | None = None
    http: tuple[str, int] | None = (DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT)
    policy: Path | None = None  # None: no coordinator
    shadows: Sequence[Path] = ()
    start_ms: int | None = None  # simulated start [default: so that the run ends now]
    #: With a duration: the coordinator's period, and when the policy's switch comes
    #: (simulated seconds from the start), so that a run of any length shows the switch
    #: and enough periods after it. None: the config's period and the policy's schedule.
    period_s: float | None = None
    switch_s: float | None = None


@dataclass(frozen=True, slots=True)
class PlantSummary:
    plant: str
    readings: int
    co2e_rate_t_per_h: float
    co2e_total_t: float
    rejected: int  # refused anywhere on the way: by the agent or by the platform
    factor_version: str  # "set version": what the CO2e figures are counted under


async def run_demo(
    settings: Settings,
    options: DemoOptions,
    open_store: Callable[[str], Store],
    out: TextIO,
) -> list[PlantSummary]:
    plants = [settings.plant(p) for p in options.plants]
    # A key that does not load stops the demo here, before anything has started.
    signing_key = None if options.policy is None else _signing_key(settings, options.work_dir)
    store = open_store(options.store_url)
    versions = {p.id: settings.factor_versions()[p.id] for p in plants}
    store.assign_factors(versions)
    # A backfill that ends now: the plants' data never runs ahead of the wall clock.
    span_ms = (
        None if options.duration_s is None else round(options.duration_s * options.speed * 1000)
    )
    clock = run_clock(options.speed, start_ms=options.start_ms, duration_ms=span_ms)
    async with EmbeddedBroker(options.port) as broker:
        address = parse_broker_url(broker.url)
        platform = Platform(
            Ingestor(
                {p.id: p for p in plants},
                settings.factor_set,
                max_skew_ms=round(settings.services.agent.max_clock_skew_s * 1000),
            ),
            store,
            address,
            # The embedded broker (amqtt) speaks MQTT 3.1.1 only.
            settings.services.platform.model_copy(update={"mqtt_version": MqttVersion.V311}),
            spill_path=options.work_dir / "spill.sqlite",
            now_ms=clock.now_ms,
        )
        agents = [
            Agent(
                p,
                address,
                settings.services.agent,
                outbox_path=options.work_dir / "outbox" / f"{p.id}.sqlite",
                now_ms=clock.now_ms,
            )
            for p in plants
        ]
        dashboard = _dashboard_address(options.http)
        print(
            f"carbonlink demo: broker {broker.url}, store {options.store_url}\n"
            + (_dashboard_lines(dashboard) if dashboard else "")
            + f"  {len(plants)} plants ({', '.join(p.id for p in plants)}), "
            f"simulated clock at {options.speed:g}x from {format_timestamp(clock.start_ms)}"
            + (
                ", then the wall clock once it is reached"
                if span_ms is None
                else " up to now"
                if options.start_ms is None
                else f" for {span_ms / 60_000:g} simulated min"
            )
            + f", seed {options.seed}",
            file=out,
            flush=True,
        )
        stats = SimulationStats()
        tasks: list[asyncio.Task[object]] = [asyncio.create_task(platform.run(), name="platform")]
        tasks += [asyncio.create_task(a.run(), name=a.identity) for a in agents]
        shown = dataclasses.replace(settings, plants={p.id: p for p in plants})
        journal_path = options.work_dir / DEMO_JOURNAL
        coordination = (
            None
            if options.policy is None or signing_key is None
            else _coordination(
                shown, options, options.policy, address, clock, journal_path, open_store,
                signing_key, versions, stats,
            )
        )  # fmt: skip
        if coordination is not None:
            print(f"  coordination: {coordination.describe()}", file=out, flush=True)
        if dashboard is not None:
            app = create_app(
                store,
                shown,
                health=platform.health,
                journal_path=journal_path if coordination is not None else None,
                clock_ms=clock.now_ms,
                ledger_public_key=None if coordination is None else coordination.public_key,
            )
            mount_dashboard(
                app,
                store,
                shown,
                health=platform.health,
                status=platform.agent_states,
                clock=clock.now_ms,
            )
            tasks.append(asyncio.create_task(serve(app, *dashboard), name="dashboard"))
        try:
            # Start the simulators only once everyone listens, so no early reading is lost.
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                await platform.connected.wait()
                await asyncio.gather(*(a.connected.wait() for a in agents))
            # Connecting took seconds, minutes of simulated time: the data starts at the
            # clock's start all the same, so that --start and --seed replay it exactly.
            clock.restart()
            tasks.append(
                asyncio.create_task(
                    simulate(plants, address, clock, seed=options.seed, stats=stats),
                    name="simulators",
                )
            )
            if coordination is not None:
                tasks.append(
                    asyncio.create_task(coordination.coordinator.run(), name="coordinator")
                )
            await _report(
                options, store, agents, platform, clock, out, coordination, versions, stats
            )
        finally:
            # A task that ended before the demo did (it should run until cancelled) is
            # said, not swallowed: its figures would be incomplete without a word.
            failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
            for task in failed:
                log.error("demo: %s stopped early", task.get_name(), exc_info=task.exception())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            platform.close()
        summaries = _summaries(store, agents, platform, clock.start_ms, versions)
        _print_table(summaries, clock.now_ms(), platform.counters.stored, out, final=True)
        if coordination is not None:
            newest = min(platform.counters.newest_stored_ms.values(), default=clock.start_ms)
            coordination.final_lines(clock.start_ms, newest, out)
            coordination.close()
        store.close()
        if failed:
            names = ", ".join(t.get_name() for t in failed)
            raise CarbonlinkError(
                f"demo: {names} stopped early (logged above); the figures above are incomplete"
            )
        return summaries


def _dashboard_lines(address: tuple[str, int]) -> str:
    base = f"http://{address[0]}:{address[1]}"
    return (
        f"  dashboard {base}/ (Overview: a card per plant; click one for its sources)\n"
        f"  coordination {base}{DASHBOARD_PREFIX}/coordination: the stage in force at the "
        "top, 'Since the stage switch' for the drop measured beside the model's, 'What each "
        "plant is told to do' for the directives, 'Policies compared on the same stream', "
        "'Reports to the government'\n"
    )


@dataclass
class _Coordination:
    """The demo's coordinator, with the store handle and journal it owns, and what it
    has told the user so far."""

    coordinator: Coordinator
    journal: Journal
    store: Store
    shadows: tuple[str, ...]
    public_key: Ed25519PublicKey
    public_key_path: Path
    plants: dict[str, PlantConfig]
    versions: FactorVersions  # what the plants' CO2e is counted under
    stats: SimulationStats  # the simulators': directives received and applied
    seed: int  # the simulators', so that the drop since the switch replays them
    switch_note: str = ""
    periods_shown: int = 0
    stage_shown: int | None = None
    switched_ms: int | None = None  # when the switch was first seen in the status

    def describe(self) -> str:
        policy = self.coordinator.policy
        shadows = f", shadows {', '.join(self.shadows)}" if self.shadows else ""
        return (
            f"policy {policy.name} ({policy.description or 'see its file'}){self.switch_note}"
            f"{shadows}; reports signed with key {key_id(self.public_key)} (public key "
            f"{self.public_key_path})"
        )

    def news(self, start_ms: int, newest_ms: int) -> list[str]:
        """What happened since the last call: a line per new period, the stage switch
        with the directives the plants received, the drop since the switch."""
        status = self.journal.load_state(STATUS_STATE_KEY)
        if status is None or int(status.get("periods", 0)) == self.periods_shown:
            return []
        self.periods_shown = int(status["periods"])
        lines = [f"  coordination: {period_line(status, len(self.journal.ledger))}"]
        stage = int(status["stage"])
        if self.stage_shown is not None and stage != self.stage_shown:
            self.switched_ms = int(status["updated_ms"])
            lines.append(
                f"  ==> stage switch: stage {self.stage_shown} -> "
                f"{stage_phrase(stage, str(status['stage_name']))}; new directives "
                f"published to {len(status.get('directives', {}))} plants"
            )
        self.stage_shown = stage
        if self.switched_ms is not None:
            self.stats.refresh()
            received = ", ".join(
                f"{plant} {link.directives}"
                for plant, link in zip(self.plants, self.stats.links, strict=False)
            )
            lines.append(f"  directives received by the plants so far: {received}")
            drop = self.drop(start_ms, newest_ms)
            if drop is not None:
                lines.append(f"  {drop_line(drop)}")
        return lines

    def drop(self, start_ms: int, end_ms: int) -> Drop | None:
        rows = self.journal.period_rows()
        switch = switch_ms(rows)
        if switch is None or end_ms <= switch:
            return None
        # The plants' samples since the switch, as run and as they would have been
        # without it: the same seeded fleet, replayed with the directives it applied.
        without = without_changes_from(
            list(self.plants.values()),
            emission_factors(None),  # what `simulate` calibrates abatement with
            seed=self.seed,
            start_ms=start_ms,
            end_ms=end_ms,
            changes_ms=switch,
            inflows=list(self.stats.inflows),
        )
        window = (start_ms, switch, end_ms)
        drop = measured_drop(self.store, self.versions, self.plants, rows, window, without)
        if drop is not None:  # the coordination page shows the same figures
            self.journal.save_state(
                DROP_STATE_KEY, dataclasses.asdict(drop) | {"switch_ms": switch, "end_ms": end_ms}
            )
        return drop

    def final_lines(self, start_ms: int, end_ms: int, out: TextIO) -> None:
        drop = self.drop(start_ms, end_ms)
        if self.switched_ms is None:
            print("\nno stage switch in this run: nothing to compare before and after", file=out)
        elif drop is None:
            print(
                "\nno emission drop to show: too little was stored on one side of the switch "
                "(readings lag the clock when the machine is busy; a longer run helps)",
                file=out,
            )
        else:
            print(f"\n{drop_line(drop)}", file=out)
        out.flush()

    def close(self) -> None:
        self.journal.close()
        self.store.close()


def _coordination(
    settings: Settings,
    options: DemoOptions,
    policy_path: Path,
    address: BrokerAddress,
    clock: SimClock,
    journal_path: Path,
    open_store: Callable[[str], Store],
    signing_key: Ed25519PrivateKey,
    versions: FactorVersions,
    stats: SimulationStats,
) -> _Coordination:
    policy, switch_note = _demo_policy(load_policy(policy_path), options.switch_s)
    shadows = [load_policy(p) for p in options.shadows]
    shadows = [s for s in shadows if s.name != policy.name]
    config = settings.services.coordination
    period_s = options.period_s or config.period_s
    speed = clock.speed or DEFAULT_SPEED
    public_key_path = options.work_dir / DEMO_PUBLIC_KEY
    public_key_path.write_text(public_pem(signing_key.public_key()))
    # Its own store handle: the coordinator reads from a thread of its own.
    store = open_store(options.store_url)
    journal = Journal(journal_path, signing_key=signing_key)
    coordinator = Coordinator(
        settings,
        store,
        address,
        policy,
        journal,
        shadows=shadows,
        clock_ms=clock.now_ms,
        period_s=period_s,
        wall_period_s=period_s / speed,
        # The read lag lets data in flight land: a second or two of wall time, which is
        # minutes of simulated time at the demo's speeds, but never half a period or more.
        read_lag_s=min(max(config.read_lag_s, READ_LAG_WALL_S * speed), period_s / 2),
        client_id="carbonlink-demo-coordinator",
    )
    return _Coordination(
        coordinator,
        journal,
        store,
        tuple(s.name for s in shadows),
        signing_key.public_key(),
        public_key_path,
        dict(settings.plants),
        versions,
        stats,
        options.seed,
        switch_note,
    )


def _demo_policy(policy: Policy, switch_s: float | None) -> tuple[Policy, str]:
    """The policy with its later switches moved so that the first comes ``switch_s``
    after the start (a third of the run), and a note that says so."""
    offsets = [s for s in policy.switches[1:] if s.at.is_offset and s.at.offset_ms > 0]
    if switch_s is None or not offsets or len(offsets) != len(policy.switches) - 1:
        return policy, ""
    factor = switch_s * 1000 / offsets[0].at.offset_ms
    moved = tuple(
        PolicySwitch(s.stage, dataclasses.replace(s.at, offset_ms=round(s.at.offset_ms * factor)))
        for s in offsets
    )
    note = (
        f"; the demo moves its switch to stage {moved[0].stage} to simulated +"
        f"{_minutes(moved[0].at.offset_ms)}, a third of the run"
    )
    return dataclasses.replace(policy, switches=(policy.switches[0], *moved)), note


def _minutes(ms: int) -> str:
    minutes = ms / 60_000
    return f"{minutes / 60:g} h" if minutes >= 120 else f"{minutes:g} min"


def _signing_key(settings: Settings, work_dir: Path) -> Ed25519PrivateKey:
    """The configured signing key, else the work folder's own: made on the first run,
    reused by the next ones so a kept journal stays verifiable with one public key."""
    configured = settings_signing_key(settings)
    if configured is not None:
        return configured
    path = work_dir / DEMO_SIGNING_KEY
    if not path.is_file():
        (work_dir / DEMO_PUBLIC_KEY).unlink(missing_ok=True)  # a stale one: rewritten
        generate_key_pair(path)
    try:
        return private_key_from_text(path.read_text())
    except ValueError as exc:
        raise ConfigError(path, "<file>", f"{exc}: move it away for a new one") from None


async def _report(
    options: DemoOptions,
    store: Store,
    agents: Sequence[Agent],
    platform: Platform,
    clock: SimClock,
    out: TextIO,
    coordination: _Coordination | None,
    versions: FactorVersions,
    stats: SimulationStats,
) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + options.duration_s if options.duration_s is not None else None
    while end is None or loop.time() < end:
        wait = options.refresh_s if end is None else min(options.refresh_s, end - loop.time())
        await asyncio.sleep(max(0.0, wait))
        summaries = _summaries(store, agents, platform, clock.start_ms, versions)
        _print_table(summaries, clock.now_ms(), platform.counters.stored, out, final=False)
        if coordination is not None:
            newest = min(platform.counters.newest_stored_ms.values(), default=clock.start_ms)
            # In a thread: replaying the plants for the drop takes a moment on a long run.
            news = await asyncio.to_thread(coordination.news, clock.start_ms, newest)
            for line in news:
                print(line, file=out, flush=True)


def _dashboard_address(wanted: tuple[str, int] | None) -> tuple[str, int] | None:
    if wanted is None:
        return None
    host, port = wanted
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return host, free_port(host)
    return host, port


def _summaries(
    store: Store,
    agents: Sequence[Agent],
    platform: Platform,
    start_ms: int,
    versions: FactorVersions,
) -> list[PlantSummary]:
    totals = store.totals(versions).set_index("plant")
    rows = []
    for agent in agents:
        plant = agent.plant.id
        total = float(totals["co2e_kg"].get(plant, 0.0))
        # The window ends at the newest stored reading, not at "now": batching delays
        # storage by a second or so, which is many simulated minutes at high speed.
        # Early in a run less than a full window exists: average over what there is.
        newest = platform.counters.newest_stored_ms.get(plant, start_ms)
        window_ms = max(1, min(RATE_WINDOW_MS, newest - start_ms))
        recent = store.totals(versions, start_ms=newest - window_ms + 1, end_ms=newest + 1)
        window = float(recent.set_index("plant")["co2e_kg"].get(plant, 0.0))
        rows.append(
            PlantSummary(
                plant,
                int(totals["readings"].get(plant, 0)),
                window / 1000 * (3_600_000 / window_ms),
                total / 1000,
                sum(agent.counters.rejected.values())
                + platform.counters.rejected_by_plant.get(plant, 0),
                " ".join(versions[plant]),
            )
        )
    return rows


def _print_table(
    rows: Sequence[PlantSummary], now_ms: int, stored: int, out: TextIO, *, final: bool
) -> None:
    title = "final totals" if final else "live"
    print(f"\n{title} at simulated {format_timestamp(now_ms)} ({stored} readings stored)", file=out)
    print(
        f"  {'plant':<14}{'readings':>9}{'CO2e t/h':>11}{'CO2e total t':>14}{'rejected':>10}"
        "  factor set",
        file=out,
    )
    for r in rows:
        print(
            f"  {r.plant:<14}{r.readings:>9}{r.co2e_rate_t_per_h:>11.2f}"
            f"{r.co2e_total_t:>14.3f}{r.rejected:>10}  {r.factor_version}",
            file=out,
        )
    out.flush()
