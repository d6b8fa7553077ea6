"""Drive the fleet on the shared simulated clock and hand its samples to the plant links."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TextIO

from carbonlink import wire
from carbonlink.config import FactorLookup, MeterConfig, PlantConfig, ReadingKind
from carbonlink.core.clock import SimClock
from carbonlink.emissions import FactorLibrary, ResolvedFactor
from carbonlink.mqtt.client import BrokerAddress
from carbonlink.simulators._faults import SAMPLE_FAULTS, Fault, FaultKind
from carbonlink.simulators._fleet import EmissionFactor, Fleet, InflowChange, Tick
from carbonlink.simulators._link import LinkCounters, Outgoing, PlantLink
from carbonlink.simulators._models import MS_PER_HOUR, abatement_inflow

PROGRESS_INTERVAL_S: Final = 5.0
STARTUP_TIMEOUT_S: Final = 30.0
DEFAULT_GWP: Final = "AR5"


@dataclass(slots=True)
class SimulationStats:
    published_messages: int = 0
    published_samples: int = 0
    generated_samples: int = 0
    dropped_samples: int = 0
    directives: int = 0
    sim_time_ms: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    links: list[LinkCounters] = field(default_factory=list)
    #: The directives as the plants applied them (``simulators.counterfactual`` replays them).
    inflows: list[InflowChange] = field(default_factory=list)
    wall_start: float = field(default_factory=time.monotonic)

    def refresh(self) -> None:
        """Fold the per-plant counters into the totals."""
        self.published_messages = sum(c.messages for c in self.links)
        self.published_samples = sum(c.samples for c in self.links)
        self.dropped_samples = sum(c.dropped_samples for c in self.links)
        self.directives = sum(c.directives for c in self.links)
        merged: dict[str, int] = {}
        for counters in self.links:
            for kind, count in counters.faults.items():
                merged[kind] = merged.get(kind, 0) + count
        for kind, count in self.faults.items():
            if kind not in merged:
                merged[kind] = count
        self.faults = merged


def emission_factors(factor_set: FactorLookup | None = None) -> EmissionFactor:
    """Each meter's resolved factor (kg CO2e and energy per metered unit): the plant's
    factor set if a lookup is given, else the built-in library (AR5) with the plant's grid
    region."""
    library = FactorLibrary.builtin()

    def factor(plant: PlantConfig, meter: MeterConfig) -> ResolvedFactor:
        if meter.activity is None:
            raise ValueError(f"meter {meter.id!r} has no emission activity")
        if factor_set is None:
            resolved = library.resolve(
                meter.activity, meter.unit, gwp=DEFAULT_GWP, region=plant.grid_region
            )
        else:
            resolved = factor_set(plant.id).resolve(
                library, meter.activity, meter.unit, region=plant.grid_region
            )
        return resolved

    return factor


class _Batcher:
    """Per-meter sample buffers, flushed as one message per ``batch_samples`` samples."""

    def __init__(self, fleet: Fleet, links: Sequence[PlantLink], batch_samples: int) -> None:
        self._fleet = fleet
        self._links = links
        self._batch = batch_samples
        self._buffers: list[list[tuple[int, float]]] = [[] for _ in fleet.meter_refs]
        self._seq = [0] * len(fleet.meter_refs)
        refs = fleet.meter_refs
        self._topic = [wire.meter_topic(p.id, m.id) for p, m in refs]
        self._dur_s = [
            None if m.reading is ReadingKind.COUNTER else m.sample_period_s for _, m in refs
        ]
        self._plant_of = fleet.plant_of.tolist()

    async def add(self, meter: int, ts_ms: int, value: float) -> None:
        buffer = self._buffers[meter]
        buffer.append((ts_ms, value))
        if len(buffer) >= self._batch:
            await self._flush(meter)

    async def flush_all(self) -> None:
        for meter, buffer in enumerate(self._buffers):
            if buffer:
                await self._flush(meter)

    async def _flush(self, meter: int) -> None:
        samples = self._buffers[meter]
        self._buffers[meter] = []
        _, config = self._fleet.meter_refs[meter]
        self._seq[meter] += 1
        payload = wire.encode_samples(
            config.unit, config.reading.value, self._seq[meter], samples, self._dur_s[meter]
        )
        outgoing = Outgoing(samples[-1][0], config.id, self._topic[meter], payload, len(samples))
        await self._links[self._plant_of[meter]].queue.put(outgoing)


class _SampleFaults:
    """Value and timestamp faults, applied per sample before encoding."""

    def __init__(self, fleet: Fleet, faults: Sequence[Fault], start_ms: int) -> None:
        self._fleet = fleet
        index = {(p.id, m.id): i for i, (p, m) in enumerate(fleet.meter_refs)}
        self._active: list[tuple[Fault, int, int, set[int]]] = []
        self._resets: list[tuple[int, set[int]]] = []
        for fault in faults:
            meters = (
                {i for (plant, meter), i in index.items() if fault.matches(plant, meter)}
                if fault.meter is None
                else {index[(fault.plant, fault.meter)]}
            )
            begin, end = fault.window_ms(start_ms)
            if fault.kind is FaultKind.COUNTER_RESET:
                self._resets.append((begin, meters))
            elif fault.kind in SAMPLE_FAULTS:
                self._active.append((fault, begin, end, meters))
        self._stuck: dict[tuple[int, int], float] = {}
        self.counts: dict[str, int] = {}

    def before_tick(self, ts_ms: int) -> None:
        remaining = []
        for begin, meters in self._resets:
            if begin <= ts_ms:
                for meter in meters:
                    if self._fleet.is_counter[meter]:
                        self._fleet.reset_register(meter)
                        self._count(FaultKind.COUNTER_RESET)
            else:
                remaining.append((begin, meters))
        self._resets = remaining

    def any_active(self, ts_ms: int) -> bool:
        return any(begin <= ts_ms < end for _, begin, end, _ in self._active)

    def apply(self, meter: int, ts_ms: int, value: float) -> tuple[int, float] | None:
        """The sample as sent, or None when it is dropped."""
        out_ts = ts_ms
        for number, (fault, begin, end, meters) in enumerate(self._active):
            if not (begin <= ts_ms < end) or meter not in meters:
                continue
            self._count(fault.kind)
            match fault.kind:
                case FaultKind.DROPOUT:
                    return None
                case FaultKind.STUCK:
                    value = self._stuck.setdefault((number, meter), value)
                case FaultKind.SPIKE:
                    value = value * fault.factor
                case FaultKind.DRIFT:
                    value = value * (1.0 + fault.drift_per_hour * (ts_ms - begin) / MS_PER_HOUR)
                case FaultKind.CLOCK_SKEW:
                    out_ts = ts_ms + round(fault.skew_s * 1000)
        return out_ts, value

    def _count(self, kind: FaultKind) -> None:
        self.counts[kind.value] = self.counts.get(kind.value, 0) + 1


async def simulate(
    plants: Sequence[PlantConfig],
    broker: BrokerAddress,
    clock: SimClock,
    *,
    seed: int = 0,
    duration_ms: int | None = None,
    stats: SimulationStats | None = None,
    faults: Sequence[Fault] = (),
    batch_samples: int = 1,
    factor_set: FactorLookup | None = None,
    progress: TextIO | None = None,
) -> SimulationStats:
    """Publish every plant's meters until ``duration_ms`` of simulated time has passed."""
    if batch_samples < 1:
        raise ValueError("batch_samples must be >= 1")
    stats = stats if stats is not None else SimulationStats()
    stats.wall_start = time.monotonic()
    # The clock's start, not "now": the time spent connecting (seconds, so simulated
    # minutes at a high speed) must not shift the data, or a seed would not replay.
    start = clock.start_ms
    end = start + duration_ms if duration_ms is not None else None
    fleet = Fleet(plants, seed, start, emission_factors(factor_set))
    fleet.applied = stats.inflows
    _check_faults(plants, faults)
    links: list[PlantLink] = []
    for index, plant in enumerate(fleet.plants):
        counters = LinkCounters()
        stats.links.append(counters)

        def on_directive(directive: wire.Directive, index: int = index) -> None:
            config = fleet.plants[index].simulation.abatement
            inflow = abatement_inflow(
                config, directive.effort_firm, directive.effort_platform, directive.sigma
            )
            fleet.set_inflow(index, directive.effective_ms, inflow)

        plant_faults = [f for f in faults if f.plant == plant.id]
        links.append(PlantLink(plant.id, broker, plant_faults, start, on_directive, counters))
    async with asyncio.TaskGroup() as tasks:
        link_tasks = [tasks.create_task(link.run(), name=f"sim-{link.plant}") for link in links]
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            await asyncio.gather(*(link.connected.wait() for link in links))
        reporter = (
            tasks.create_task(_report_progress(stats, start, end, progress))
            if progress is not None
            else None
        )
        await _drive(fleet, links, clock, end, stats, faults, start, batch_samples)
        for link in links:
            await link.queue.put(None)
        await asyncio.gather(*link_tasks)
        if reporter is not None:
            reporter.cancel()
    stats.refresh()
    if progress is not None:
        _print_progress(stats, start, end, progress, time.monotonic())
    return stats


