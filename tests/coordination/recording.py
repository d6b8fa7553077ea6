"""Recorded windows for the coordination tests, without a broker.

The plant's readings come from the real simulator fleet and go through the real
platform path (telemetry encoding, ``Ingestor``: decoding, units, emission factors)
into a real store; only MQTT and the agent are skipped, because these tests are about
what happens after storage. The end-to-end tests cover the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from carbonlink import wire
from carbonlink.config import PlantConfig, ReadingKind, Settings, load_config
from carbonlink.platform import Ingestor
from carbonlink.simulators import Fleet, abatement_inflow, emission_factors
from carbonlink.storage import Store
from tests.configs import write_config

HOUR: Final = 3_600_000
START_MS: Final = 1_795_420_800_000  # 2026-11-23T08:00:00Z, a Monday


def flat_settings(directory: Path, plants: dict[str, str]) -> Settings:
    """Plants with flat load and no noise: emission changes are abatement, nothing else."""
    path = write_config(directory, plants=plants)
    for plant_id in plants:
        plant_file = path.parent / "plants" / f"{plant_id}.yaml"
        plant: dict[str, Any] = yaml.safe_load(plant_file.read_text())
        plant.setdefault("simulation", {}).setdefault("shift", {}).update(
            daily_swing=0.0, seasonal_swing=0.0, noise_sd=0.0, hours=24, weekend_level=None
        )
        for meter in plant["meters"]:
            meter["noise_sd"] = 0.0
        plant_file.write_text(yaml.safe_dump(plant))
    return load_config(path)


def record(
    settings: Settings,
    store: Store,
    plants: Sequence[PlantConfig],
    start_ms: int,
    hours: float,
    *,
    seed: int = 0,
    directives: Sequence[tuple[str, int, float, float, float]] = (),
) -> int:
    """Simulate ``hours`` from ``start_ms`` and store every reading; returns how many.

    ``directives`` are (plant, effective_ms, E_M, E_P, sigma), obeyed as the simulator
    obeys the coordinator's.
    """
    fleet = Fleet(plants, seed, start_ms, emission_factors(settings.factor_set))
    index = {p.id: i for i, p in enumerate(fleet.plants)}
    for plant_id, effective_ms, e_m, e_p, sigma in directives:
        config = fleet.plants[index[plant_id]].simulation.abatement
        fleet.set_inflow(index[plant_id], effective_ms, abatement_inflow(config, e_m, e_p, sigma))
    end_ms = start_ms + round(hours * HOUR)
    # The recording's clock: its readings may lie ahead of the wall clock.
    ingestor = Ingestor(dict(settings.plants), settings.factor_set, now_ms=lambda: end_ms)
    registers: dict[int, float] = {}
    stored = 0
    batch: dict[str, list[wire.Reading]] = {p.id: [] for p in plants}
    for tick in fleet.advance(end_ms):
        for meter_index, value in zip(tick.meters.tolist(), tick.values.tolist(), strict=True):
            plant, meter = fleet.meter_refs[meter_index]
            amount = value
            if meter.reading is ReadingKind.COUNTER:
                previous = registers.get(meter_index)
                registers[meter_index] = value
                if previous is None:
                    continue  # the first register sets the baseline, as the agent does
                amount = value - previous
                if amount < 0:  # rolled over
                    amount += meter.counter_rollover or 0.0
            duration = round(meter.sample_period_s * 1000)
            batch[plant.id].append(wire.Reading(meter.id, tick.ts_ms, amount, meter.unit, duration))
        if sum(len(v) for v in batch.values()) >= 5_000:
            stored += _flush(ingestor, store, batch)
    return stored + _flush(ingestor, store, batch)


def _flush(ingestor: Ingestor, store: Store, batch: dict[str, list[wire.Reading]]) -> int:
    stored = 0
    for plant_id, readings in batch.items():
        if not readings:
            continue
        message = wire.TelemetryBatch(
            plant_id, wire.agent_id(plant_id), 1, readings[-1].ts_ms, tuple(readings)
        )
        result = ingestor.ingest(wire.telemetry_topic(plant_id), wire.encode_telemetry(message))
        assert not result.rejected, result.rejected[:3]
        store.write(result.stored)
        stored += len(result.stored)
        readings.clear()
    return stored
