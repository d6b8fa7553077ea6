"""Platform-side checks and emission computation for agent telemetry.

The platform is the authority on emissions: whatever the agent computed locally, the
stored CO2e comes from the factor set assigned to the plant here, tagged with its name
and version.

The platform does not trust agents: it checks again what the agent checked (the agent
is the plant's own, the platform serves every plant), against each meter's configuration:
unit, sign, plausibility (the amount over the interval against the meter's rating, the
interval against the meter's longest), and time (within the wire's range, not ahead of the
platform's clock). Telemetry from another agent than the plant's is refused whole.

Two paths give the same result. A message whose every row is valid (nearly all of
them) is checked column by column with set and numpy operations, and its emissions are
one multiplication of the values by each meter's per-unit factors. A message with any
bad row takes the row-by-row path, which names each refusal; tests hold the two equal
to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from carbonlink import wire
from carbonlink.config import FactorLookup, MeterConfig, PlantConfig, Settings
from carbonlink.core.clock import wall_clock_ms
from carbonlink.emissions import EmissionResult, FactorLibrary, FactorSet, ResolvedFactor
from carbonlink.errors import CarbonlinkError, RejectedReading
from carbonlink.storage import (
    EMISSION_NUMBERS,
    Emission,
    EmissionTags,
    FloatMatrix,
    StoredBatch,
    StoredReading,
)
from carbonlink.wire import Reason

_INTEGER_TYPES = frozenset({int})
# Up to this many rows, emissions are computed in plain Python rather than numpy.
SMALL_MESSAGE_ROWS = 16
_NUMBER_TYPES = frozenset({int, float})
DEFAULT_MAX_SKEW_MS: Final = 300_000  # agent.max_clock_skew_s: how far ahead a reading may be


@dataclass(frozen=True, slots=True)
class IngestResult:
    plant: str
    agent: str | None
    seq: int | None
    batch: StoredBatch
    rejected: tuple[RejectedReading, ...]

    @property
    def stored(self) -> tuple[StoredReading, ...]:
        """The accepted readings one by one (the hot path keeps them as ``batch``)."""
        return tuple(self.batch.readings())

    @property
    def newest_ts_ms(self) -> int | None:
        return max(self.batch.ts_ms) if len(self.batch) else None


@dataclass(frozen=True, slots=True)
class _MeterFactor:
    meter: MeterConfig
    factor: ResolvedFactor | None  # None: an output-only meter, no emissions
    source: str = ""  # fuel | electricity | heat | process
    tags: EmissionTags | None = None


@dataclass(frozen=True, slots=True)
class _PlantTable:
    """A plant's meters, numbered, with their per-unit factors as one matrix."""

    plant: PlantConfig
    factor_set: FactorSet
    meters: dict[str, _MeterFactor]
    index: dict[str, int]
    per_unit: FloatMatrix  # row per meter, one column per EMISSION_NUMBERS; zero: none
    tags: tuple[EmissionTags | None, ...]
    # Amounts up to this give finite emissions with any factor of the plant (half the
    # float range, for rounding); larger ones take the row path, which refuses the few
    # that overflow.
    max_amount: float
    per_unit_rows: tuple[tuple[float, ...], ...]  # per_unit as Python floats
    # Per meter row: the most it can measure per ms (with the margin), its longest interval.
    ceiling_per_ms: FloatMatrix
    longest_ms: tuple[int, ...]


