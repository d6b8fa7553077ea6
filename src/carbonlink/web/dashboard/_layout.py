"""What each plant's charts show, fixed once from its config: traces never change live.

``Plotly.extendTraces`` appends to traces by index, so the set of traces (sources,
scopes, energy carriers) must be known before the first point arrives. It follows
from the plant's meters and factor set, resolved the same way the ingestor does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from carbonlink.config import PlantConfig, Settings
from carbonlink.emissions import FactorLibrary
from carbonlink.storage.windows import ENERGY_GJ_PER_UNIT

__all__ = ["SOURCE_ORDER", "PlantLayout", "plant_layouts"]

# Stacking order, bottom to top: the usual largest contributors first.
SOURCE_ORDER: Final = ("fuel", "process", "electricity", "heat")


@dataclass(frozen=True, slots=True)
class PlantLayout:
    plant: str
    name: str
    timezone: str
    sources: tuple[str, ...]
    scopes: tuple[int, ...]
    carriers: tuple[str, ...]  # energy activities (fuels, electricity, heat), by name
    output_unit: str | None
    period_ms: int  # the longest sample period among its meters
    factor_version: str = ""  # "set version": what every figure is counted under
    # Each carrier's source kind (fuel, electricity, heat): the energy chart colours a
    # carrier like its source on the CO2e chart, so electricity is one colour everywhere.
    carrier_sources: tuple[str, ...] = ()

    @property
    def grace_ms(self) -> int:
        """A window counts as complete once data this much newer has arrived.

        Meters report once per sample period; a late meter may still fill the last
        window until one more period of newer data has come in.
        """
        return 2 * self.period_ms

    def as_record(self) -> dict[str, object]:
        return {
            "plant": self.plant,
            "name": self.name,
            "timezone": self.timezone,
            "sources": list(self.sources),
            "scopes": list(self.scopes),
            "carriers": list(self.carriers),
            "carrier_sources": dict(zip(self.carriers, self.carrier_sources, strict=True)),
            "output_unit": self.output_unit,
            "factor_version": self.factor_version,
        }


def _layout(settings: Settings, plant: PlantConfig, library: FactorLibrary) -> PlantLayout:
    factor_set = settings.factor_set(plant.id)
    sources: set[str] = set()
    scopes: set[int] = set()
    carriers: list[str] = []
    carrier_sources: list[str] = []
    for meter in plant.meters:
        if meter.activity is None:
            continue
        factor = factor_set.resolve(library, meter.activity, meter.unit, region=plant.grid_region)
        kind = str(library.kind_of(meter.activity))
        sources.add(kind)
        scopes.add(factor.scope)
        if factor.converted_unit in ENERGY_GJ_PER_UNIT and factor.activity not in carriers:
            carriers.append(factor.activity)
            carrier_sources.append(kind)
    output_units = {m.unit for m in plant.meters if m.output}
    return PlantLayout(
        plant=plant.id,
        name=plant.name,
        timezone=plant.timezone,
        sources=tuple(s for s in SOURCE_ORDER if s in sources),
        scopes=tuple(sorted(scopes)),
        carriers=tuple(carriers),
        carrier_sources=tuple(carrier_sources),
        output_unit=output_units.pop() if len(output_units) == 1 else None,
        period_ms=round(max(m.sample_period_s for m in plant.meters) * 1000),
        factor_version=factor_set.label,
    )


def plant_layouts(settings: Settings) -> dict[str, PlantLayout]:
    library = FactorLibrary.builtin()
    return {p: _layout(settings, config, library) for p, config in settings.plants.items()}
