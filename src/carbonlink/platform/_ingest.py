"""Platform-side checks and emission computation for agent telemetry.

The platform is the authority on emissions: whatever the agent computed locally, the
stored CO2e comes from the factor set assigned to the plant here, tagged with its name
and version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from carbonlink import wire
from carbonlink._exceptions import CarbonlinkError, RejectedReading
from carbonlink.config import MeterConfig, PlantConfig, Settings
from carbonlink.emissions import EmissionResult, FactorLibrary, FactorSet, ResolvedFactor
from carbonlink.platform.storage import Emission, StoredReading
from carbonlink.wire import Reason


@dataclass(frozen=True, slots=True)
class IngestResult:
    plant: str
    agent: str | None
    seq: int | None
    stored: tuple[StoredReading, ...]
    rejected: tuple[RejectedReading, ...]


@dataclass(frozen=True, slots=True)
class _MeterFactor:
    meter: MeterConfig
    factor: ResolvedFactor | None  # None: an output-only meter, no emissions
    source: str = ""  # fuel | electricity | heat | process


class Ingestor:
    def __init__(self, plants: dict[str, PlantConfig], factor_sets_dir: Path) -> None:
        self._library = FactorLibrary.builtin()
        self._factor_sets: dict[str, FactorSet] = {}
        self._meters: dict[tuple[str, str], _MeterFactor] = {}
        self._plants = plants
        for plant in plants.values():
            factor_set = self._factor_set(factor_sets_dir, plant.factor_set)
            for meter in plant.meters:
                if meter.activity is None:
                    self._meters[plant.id, meter.id] = _MeterFactor(meter, None)
                    continue
                factor = factor_set.resolve(
                    self._library, meter.activity, meter.unit, region=plant.grid_region
                )
                source = str(self._library.kind_of(meter.activity))
                self._meters[plant.id, meter.id] = _MeterFactor(meter, factor, source)

    @classmethod
    def from_settings(cls, settings: Settings) -> Ingestor:
        return cls(settings.plants, settings.factor_sets_dir)

    def _factor_set(self, directory: Path, name: str) -> FactorSet:
        if name not in self._factor_sets:
            self._factor_sets[name] = FactorSet.load(directory / f"{name}.yaml")
        return self._factor_sets[name]

    def factor_set_of(self, plant: str) -> FactorSet:
        return self._factor_sets[self._plants[plant].factor_set]

    def ingest(self, topic: str, payload: bytes) -> IngestResult:
        """Never raises for bad input: every refusal comes back with its reason."""
        try:
            batch = wire.decode_telemetry(topic, payload)
        except RejectedReading as exc:
            return IngestResult(_plant_from_topic(topic), None, None, (), (exc,))
        plant = self._plants.get(batch.plant)
        if plant is None:
            error = RejectedReading(Reason.UNKNOWN_PLANT, f"no plant {batch.plant!r} configured")
            return IngestResult(batch.plant, batch.agent, batch.seq, (), (error,))
        factor_set = self.factor_set_of(plant.id)
        stored: list[StoredReading] = []
        rejected = list(batch.rejected)
        for reading in batch.readings:
            try:
                stored.append(self._store_form(plant.id, factor_set, reading))
            except RejectedReading as exc:
                rejected.append(exc)
        return IngestResult(plant.id, batch.agent, batch.seq, tuple(stored), tuple(rejected))

    def _store_form(
        self, plant: str, factor_set: FactorSet, reading: wire.Reading
    ) -> StoredReading:
        entry = self._meters.get((plant, reading.meter))
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
        emission = None
        if entry.factor is not None:
            try:
                result = entry.factor.apply(reading.value)
            except CarbonlinkError as exc:  # a factor problem must not take the batch down
                raise RejectedReading(Reason.WRONG_UNIT, str(exc), meter=reading.meter) from exc
            emission = emission_record(result, factor_set, entry.source)
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


def emission_record(result: EmissionResult, factor_set: FactorSet, source: str) -> Emission:
    """What is stored of one computed emission: the figures and their provenance."""
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
    )


def _plant_from_topic(topic: str) -> str:
    try:
        return wire.parse_topic(topic)[0]
    except RejectedReading:
        return "?"
