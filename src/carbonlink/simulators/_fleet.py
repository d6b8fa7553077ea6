"""Every meter of every plant in a run as flat numpy arrays, advanced one tick at a time.

A tick is one simulated instant at which at least one meter is due. All due meters of
all plants are computed together, so the cost per tick is a few numpy operations
whatever the number of meters. Randomness stays per plant: each plant draws its normals
in blocks from its own generator (seed + plant id) and consumes one row per tick at
which it has a due meter, so a plant's stream never depends on the other plants.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from carbonlink.abatement import x_at
from carbonlink.config import MeterConfig, PlantConfig, ReadingKind
from carbonlink.emissions import ResolvedFactor
from carbonlink.errors import ConfigError
from carbonlink.simulators._models import (
    MS_PER_HOUR,
    FloatArray,
    digital_multiplier,
    ramp_towards,
    shift_target,
)

IntArray = npt.NDArray[np.int64]

NOISE_BLOCK_ROWS: Final = 1024  # normals drawn per plant per refill
TZ_REFRESH_MS: Final = MS_PER_HOUR  # UTC offsets (DST) are re-read once a simulated hour
VALUE_DECIMALS: Final = 6

EmissionFactor = Callable[[PlantConfig, MeterConfig], ResolvedFactor]
"""kg CO2e per metered unit of a meter's activity."""


def plant_rng(seed: int, plant_id: str) -> np.random.Generator:
    """A generator per plant, independent of which other plants are in the run."""
    return np.random.default_rng([seed, zlib.crc32(plant_id.encode())])


@dataclass(frozen=True, slots=True)
class Tick:
    """The samples of one simulated instant: ``values[i]`` belongs to meter ``meters[i]``;
    ``amounts[i]`` is what it measured over its interval (a counter shows its register
    in ``values``, the amount added to it here)."""

    ts_ms: int
    meters: IntArray
    values: FloatArray
    amounts: FloatArray


class InflowChange(NamedTuple):
    """A plant's abatement inflow as the fleet applied it: from ``at_ms`` on."""

    plant: str
    at_ms: int
    inflow: float