async def _drive(
    fleet: Fleet,
    links: Sequence[PlantLink],
    clock: SimClock,
    end: int | None,
    stats: SimulationStats,
    faults: Sequence[Fault],
    start: int,
    batch_samples: int,
) -> None:
    batcher = _Batcher(fleet, links, batch_samples)
    sample_faults = _SampleFaults(fleet, faults, start)
    while True:
        ts = fleet.next_due_ms()
        if end is not None and ts > end:
            break
        await clock.sleep_until(ts)
        sample_faults.before_tick(ts)
        tick = fleet.step()
        await _dispatch(tick, batcher, sample_faults)
        stats.generated_samples += len(tick.meters)
        stats.sim_time_ms = ts
        stats.faults = sample_faults.counts
    await batcher.flush_all()


async def _dispatch(tick: Tick, batcher: _Batcher, sample_faults: _SampleFaults) -> None:
    ts = tick.ts_ms
    meters = tick.meters.tolist()
    values = tick.values.tolist()
    if not sample_faults.any_active(ts):
        for meter, value in zip(meters, values, strict=True):
            await batcher.add(meter, ts, value)
        return
    for meter, value in zip(meters, values, strict=True):
        sent = sample_faults.apply(meter, ts, value)
        if sent is not None:
            await batcher.add(meter, *sent)


