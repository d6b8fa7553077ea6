"""The factor library: finds the factors for an activity and folds in unit conversion."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from carbonlink._exceptions import FactorLookupError, UnitError, UnknownActivityError
from carbonlink.emissions._data import (
    SECTORS,
    FuelData,
    GridEntry,
    GwpSet,
    HeatData,
    LibraryData,
    ProcessData,
    Sector,
    SourceRef,
    load_data,
)
from carbonlink.emissions._result import (
    DataQuality,
    EmissionResult,
    ResolvedFactor,
    combine_relative,
)
from carbonlink.emissions._units import Dimension, conversion_factor, describe, dimension_of

ActivityKind = Literal["fuel", "electricity", "heat", "process"]

ELECTRICITY = "electricity"
FUEL_UNIT = "TJ"
ELECTRICITY_UNIT = "kWh"
HEAT_UNIT = "GJ"
PROCESS_UNIT = "t"
DEFAULT_GWP = "AR5"
DEFAULT_SECTOR: Sector = "manufacturing"
DEFAULT_QUALITY: DataQuality = "default"
KG_PER_T = 1000.0

_SECTOR_CATEGORY: dict[Sector, str] = {"manufacturing": "1.A.2", "energy": "1.A.1"}
_ELECTRICITY_CATEGORY = "scope2:electricity"
_HEAT_CATEGORY = "scope2:heat"
_SCOPE_DIRECT = 1
_SCOPE_INDIRECT = 2
# Many (activity, unit, gwp, region, year, sector) combinations exist per plant fleet,
# but far fewer than this; the cache keeps the hot path free of pint and YAML.
_RESOLVE_CACHE_SIZE = 4096


@dataclass(frozen=True)
class ActivityInfo:
    """One activity the library can compute."""

    id: str
    kind: ActivityKind
    unit: str
    description: str
    source: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Gases:
    """kg per converted unit, with the GWP-relevant facts, before folding in the unit."""

    co2: float
    ch4: float
    n2o: float
    biogenic_co2: float
    ch4_gwp: float
    co2e_fixed: float | None = None  # set when the source gives CO2e only


def _cite(*sources: SourceRef) -> str:
    seen: list[str] = []
    for source in sources:
        if source.cite() not in seen:
            seen.append(source.cite())
    return "; ".join(seen)


class FactorLibrary:
    """Emission factors with their sources; build with :meth:`builtin` or :meth:`load`."""

    def __init__(self, data: LibraryData) -> None:
        self._data = data
        self._aliases: dict[str, str] = {}
        for heat in data.heat.values():
            for alias in heat.aliases:
                self._aliases[alias] = heat.id
        self._regions = {region.lower(): region for region in data.grid}
        self._resolve_cached = functools.lru_cache(maxsize=_RESOLVE_CACHE_SIZE)(
            self._resolve_uncached
        )

    @classmethod
    def builtin(cls) -> FactorLibrary:
        """The library shipped in the package, loaded once per process."""
        return _builtin_library()

    @classmethod
    def load(cls, directory: str | Path) -> FactorLibrary:
        """A library from a folder holding the same data files as the package."""
        path = Path(directory)
        return cls(load_data(path, str(path)))

    # ------------------------------------------------------------------ catalogue

    def activities(self) -> list[ActivityInfo]:
        """Every activity id, grouped by kind."""
        data = self._data
        out = [
            ActivityInfo(f.id, "fuel", FUEL_UNIT, f.description, _cite(f.ncv.source, f.co2.source))
            for f in data.fuels.values()
        ]
        grid_sources = sorted(
            {e.source.document for r in data.grid.values() for e in r.entries.values()}
        )
        out.append(
            ActivityInfo(
                ELECTRICITY,
                "electricity",
                ELECTRICITY_UNIT,
                f"Grid electricity, location-based; regions: {', '.join(self.regions())}",
                "; ".join(grid_sources),
            )
        )
        out.extend(
            ActivityInfo(h.id, "heat", HEAT_UNIT, h.description, h.source.cite(), h.aliases)
            for h in data.heat.values()
        )
        out.extend(
            ActivityInfo(p.id, "process", PROCESS_UNIT, p.description, p.co2.source.cite())
            for p in data.processes.values()
        )
        return out

    def activity_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.activities())

    def regions(self) -> list[str]:
        """Grid regions with electricity factors."""
        return list(self._data.grid)

    def grid_years(self, region: str) -> list[int]:
        """Data years available for a grid region, oldest first."""
        return sorted(self._data.grid[self._region_id(region)].entries)

    def gwp_sets(self) -> list[str]:
        return list(self._data.gwp)

    def kind_of(self, activity: str) -> ActivityKind:
        """The kind of an activity id (or alias); raises UnknownActivityError."""
        name = self._canonical(activity)
        if name in self._data.fuels:
            return "fuel"
        if name == ELECTRICITY:
            return "electricity"
        if name in self._data.heat:
            return "heat"
        return "process"

    def canonical_unit(self, activity: str) -> str:
        return {
            "fuel": FUEL_UNIT,
            "electricity": ELECTRICITY_UNIT,
            "heat": HEAT_UNIT,
            "process": PROCESS_UNIT,
        }[self.kind_of(activity)]

    # ------------------------------------------------------------------ computation

    def resolve(
        self,
        activity: str,
        unit: str,
        *,
        gwp: str = DEFAULT_GWP,
        region: str | None = None,
        year: int | None = None,
        sector: str = DEFAULT_SECTOR,
    ) -> ResolvedFactor:
        """Per-metered-unit factors; cached, so calling it per reading is cheap."""
        return self._resolve_cached(activity, unit, gwp, region, year, sector)

    def compute(
        self,
        activity: str,
        amount: float,
        unit: str,
        *,
        gwp: str = DEFAULT_GWP,
        region: str | None = None,
        year: int | None = None,
        sector: str = DEFAULT_SECTOR,
    ) -> EmissionResult:
        """Emissions for ``amount`` ``unit`` of ``activity``."""
        factor = self.resolve(activity, unit, gwp=gwp, region=region, year=year, sector=sector)
        return factor.apply(amount)

    # ------------------------------------------------------------------ internals

    def _canonical(self, activity: str) -> str:
        name = self._aliases.get(activity, activity)
        data = self._data
        if name in data.fuels or name in data.heat or name in data.processes or name == ELECTRICITY:
            return name
        raise UnknownActivityError(activity, self.activity_ids())

    def _region_id(self, region: str) -> str:
        try:
            return self._regions[region.lower()]
        except KeyError:
            known = ", ".join(self.regions())
            raise FactorLookupError(
                ELECTRICITY, f"no grid factors for region {region!r}; known regions: {known}"
            ) from None

    def _gwp(self, activity: str, name: str) -> GwpSet:
        try:
            return self._data.gwp[name]
        except KeyError:
            raise FactorLookupError(
                activity, f"unknown GWP set {name!r}; known: {', '.join(self._data.gwp)}"
            ) from None

    def _resolve_uncached(
        self,
        activity: str,
        unit: str,
        gwp: str,
        region: str | None,
        year: int | None,
        sector: str,
    ) -> ResolvedFactor:
        name = self._canonical(activity)
        gwp_set = self._gwp(name, gwp)
        if sector not in SECTORS:
            raise FactorLookupError(name, f"unknown sector {sector!r}; known: {', '.join(SECTORS)}")
        sector_name: Sector = "energy" if sector == "energy" else "manufacturing"
        data = self._data
        if name in data.fuels:
            return self._fuel(data.fuels[name], unit, gwp_set, sector_name)
        if name == ELECTRICITY:
            return self._electricity(unit, gwp_set, region, year)
        if name in data.heat:
            return self._heat(data.heat[name], unit, gwp_set)
        return self._process(data.processes[name], unit, gwp_set)

    def _fuel(self, fuel: FuelData, unit: str, gwp: GwpSet, sector: Sector) -> ResolvedFactor:
        conversion, ncv_used, density_note = _fuel_conversion(fuel, unit)
        ch4, n2o = fuel.ch4[sector], fuel.n2o[sector]
        co2_range = combine_relative(
            fuel.ncv.relative_bounds() if ncv_used else None, fuel.co2.relative_bounds()
        )
        sources = [fuel.ncv.source] if ncv_used else []
        citation = _cite(*sources, fuel.co2.source, ch4.source, n2o.source) + density_note
        gases = _Gases(
            co2=0.0 if fuel.biogenic else fuel.co2.value,
            ch4=ch4.value,
            n2o=n2o.value,
            biogenic_co2=fuel.co2.value if fuel.biogenic else 0.0,
            # Biomass CH4 carbon came from the atmosphere recently: non-fossil GWP.
            ch4_gwp=gwp.ch4_non_fossil if fuel.biogenic else gwp.ch4_fossil,
        )
        return _build(
            activity=fuel.id,
            unit=unit,
            converted_unit=FUEL_UNIT,
            conversion=conversion,
            gases=gases,
            gwp=gwp,
            co2_range=None if fuel.biogenic else co2_range,
            scope=_SCOPE_DIRECT,
            category=_SECTOR_CATEGORY[sector],
            source=citation,
            version=fuel.co2.source.version,
            year=fuel.co2.source.year,
            region=None,
            basis="per_gas",
        )

    def _electricity(
        self, unit: str, gwp: GwpSet, region: str | None, year: int | None
    ) -> ResolvedFactor:
        if region is None:
            known = ", ".join(self.regions())
            raise FactorLookupError(
                ELECTRICITY, f"a grid region is required for electricity; known regions: {known}"
            )
        entry = self._grid_entry(self._region_id(region), year)
        conversion = _convert(ELECTRICITY, unit, ELECTRICITY_UNIT, Dimension.ENERGY)
        gases = _Gases(
            co2=entry.co2,
            ch4=entry.ch4,
            n2o=entry.n2o,
            biogenic_co2=0.0,
            # Grid CH4 comes mostly from fossil generation; the fossil value is the
            # conservative choice where a set distinguishes the two.
            ch4_gwp=gwp.ch4_fossil,
            co2e_fixed=entry.co2e,
        )
        return _build(
            activity=ELECTRICITY,
            unit=unit,
            converted_unit=ELECTRICITY_UNIT,
            conversion=conversion,
            gases=gases,
            gwp=gwp,
            co2_range=None,
            scope=_SCOPE_INDIRECT,
            category=_ELECTRICITY_CATEGORY,
            source=f"{entry.source.cite()} ({entry.published})",
            version=entry.source.version,
            year=entry.year,
            region=entry.region,
            basis=entry.basis,
        )

    def _grid_entry(self, region: str, year: int | None) -> GridEntry:
        entries = self._data.grid[region].entries
        years = sorted(entries)
        if year is None:
            return entries[years[-1]]
        usable = [y for y in years if y <= year]
        if not usable:
            raise FactorLookupError(
                ELECTRICITY,
                f"no grid factor for {region} in or before {year}; "
                f"available years: {', '.join(map(str, years))}",
            )
        return entries[usable[-1]]

    def _heat(self, heat: HeatData, unit: str, gwp: GwpSet) -> ResolvedFactor:
        conversion = _convert(heat.id, unit, HEAT_UNIT, Dimension.ENERGY)
        gases = _Gases(co2=heat.co2, ch4=0.0, n2o=0.0, biogenic_co2=0.0, ch4_gwp=gwp.ch4_fossil)
        return _build(
            activity=heat.id,
            unit=unit,
            converted_unit=HEAT_UNIT,
            conversion=conversion,
            gases=gases,
            gwp=gwp,
            co2_range=None,
            scope=_SCOPE_INDIRECT,
            category=_HEAT_CATEGORY,
            source=f"{heat.source.cite()} ({heat.published})",
            version=heat.source.version,
            year=heat.source.year,
            region=None,
            basis="co2_only",
        )

    def _process(self, process: ProcessData, unit: str, gwp: GwpSet) -> ResolvedFactor:
        conversion = _convert(process.id, unit, PROCESS_UNIT, Dimension.MASS)
        gases = _Gases(
            co2=process.co2.value, ch4=0.0, n2o=0.0, biogenic_co2=0.0, ch4_gwp=gwp.ch4_fossil
        )
        return _build(
            activity=process.id,
            unit=unit,
            converted_unit=PROCESS_UNIT,
            conversion=conversion,
            gases=gases,
            gwp=gwp,
            co2_range=process.co2.relative_bounds(),
            scope=_SCOPE_DIRECT,
            category=process.category,
            source=f"{process.co2.source.cite()} ({process.co2.published})",
            version=process.co2.source.version,
            year=process.co2.source.year,
            region=None,
            basis="co2_only",
        )


def _convert(activity: str, unit: str, target: str, expected: Dimension) -> float:
    found = dimension_of(unit)
    if found != expected:
        raise UnitError(
            unit,
            f"{activity} needs an amount of {expected.value} (convertible to {target}), "
            f"got {describe(unit)}",
        )
    return conversion_factor(unit, target)


def _fuel_conversion(fuel: FuelData, unit: str) -> tuple[float, bool, str]:
    """TJ per metered unit, whether the NCV was used, and a note on any density used."""
    found = dimension_of(unit)
    if found == Dimension.ENERGY:
        # Energy amounts are taken as already on a net calorific value basis.
        return conversion_factor(unit, FUEL_UNIT), False, ""
    if found == Dimension.MASS:
        return conversion_factor(unit, "t") * fuel.ncv.value, True, ""
    density = fuel.density
    if density is not None and found == density.dimension:
        tonnes = conversion_factor(unit, density.volume_unit) * density.kg_per_volume / KG_PER_T
        origin = (
            "assumption stated in the data file" if density.assumption else density.source.cite()
        )
        note = f"; density {density.published} ({origin})"
        return tonnes * fuel.ncv.value, True, note
    accepted = ["mass (t, kg)", "energy (TJ, GJ, MWh)"]
    if density is not None:
        accepted.append(
            "normal gas volume (Nm3)" if density.volume_unit == "Nm3" else "volume (L, m3)"
        )
    hint = ""
    if found == Dimension.VOLUME and density is not None and density.volume_unit == "Nm3":
        hint = "; gas volumes must be in Nm3 (0 degC, 101.325 kPa), a plain m3 is ambiguous"
    raise UnitError(unit, f"{fuel.id} needs {' or '.join(accepted)}, got {describe(unit)}{hint}")


def _build(
    *,
    activity: str,
    unit: str,
    converted_unit: str,
    conversion: float,
    gases: _Gases,
    gwp: GwpSet,
    co2_range: tuple[float, float] | None,
    scope: int,
    category: str,
    source: str,
    version: str,
    year: int | None,
    region: str | None,
    basis: str,
) -> ResolvedFactor:
    if gases.co2e_fixed is not None:
        co2e = gases.co2e_fixed
    else:
        co2e = gases.co2 + gases.ch4 * gases.ch4_gwp + gases.n2o * gwp.n2o
    return ResolvedFactor(
        activity=activity,
        unit=unit,
        converted_unit=converted_unit,
        conversion=conversion,
        co2_kg_per_unit=gases.co2 * conversion,
        ch4_kg_per_unit=gases.ch4 * conversion,
        n2o_kg_per_unit=gases.n2o * conversion,
        biogenic_co2_kg_per_unit=gases.biogenic_co2 * conversion,
        co2e_kg_per_unit=co2e * conversion,
        co2_relative_range=co2_range,
        gwp_set=gwp.name,
        gwp_ch4=gases.ch4_gwp,
        gwp_n2o=gwp.n2o,
        scope=scope,
        category=category,
        factor_source=source,
        factor_version=version,
        factor_year=year,
        data_quality=DEFAULT_QUALITY,
        region=region,
        gas_basis=basis,
        co2_factor=gases.co2,
        ch4_factor=gases.ch4,
        n2o_factor=gases.n2o,
        biogenic_co2_factor=gases.biogenic_co2,
    )


@functools.cache
def _builtin_library() -> FactorLibrary:
    folder: Any = resources.files("carbonlink.emissions") / "data"
    return FactorLibrary(load_data(folder, "carbonlink.emissions/data"))
