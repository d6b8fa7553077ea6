"""Replay a recorded series (CSV, or a store query) onto the wire at its original or an
accelerated pace.

The CSV needs columns ``time``, ``plant``, ``meter``, ``value`` (``unit`` optional), as
``carbonlink query --format csv`` prints them; ``ts`` is accepted for ``time``. Values
are interval amounts; for a meter configured as a counter they are summed back into a
register, so the agent sees what the meter itself would have sent.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from carbonlink import wire
from carbonlink.config import PlantConfig, ReadingKind
from carbonlink.core.clock import SimClock
from carbonlink.errors import ConfigError, RejectedReading
from carbonlink.mqtt.client import BrokerAddress
from carbonlink.simulators._link import LinkCounters, Outgoing, PlantLink
from carbonlink.simulators._runner import SimulationStats
from carbonlink.storage import Store


@dataclass(frozen=True, slots=True)
class ReplayRow:
    ts_ms: int
    plant: str
    meter: str
    value: float


def load_replay(path: str | Path, plants: Mapping[str, PlantConfig]) -> list[ReplayRow]:
    """Rows sorted by time; every plant, meter and unit must match the configuration."""
    rows: list[ReplayRow] = []
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        for line, record in enumerate(reader, start=2):
            where = f"line {line}"
            raw_time = record.get("time") or record.get("ts")
            try:
                ts_ms = wire.parse_timestamp(
                    int(raw_time) if raw_time and raw_time.isdigit() else raw_time
                )
                value = float(record["value"])
            except (RejectedReading, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(path, where, f"bad time or value: {exc}") from None
            plant = plants.get(record.get("plant") or "")
            if plant is None:
                raise ConfigError(path, where, f"unknown plant {record.get('plant')!r}")
            meter = plant.meter(record.get("meter") or "")
            if meter is None:
                raise ConfigError(path, where, f"unknown meter {record.get('meter')!r}")
            unit = record.get("unit")
            if unit and unit != meter.unit:
                raise ConfigError(path, where, f"unit {unit!r}, {meter.id} reports {meter.unit!r}")
            rows.append(ReplayRow(ts_ms, plant.id, meter.id, value))
    rows.sort(key=lambda r: r.ts_ms)
    return rows


def load_replay_from_store(
    store: Store,
    plants: Mapping[str, PlantConfig],
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[ReplayRow]:
    """The stored activity of ``plants`` in ``[start_ms, end_ms)``, sorted by time.

    Points of meters the configuration no longer has are left out: what is replayed must
    be something the plants' agents accept.
    """
    rows: list[ReplayRow] = []
    for plant in plants.values():
        frame = store.activity(plant.id, start_ms=start_ms, end_ms=end_ms)
        known = {m.id for m in plant.meters}
        frame = frame[frame["meter"].isin(known)]
        times = frame["time"].dt.as_unit("ms").astype("int64")
        rows.extend(
            ReplayRow(int(ts), plant.id, str(meter), float(value))
            for ts, meter, value in zip(times, frame["meter"], frame["value"], strict=True)
        )
    rows.sort(key=lambda r: r.ts_ms)
    return rows


async def replay(
    rows: list[ReplayRow],
    plants: Mapping[str, PlantConfig],
    broker: BrokerAddress,
    clock: SimClock,
    *,
    stats: SimulationStats | None = None,
) -> SimulationStats:
    """Publish ``rows`` with their recorded timestamps, paced by ``clock``.

    Start the clock at the first row's time: speed 1 keeps the original pace.
    """
    import asyncio

    stats = stats if stats is not None else SimulationStats()
    used = sorted({r.plant for r in rows})
    links: dict[str, PlantLink] = {}
    for plant_id in used:
        counters = LinkCounters()
        stats.links.append(counters)
        links[plant_id] = PlantLink(plant_id, broker, (), clock.now_ms(), lambda _: None, counters)
    registers: dict[tuple[str, str], float] = {}
    seq: dict[tuple[str, str], int] = {}
    async with asyncio.TaskGroup() as tasks:
        runs = [tasks.create_task(link.run()) for link in links.values()]
        await asyncio.gather(*(link.connected.wait() for link in links.values()))
        for row in rows:
            await clock.sleep_until(row.ts_ms)
            meter = plants[row.plant].meter(row.meter)
            if meter is None:  # rows come from load_replay*, which only keep known meters
                raise ConfigError(None, "--replay", f"{row.plant} has no meter {row.meter!r}")
            key = (row.plant, row.meter)
            value = row.value
            if meter.reading is ReadingKind.COUNTER:
                value = registers.get(key, 0.0) + row.value
                if meter.counter_rollover is not None and value >= meter.counter_rollover:
                    value -= meter.counter_rollover
                registers[key] = value
            seq[key] = seq.get(key, 0) + 1
            dur = meter.sample_period_s if meter.reading is ReadingKind.INTERVAL else None
            payload = wire.encode_samples(
                meter.unit, meter.reading.value, seq[key], [(row.ts_ms, value)], dur
            )
            topic = wire.meter_topic(row.plant, row.meter)
            await links[row.plant].queue.put(Outgoing(row.ts_ms, row.meter, topic, payload, 1))
            stats.generated_samples += 1
            stats.sim_time_ms = row.ts_ms
        for link in links.values():
            await link.queue.put(None)
        await asyncio.gather(*runs)
    stats.refresh()
    return stats
