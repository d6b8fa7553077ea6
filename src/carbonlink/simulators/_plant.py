"""A plant's meters as a production-driven load model.

The first slice of the simulator: production follows a daily shift pattern with noise,
and each meter draws its nominal rate scaled by production. Every random draw comes
from the plant's own generator, seeded from the run seed and the plant id, so a run
replays exactly and adding a plant does not change the others' streams.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np

from carbonlink.config import MeterConfig, PlantConfig, ReadingKind
from carbonlink.wire import Sample

# Production level by local hour (fraction of capacity): three-shift continuous
# processes (cement, steel, chemicals) stay high at night; the dip mimics shift change
# and maintenance. An assumption for the first slice, refined per archetype later.
BASE_LOAD: Final = 0.82
DAILY_SWING: Final = 0.10
PRODUCTION_NOISE_SD: Final = 0.03
METER_NOISE_SD: Final = 0.01


def plant_rng(seed: int, plant_id: str) -> np.random.Generator:
    """A generator per plant, independent of which other plants are in the run."""
    return np.random.default_rng([seed, zlib.crc32(plant_id.encode())])


@dataclass(slots=True)
class _MeterClock:
    meter: MeterConfig
    period_ms: int
    next_ms: int
    register: float = 0.0


class PlantSimulator:
    def __init__(self, plant: PlantConfig, seed: int, start_ms: int) -> None:
        self.plant = plant
        self._rng = plant_rng(seed, plant.id)
        self._zone = ZoneInfo(plant.timezone)
        self._meters = [
            _MeterClock(
                m, round(m.sample_period_s * 1000), start_ms + round(m.sample_period_s * 1000)
            )
            for m in plant.meters
        ]
        for clock in self._meters:
            if clock.meter.reading is ReadingKind.COUNTER:
                # Start registers part-way so rollover shows up in long runs.
                ceiling = clock.meter.counter_rollover or 1e9
                clock.register = float(self._rng.uniform(0.0, 0.5)) * ceiling

    def next_due_ms(self) -> int:
        return min(clock.next_ms for clock in self._meters)

    def production_level(self, ts_ms: int) -> float:
        hour = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(self._zone).hour
        level = BASE_LOAD + DAILY_SWING * math.cos(2 * math.pi * (hour - 14) / 24)
        level += float(self._rng.normal(0.0, PRODUCTION_NOISE_SD))
        return min(1.0, max(0.0, level))

    def due_samples(self, now_ms: int) -> list[tuple[MeterConfig, Sample]]:
        """Every sample whose time has come, oldest first, advancing each meter's clock."""
        due: list[tuple[MeterConfig, Sample]] = []
        for clock in self._meters:
            while clock.next_ms <= now_ms:
                due.append((clock.meter, self._sample(clock, clock.next_ms)))
                clock.next_ms += clock.period_ms
        due.sort(key=lambda pair: pair[1].ts_ms)
        return due

    def _sample(self, clock: _MeterClock, ts_ms: int) -> Sample:
        meter = clock.meter
        hours = clock.period_ms / 3_600_000
        noise = 1.0 + float(self._rng.normal(0.0, METER_NOISE_SD))
        amount = max(0.0, meter.nominal_per_hour * self.production_level(ts_ms) * hours * noise)
        if meter.reading is ReadingKind.INTERVAL:
            return Sample(ts_ms, round(amount, 6), duration_ms=clock.period_ms)
        clock.register += amount
        if meter.counter_rollover is not None and clock.register >= meter.counter_rollover:
            clock.register -= meter.counter_rollover
        return Sample(ts_ms, round(clock.register, 6))