def _check_faults(plants: Sequence[PlantConfig], faults: Sequence[Fault]) -> None:
    from carbonlink.errors import ConfigError

    by_id = {p.id: p for p in plants}
    for fault in faults:
        plant = by_id.get(fault.plant)
        if plant is None:
            raise ConfigError(
                None, "faults", f"{fault.kind}: plant {fault.plant!r} is not in the run"
            )
        if fault.meter is not None:
            meter = plant.meter(fault.meter)
            if meter is None:
                raise ConfigError(
                    None, "faults", f"{fault.kind}: no meter {fault.meter!r} in {plant.id}"
                )
            if fault.kind is FaultKind.COUNTER_RESET and meter.reading is not ReadingKind.COUNTER:
                raise ConfigError(
                    None, "faults", f"counter_reset: {fault.meter!r} is not a counter"
                )


async def _report_progress(
    stats: SimulationStats, start: int, end: int | None, out: TextIO
) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        stats.refresh()
        _print_progress(stats, start, end, out, time.monotonic())


def _print_progress(
    stats: SimulationStats, start: int, end: int | None, out: TextIO, now: float
) -> None:
    elapsed = max(now - stats.wall_start, 1e-9)
    share = (
        f" {100 * (stats.sim_time_ms - start) / (end - start):5.1f}%" if end and end > start else ""
    )
    print(
        f"sim {wire.format_timestamp(stats.sim_time_ms or start)}{share}  "
        f"samples {stats.published_samples:,} in {stats.published_messages:,} messages  "
        f"dropped {stats.dropped_samples:,}  "
        f"{stats.published_samples / elapsed:,.0f} samples/s",
        file=out,
        flush=True,
    )