class Fleet:
    """Vectorised state of all plants and meters of a run."""

    def __init__(
        self,
        plants: Sequence[PlantConfig],
        seed: int,
        start_ms: int,
        emission_factor: EmissionFactor,
    ) -> None:
        self.plants = tuple(plants)
        self.meter_refs: list[tuple[PlantConfig, MeterConfig]] = [
            (p, m) for p in self.plants for m in p.meters
        ]
        n_plants = len(self.plants)
        self._rngs = [plant_rng(seed, p.id) for p in self.plants]
        meters = [m for _, m in self.meter_refs]
        self.plant_of: IntArray = np.array(
            [i for i, p in enumerate(self.plants) for _ in p.meters], dtype=np.int64
        )
        # Column of each meter in its plant's noise block; column 0 drives output noise.
        self._noise_col = np.array(
            [j + 1 for p in self.plants for j in range(len(p.meters))], dtype=np.int64
        )
        self._blocks = [np.empty((0, len(p.meters) + 1)) for p in self.plants]
        self._cursor = np.full(n_plants, NOISE_BLOCK_ROWS, dtype=np.int64)
        self.period_ms: IntArray = np.array(
            [round(m.sample_period_s * 1000) for m in meters], dtype=np.int64
        )
        self.next_ms: IntArray = start_ms + self.period_ms
        self.nominal = np.array([m.nominal_per_hour for m in meters])
        self.base_load = np.array([0.0 if m.output else m.base_load for m in meters])
        self.noise_sd = np.array([m.noise_sd for m in meters])
        self.is_counter = np.array([m.reading is ReadingKind.COUNTER for m in meters])
        self.rollover = np.array([m.counter_rollover or math.inf for m in meters])
        self.is_output = np.array([m.output for m in meters])
        self.register = np.zeros(len(meters))
        for index, (plant_index, meter) in enumerate(zip(self.plant_of, meters, strict=True)):
            if meter.reading is ReadingKind.COUNTER:
                # Registers start part-way so rollovers show up in long runs.
                ceiling = meter.counter_rollover or 1e9
                self.register[index] = self._rngs[plant_index].uniform(0.0, 0.5) * ceiling
        # Digital adoption scales energy meters; output meters measure product, not energy.
        self.digital = np.array(
            [
                1.0
                if m.output
                else float(digital_multiplier(p.simulation.digital.adoption, p.simulation.digital))
                for p, m in self.meter_refs
            ]
        )
        self._abatement_kg_per_x_unit = self._abatement_coefficients(emission_factor)
        self.max_reduction = np.array(
            [p.simulation.abatement.max_reduction for p, _ in self.meter_refs]
        )
        shifts = [p.simulation.shift for p in self.plants]
        self._shift = {
            "start_hour": np.array([s.start_hour for s in shifts]),
            "hours": np.array([s.hours for s in shifts]),
            "level": np.array([s.level for s in shifts]),
            "idle_level": np.array([s.idle_level for s in shifts]),
            "weekend_level": np.array(
                [math.nan if s.weekend_level is None else s.weekend_level for s in shifts]
            ),
            "daily_swing": np.array([s.daily_swing for s in shifts]),
            "seasonal_swing": np.array([s.seasonal_swing for s in shifts]),
            "seasonal_peak_day": np.array([float(s.seasonal_peak_day) for s in shifts]),
        }
        self._ramp_h = np.array([s.ramp_hours for s in shifts])
        self._noise_tau_h = np.array([s.noise_hours for s in shifts])
        self._noise_sd = np.array([s.noise_sd for s in shifts])
        abate = [p.simulation.abatement for p in self.plants]
        self._delta = np.array([a.delta for a in abate])
        self._period_ms = np.array([a.period_s * 1000 for a in abate])
        self.x = np.zeros(n_plants)
        self.inflow = np.zeros(n_plants)
        self._pending_inflow: dict[int, list[tuple[int, float]]] = {}
        #: Every inflow change as applied, in order: replaying them (``set_inflow``) on a
        #: fleet of the same plants, seed and start reproduces this run's samples.
        self.applied: list[InflowChange] = []
        self._zones = [ZoneInfo(p.timezone) for p in self.plants]
        self._offset_ms = np.zeros(n_plants, dtype=np.int64)
        self._offset_until = -1
        self._last_ms = np.full(n_plants, start_ms, dtype=np.int64)
        self._refresh_offsets(start_ms)
        self.level = shift_target(start_ms + self._offset_ms, **self._shift)
        self.output_noise = np.zeros(n_plants)

    # --- inputs ---------------------------------------------------------------------

    def set_inflow(self, plant_index: int, effective_ms: int, inflow: float) -> None:
        """From ``effective_ms`` on, X of this plant grows with ``inflow`` per period."""
        pending = self._pending_inflow.setdefault(plant_index, [])
        pending.append((effective_ms, inflow))
        pending.sort()

    def reset_register(self, meter_index: int) -> None:
        """A counter reset fault: the register really restarts at zero."""
        self.register[meter_index] = 0.0

    def next_due_ms(self) -> int:
        return int(self.next_ms.min())

    # --- advancing ------------------------------------------------------------------

    def advance(self, until_ms: int) -> list[Tick]:
        """Every tick up to and including ``until_ms``, oldest first."""
        ticks: list[Tick] = []
        while True:
            ts = int(self.next_ms.min())
            if ts > until_ms:
                return ticks
            ticks.append(self.step())

    def step(self) -> Tick:
        """Produce the next tick: all meters due at the earliest due time."""
        ts = int(self.next_ms.min())
        due = np.flatnonzero(self.next_ms == ts)
        active = np.zeros(len(self.plants), dtype=bool)
        active[self.plant_of[due]] = True
        rows = self._noise_rows(active)
        self._update_plants(ts, active, rows)
        plants = self.plant_of[due]
        noise = rows[plants, self._noise_col[due]]
        hours = self.period_ms[due] / MS_PER_HOUR
        production = self.level[plants] * (1.0 + self.output_noise[plants])
        production = np.clip(production, 0.0, 1.0)
        base = self.base_load[due]
        gross = (
            self.nominal[due]
            * (base + (1.0 - base) * production)
            * self.digital[due]
            * hours
            * (1.0 + self.noise_sd[due] * noise)
        )
        gross = np.maximum(gross, 0.0)
        reduction = self.x[plants] * self._abatement_kg_per_x_unit[due] * hours
        # A switched-to fuel rises by at most the energy its source may give up.
        reduction = np.maximum(reduction, -self._switch_cap_per_hour[due] * hours)
        amount = gross - np.minimum(reduction, self.max_reduction[due] * gross)
        values = np.round(amount, VALUE_DECIMALS)
        amounts = values.copy()
        counters = self.is_counter[due]
        if counters.any():
            index = due[counters]
            register = self.register[index] + values[counters]
            rollover = self.rollover[index]
            register = np.where(register >= rollover, register - rollover, register)
            self.register[index] = register
            values[counters] = np.round(register, VALUE_DECIMALS)
        self.next_ms[due] += self.period_ms[due]
        return Tick(ts, due, values, amounts)

    def _noise_rows(self, active: npt.NDArray[np.bool_]) -> FloatArray:
        """One row of standard normals per plant (rows of inactive plants are unused)."""
        width = max(b.shape[1] for b in self._blocks) if self._blocks else 1
        exhausted = np.flatnonzero(active & (self._cursor >= NOISE_BLOCK_ROWS))
        for plant_index in exhausted:
            cols = len(self.plants[plant_index].meters) + 1
            self._blocks[plant_index] = self._rngs[plant_index].standard_normal(
                (NOISE_BLOCK_ROWS, cols)
            )
            self._cursor[plant_index] = 0
        rows = np.zeros((len(self.plants), width))
        for plant_index in np.flatnonzero(active):
            block = self._blocks[plant_index]
            rows[plant_index, : block.shape[1]] = block[self._cursor[plant_index]]
        self._cursor[active] += 1
        return rows

    def _update_plants(self, ts: int, active: npt.NDArray[np.bool_], rows: FloatArray) -> None:
        if ts >= self._offset_until:
            self._refresh_offsets(ts)
        dt_ms = np.where(active, ts - self._last_ms, 0)
        dt_h = dt_ms / MS_PER_HOUR
        target = shift_target(ts + self._offset_ms, **self._shift)
        self.level = np.where(
            active, ramp_towards(self.level, target, dt_h, self._ramp_h), self.level
        )
        # AR(1) (Ornstein-Uhlenbeck) output noise, exact for any step length.
        keep = np.exp(-dt_h / self._noise_tau_h)
        fresh = self._noise_sd * np.sqrt(1.0 - keep * keep) * rows[:, 0]
        self.output_noise = np.where(active, keep * self.output_noise + fresh, self.output_noise)
        if self._pending_inflow:
            self._apply_pending_inflow(ts, active)
        h = np.where(active, ts - self._last_ms, 0) / self._period_ms
        self.x = x_at(self.x, self.inflow, self._delta, h)
        self._last_ms = np.where(active, ts, self._last_ms)

    def _apply_pending_inflow(self, ts: int, active: npt.NDArray[np.bool_]) -> None:
        """Integrate X up to each directive's effective time, then switch the inflow."""
        for plant_index, pending in list(self._pending_inflow.items()):
            if not active[plant_index]:
                continue
            while pending and pending[0][0] <= ts:
                effective_ms, inflow = pending.pop(0)
                at = max(effective_ms, int(self._last_ms[plant_index]))
                h = (at - self._last_ms[plant_index]) / self._period_ms[plant_index]
                self.x[plant_index] = float(
                    x_at(self.x[plant_index], self.inflow[plant_index], self._delta[plant_index], h)
                )
                self._last_ms[plant_index] = at
                self.inflow[plant_index] = inflow
                self.applied.append(InflowChange(self.plants[plant_index].id, at, inflow))
            if not pending:
                del self._pending_inflow[plant_index]

    def _refresh_offsets(self, ts: int) -> None:
        moment = datetime.fromtimestamp(ts / 1000, UTC)
        cache: dict[str, int] = {}
        for index, zone in enumerate(self._zones):
            key = str(zone)
            if key not in cache:
                offset = moment.astimezone(zone).utcoffset()
                cache[key] = 0 if offset is None else round(offset.total_seconds() * 1000)
            self._offset_ms[index] = cache[key]
        self._offset_until = (ts // TZ_REFRESH_MS + 1) * TZ_REFRESH_MS

    def _abatement_coefficients(self, emission_factor: EmissionFactor) -> FloatArray:
        """Metered units per hour removed by one model unit of X, per meter.

        X (times ``scale``) is tCO2e per ``period_s``, delivered two ways. Efficiency:
        the plant's emitting energy meters burn less, shared by ``abatement_weight``
        (default: their nominal emissions, which gives every meter the same relative
        cut). Fuel switching (``fuel_switch.share`` of X): heat input moves from one
        fuel meter to a cleaner one, so the first falls and the second rises (a negative
        coefficient) by the same energy, chosen so the CO2e saved equals that share.
        """
        coefficients = np.zeros(len(self.meter_refs))
        self._switch_cap_per_hour = np.full(len(self.meter_refs), np.inf)
        for plant in self.plants:
            indices = {
                m.id: i
                for i, (p, m) in enumerate(self.meter_refs)
                if p is plant and m.activity is not None and not m.output
            }
            factors = {i: emission_factor(plant, self.meter_refs[i][1]) for i in indices.values()}
            abate = plant.simulation.abatement
            kg_per_hour = abate.tonnes(1.0, 3600.0) * 1000.0
            switch = abate.fuel_switch
            if switch is not None:
                source, target = (
                    factors[indices[switch.from_meter]],
                    factors[indices[switch.to_meter]],
                )
                saving_per_tj = (
                    source.co2e_kg_per_unit / source.conversion
                    - target.co2e_kg_per_unit / target.conversion
                )
                if saving_per_tj <= 0:
                    raise ConfigError(
                        None,
                        f"{plant.id}: simulation.abatement.fuel_switch",
                        f"{switch.to_meter!r} emits no less per TJ than {switch.from_meter!r}",
                    )
                energy_tj = switch.share * kg_per_hour / saving_per_tj
                coefficients[indices[switch.from_meter]] += energy_tj / source.conversion
                coefficients[indices[switch.to_meter]] -= energy_tj / target.conversion
                source_meter = self.meter_refs[indices[switch.from_meter]][1]
                movable_tj = abate.max_reduction * source_meter.nominal_per_hour * source.conversion
                self._switch_cap_per_hour[indices[switch.to_meter]] = movable_tj / target.conversion
                kg_per_hour *= 1.0 - switch.share
            weights: dict[int, float] = {}
            for i in indices.values():
                meter = self.meter_refs[i][1]
                weight = meter.abatement_weight
                co2e = factors[i].co2e_kg_per_unit
                weights[i] = meter.nominal_per_hour * co2e if weight is None else weight
            total = sum(weights.values())
            for i in indices.values():
                if total > 0 and factors[i].co2e_kg_per_unit > 0:
                    coefficients[i] += (
                        kg_per_hour * weights[i] / total / factors[i].co2e_kg_per_unit
                    )
        return coefficients