class Ingestor:
    def __init__(
        self,
        plants: dict[str, PlantConfig],
        factor_set: FactorLookup,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        self._library = FactorLibrary.builtin()
        self._factor_set = factor_set
        self._plants = plants
        self._tables: dict[str, _PlantTable] = {}
        self._now_ms = now_ms
        self._max_skew_ms = max_skew_ms
        for plant in plants.values():
            self._tables[plant.id] = self._table(plant)

    def _table(self, plant: PlantConfig) -> _PlantTable:
        factor_set = self._factor_set(plant.id)
        meters: dict[str, _MeterFactor] = {}
        per_unit = np.zeros((len(plant.meters), len(EMISSION_NUMBERS)))
        for row, meter in enumerate(plant.meters):
            if meter.activity is None:
                meters[meter.id] = _MeterFactor(meter, None)
                continue
            factor = factor_set.resolve(
                self._library, meter.activity, meter.unit, region=plant.grid_region
            )
            source = str(self._library.kind_of(meter.activity))
            tags = EmissionTags(
                factor.activity, source, factor.scope, factor.category, factor_set.name,
                factor_set.version, factor.gwp_set, factor.converted_unit,
            )  # fmt: skip
            meters[meter.id] = _MeterFactor(meter, factor, source, tags)
            # The same products ResolvedFactor.apply forms, in EMISSION_NUMBERS order.
            per_unit[row] = (
                factor.conversion, factor.co2_kg_per_unit, factor.ch4_kg_per_unit,
                factor.n2o_kg_per_unit, factor.co2e_kg_per_unit, factor.biogenic_co2_kg_per_unit,
                *uncertainty_per_unit(factor, meter.accuracy_pct),
            )  # fmt: skip
        return _PlantTable(
            plant,
            factor_set,
            meters,
            {meter.id: row for row, meter in enumerate(plant.meters)},
            per_unit,
            tuple(meters[m.id].tags for m in plant.meters),
            float(np.finfo(np.float64).max / max(1.0, float(per_unit.max())) / 2),
            tuple(tuple(row) for row in per_unit.tolist()),
            np.array([m.ceiling_per_ms for m in plant.meters], dtype=np.float64),
            tuple(m.longest_interval_ms for m in plant.meters),
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, now_ms: Callable[[], int] = wall_clock_ms
    ) -> Ingestor:
        return cls(
            settings.plants,
            settings.factor_set,
            now_ms=now_ms,
            max_skew_ms=round(settings.services.agent.max_clock_skew_s * 1000),
        )

    def plant(self, plant_id: str) -> PlantConfig | None:
        return self._plants.get(plant_id)

    def longest_interval_ms(self, plant_id: str, meter_id: str) -> int:
        """The longest interval a reading of this meter may cover (wire bound if unknown)."""
        meter = self._plants[plant_id].meter(meter_id) if plant_id in self._plants else None
        return meter.longest_interval_ms if meter is not None else wire.MAX_INTERVAL_MS

    def factor_set_of(self, plant: str) -> FactorSet:
        return self._tables[plant].factor_set

    def ingest(
        self, topic: str, payload: bytes, *, columnar: bool = True, now_ms: int | None = None
    ) -> IngestResult:
        """Never raises for bad input: every refusal comes back with its reason.

        ``now_ms``: the platform's clock (no reading may be ahead of it by more than the
        allowed skew); the ingestor's own clock when not given. ``columnar=False`` forces
        the row-by-row reference path (for tests and tools).
        """
        try:
            message = wire.decode_telemetry_columns(topic, payload)
        except RejectedReading as exc:
            return IngestResult(_plant_from_topic(topic), None, None, StoredBatch.empty(), (exc,))
        table = self._tables.get(message.plant)
        if table is None:
            error = RejectedReading(Reason.UNKNOWN_PLANT, f"no plant {message.plant!r} configured")
            return IngestResult(message.plant, None, None, StoredBatch.empty(), (error,))
        expected = wire.agent_id(message.plant)
        if message.agent != expected:
            error = RejectedReading(
                Reason.UNKNOWN_AGENT,
                f"telemetry of {message.plant!r} comes from its agent {expected!r}, "
                f"not {wire.shown(message.agent)}",
            )
            return IngestResult(message.plant, None, None, StoredBatch.empty(), (error,))
        newest_allowed = (self._now_ms() if now_ms is None else now_ms) + self._max_skew_ms
        batch = self._columns(table, message.columns, newest_allowed) if columnar else None
        if batch is not None:
            return IngestResult(message.plant, message.agent, message.seq, batch, ())
        return self._rows(table, message, newest_allowed)

    def _columns(
        self, table: _PlantTable, columns: dict[str, list[Any]], newest_allowed: int
    ) -> StoredBatch | None:
        """The batch if every row passes; None if any would be refused (or is odd)."""
        meters, ts, values = columns["meter"], columns["ts"], columns["value"]
        units, durations, qualities = columns["unit"], columns["dur_ms"], columns["q"]
        try:
            pairs = set(zip(meters, units, strict=True))
            quality_set = set(qualities)
        except TypeError:  # an unhashable item, a list say: the row path names it
            return None
        for meter, unit in pairs:
            entry = table.meters.get(meter) if isinstance(meter, str) else None
            if entry is None or not isinstance(unit, str) or unit != entry.meter.unit:
                return None
        if not quality_set <= wire.QUALITIES:
            return None
        # type() is exact where isinstance is not: a JSON true is an int to isinstance.
        if not {type(t) for t in ts} <= _INTEGER_TYPES:
            return None
        if not {type(d) for d in durations} <= _INTEGER_TYPES:
            return None
        if not {type(v) for v in values} <= _NUMBER_TYPES:
            return None
        if ts and (
            min(ts) < wire.MIN_EPOCH_MS
            or max(ts) >= wire.MAX_EPOCH_MS
            or max(ts) > newest_allowed
            or min(durations) < wire.MIN_INTERVAL_MS
        ):
            return None
        rows = [table.index[m] for m in meters]
        longest = table.longest_ms
        if any(d > longest[r] for d, r in zip(durations, rows, strict=True)):
            return None
        if len(rows) <= SMALL_MESSAGE_ROWS:
            # numpy's fixed cost per call outweighs its speed on a handful of rows; the
            # products are the same IEEE multiplications either way.
            try:
                floats = [float(v) for v in values]
            except OverflowError:
                return None
            if not all(0 <= v <= table.max_amount for v in floats):  # NaN fails too
                return None
            ceilings = table.ceiling_per_ms
            if not all(
                v <= ceilings[r] * d for v, r, d in zip(floats, rows, durations, strict=True)
            ):
                return None
            per_unit = table.per_unit_rows
            numbers = np.array(
                [[v * f for f in per_unit[r]] for v, r in zip(floats, rows, strict=True)],
                dtype=np.float64,
            ).reshape(len(rows), len(EMISSION_NUMBERS))
        else:
            try:
                amounts = np.array(values, dtype=np.float64)
            except OverflowError:
                return None
            # NaN fails both comparisons; the upper bound keeps every product finite.
            if not (amounts.min() >= 0 and amounts.max() <= table.max_amount):
                return None
            ceilings = table.ceiling_per_ms[rows] * np.array(durations, dtype=np.float64)
            if not bool((amounts <= ceilings).all()):
                return None
            numbers = amounts[:, np.newaxis] * table.per_unit[rows]
            floats = amounts.tolist()
        return StoredBatch(
            plant=[table.plant.id] * len(rows),
            meter=meters,
            ts_ms=ts,
            value=floats,
            unit=units,
            duration_ms=durations,
            quality=qualities,
            tags=[table.tags[r] for r in rows],
            numbers=numbers,
        )

    def _rows(
        self, table: _PlantTable, message: wire.TelemetryColumns, newest_allowed: int
    ) -> IngestResult:
        """The reference path: each row decoded, checked and computed on its own."""
        readings, rejected_rows = wire.telemetry_readings(message.columns)
        stored: list[StoredReading] = []
        rejected = list(rejected_rows)
        for reading in readings:
            try:
                stored.append(self._store_form(table, reading, newest_allowed))
            except RejectedReading as exc:
                rejected.append(exc.with_traceback(None))  # keep no frames alive
        return IngestResult(
            table.plant.id,
            message.agent,
            message.seq,
            StoredBatch.from_readings(stored),
            tuple(rejected),
        )

    def _store_form(
        self, table: _PlantTable, reading: wire.Reading, newest_allowed: int
    ) -> StoredReading:
        plant = table.plant.id
        entry = table.meters.get(reading.meter)
        if entry is None:
            raise RejectedReading(
                Reason.UNKNOWN_METER, f"plant {plant!r} has no meter {reading.meter!r}",
                meter=reading.meter,
            )  # fmt: skip
        if reading.unit != entry.meter.unit:
            raise RejectedReading(
                Reason.WRONG_UNIT,
                f"meter {reading.meter!r} reports {entry.meter.unit!r}, got {reading.unit!r}",
                meter=reading.meter,
            )
        if reading.value < 0:
            raise RejectedReading(
                Reason.NEGATIVE, f"value {reading.value} < 0", meter=reading.meter
            )
        if reading.ts_ms > newest_allowed:
            ahead = (reading.ts_ms - newest_allowed + self._max_skew_ms) / 1000
            raise RejectedReading(
                Reason.CLOCK_SKEW,
                f"timestamp {ahead:.0f} s ahead of the platform's clock",
                meter=reading.meter,
            )
        problem = entry.meter.plausibility(reading.value, reading.duration_ms)
        if problem is not None:
            raise RejectedReading(Reason.IMPLAUSIBLE, problem, meter=reading.meter)
        emission = None
        if entry.factor is not None:
            try:
                result = entry.factor.apply(reading.value)
            except CarbonlinkError as exc:  # a factor problem must not take the batch down
                raise RejectedReading(Reason.WRONG_UNIT, str(exc), meter=reading.meter) from exc
            emission = emission_record(
                result, table.factor_set, entry.source, entry.factor, entry.meter.accuracy_pct
            )
            if not all(math.isfinite(getattr(emission, f)) for f in EMISSION_NUMBERS):
                # A finite amount whose emissions overflow: InfluxDB would refuse the
                # whole write for it, and with it every good reading of the batch.
                raise RejectedReading(
                    Reason.NOT_FINITE,
                    f"value {reading.value} gives non-finite emissions",
                    meter=reading.meter,
                )
        return StoredReading(
            plant,
            reading.meter,
            reading.ts_ms,
            reading.value,
            reading.unit,
            reading.duration_ms,
            reading.quality,
            emission,
        )


def uncertainty_per_unit(factor: ResolvedFactor, accuracy_pct: float) -> tuple[float, float, float]:
    """Half-widths of the 95% interval of CO2e per metered unit: from the factor (lower and
    upper side, the published ranges) and from the meter (its accuracy, % of reading)."""
    low, high = factor.co2e_factor_u95_per_unit
    return low, high, abs(factor.co2e_kg_per_unit) * accuracy_pct / 100.0


def emission_record(
    result: EmissionResult,
    factor_set: FactorSet,
    source: str,
    factor: ResolvedFactor,
    accuracy_pct: float,
) -> Emission:
    """What is stored of one computed emission: the figures, their 95% half-widths and
    their provenance."""
    low, high, meter = uncertainty_per_unit(factor, accuracy_pct)
    amount = abs(result.amount)
    return Emission(
        activity=result.activity,
        source=source,
        scope=result.scope,
        category=result.category,
        factor_set=factor_set.name,
        factor_version=factor_set.version,
        gwp=result.gwp_set,
        converted_amount=result.converted_amount,
        converted_unit=result.converted_unit,
        co2_kg=result.co2_kg,
        ch4_kg=result.ch4_kg,
        n2o_kg=result.n2o_kg,
        co2e_kg=result.co2e_kg,
        biogenic_co2_kg=result.biogenic_co2_kg,
        u95_factor_lower_kg=amount * low,
        u95_factor_upper_kg=amount * high,
        u95_meter_kg=amount * meter,
    )


def _plant_from_topic(topic: str) -> str:
    try:
        return wire.parse_topic(topic)[0]
    except RejectedReading:
        return "?"
