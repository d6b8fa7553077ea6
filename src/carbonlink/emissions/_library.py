"""The factor library: finds the factors for an activity and folds in unit conversion."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from carbonlink.emissions._data import (
    SECTORS,
    CalorificDefaults,
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
from carbonlink.emissions._units import (
    Dimension,
    conversion_factor,
    describe,
    dimension_of,
    split_basis,
)
from carbonlink.errors import FactorLookupError, UnitError, UnknownActivityError

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
class Adjustments:
    """What a factor set states in place of the library's defaults for one activity.

    Hashable, so :meth:`FactorLibrary.resolve` stays cached per adjustment.
    ``ncv_per_volume`` is TJ per ``ncv_volume_unit`` (``Nm3`` or ``L``);
    ``gross_units``/``net_units`` name units quoted on that calorific basis;
    ``source`` cites where the stated values come from.
    """

    ncv_tj_per_t: float | None = None
    ncv_per_volume: float | None = None
    ncv_volume_unit: str | None = None
    ncv_per_gcv: float | None = None
    gross_units: frozenset[str] = frozenset()
    net_units: frozenset[str] = frozenset()
    cullet_ratio: float | None = None
    source: str = ""
    ncv_published: str = ""  # the stated NCV as its source prints it


NO_ADJUSTMENTS = Adjustments()


@dataclass(frozen=True)
class _Gases:
    """kg per converted unit, before folding in the unit."""

    co2: float
    ch4: float
    n2o: float
    biogenic_co2: float
    co2e_fixed: float | None = None  # set when the source gives CO2e only


@dataclass(frozen=True)
class _FuelAmount:
    """How a metered fuel amount becomes TJ (NCV): the factor and what it relied on."""

    tj_per_unit: float
    ncv_range: tuple[float, float] | None  # relative bounds of an NCV that was used
    basis: str | None  # calorific basis of an energy amount: "net" | "gross"
    note: str  # for the citation: density, stated NCV, gross-to-net ratio


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

    def activity_id(self, activity: str) -> str:
        """The activity's own id (resolving aliases); raises UnknownActivityError."""
        return self._canonical(activity)

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

    def ncv_per_gcv(self, activity: str) -> float | None:
        """The fuel's default NCV/GCV ratio (IPCC 2006 Vol. 2 Ch. 1 s. 1.4.1.2); None for
        fuels without one (wood) and for activities that are no fuel."""
        fuel = self._data.fuels.get(self._canonical(activity))
        return None if fuel is None or fuel.ncv_per_gcv is None else fuel.ncv_per_gcv.value

    def takes_cullet_ratio(self, activity: str) -> bool:
        """Whether the activity is glass, whose process CO2 depends on the cullet ratio."""
        process = self._data.processes.get(self._canonical(activity))
        return process is not None and process.cullet_ratio is not None

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
        adjust: Adjustments = NO_ADJUSTMENTS,
    ) -> ResolvedFactor:
        """Per-metered-unit factors; cached, so calling it per reading is cheap.

        ``adjust`` carries what a factor set states instead of the defaults (NCV,
        gross-to-net ratio, units' calorific basis, cullet ratio).
        """
        return self._resolve_cached(activity, unit, gwp, region, year, sector, adjust)

    @property
    def calorific(self) -> CalorificDefaults:
        """Which basis energy units are quoted on when they do not say."""
        return self._data.calorific

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
        adjust: Adjustments,
    ) -> ResolvedFactor:
        name = self._canonical(activity)
        gwp_set = self._gwp(name, gwp)
        if sector not in SECTORS:
            raise FactorLookupError(name, f"unknown sector {sector!r}; known: {', '.join(SECTORS)}")
        sector_name: Sector = "energy" if sector == "energy" else "manufacturing"
        data = self._data
        if name in data.fuels:
            return self._fuel(data.fuels[name], unit, gwp_set, sector_name, adjust)
        if name == ELECTRICITY:
            return self._electricity(unit, gwp_set, region, year)
        if name in data.heat:
            return self._heat(data.heat[name], unit, gwp_set)
        return self._process(data.processes[name], unit, gwp_set, adjust)

    def _fuel(
        self, fuel: FuelData, unit: str, gwp: GwpSet, sector: Sector, adjust: Adjustments
    ) -> ResolvedFactor:
        amount = _fuel_amount(fuel, unit, self._data.calorific, adjust)
        ch4, n2o = fuel.ch4[sector], fuel.n2o[sector]
        co2_range = combine_relative(amount.ncv_range, fuel.co2.relative_bounds())
        sources = [fuel.ncv.source] if amount.ncv_range is not None else []
        citation = _cite(*sources, fuel.co2.source, ch4.source, n2o.source) + amount.note
        gases = _Gases(
            co2=0.0 if fuel.biogenic else fuel.co2.value,
            ch4=ch4.value,
            n2o=n2o.value,
            biogenic_co2=fuel.co2.value if fuel.biogenic else 0.0,
        )
        return _build(
            activity=fuel.id,
            unit=unit,
            converted_unit=FUEL_UNIT,
            conversion=amount.tj_per_unit,
            gases=gases,
            gwp=gwp,
            co2_range=None if fuel.biogenic else co2_range,
            ncv_range=amount.ncv_range,
            calorific_basis=amount.basis,
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
            co2=entry.co2, ch4=entry.ch4, n2o=entry.n2o, biogenic_co2=0.0, co2e_fixed=entry.co2e
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
        gases = _Gases(co2=heat.co2, ch4=0.0, n2o=0.0, biogenic_co2=0.0)
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

    def _process(
        self, process: ProcessData, unit: str, gwp: GwpSet, adjust: Adjustments
    ) -> ResolvedFactor:
        conversion = _convert(process.id, unit, PROCESS_UNIT, Dimension.MASS)
        co2, published = process.co2.value, process.co2.published
        if process.cullet_ratio is not None:
            # Eq. 2.12: cullet releases no process CO2, so only (1 - CR) of the melt counts.
            ratio, origin = adjust.cullet_ratio, adjust.source
            if ratio is None:
                ratio, origin = process.cullet_ratio.value, process.cullet_ratio.source.cite()
            co2 *= 1.0 - ratio
            published += f" x (1 - cullet ratio {ratio:g}, {origin})"
        elif adjust.cullet_ratio is not None:
            raise FactorLookupError(process.id, "a cullet ratio applies to glass only")
        gases = _Gases(co2=co2, ch4=0.0, n2o=0.0, biogenic_co2=0.0)
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
            source=f"{process.co2.source.cite()} ({published})",
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


def _fuel_amount(
    fuel: FuelData, unit: str, calorific: CalorificDefaults, adjust: Adjustments
) -> _FuelAmount:
    """How one metered unit of ``fuel`` becomes TJ on a net calorific value basis."""
    found = dimension_of(unit)
    if found == Dimension.ENERGY:
        return _energy_amount(fuel, unit, calorific, adjust)
    ncv_range = fuel.ncv.relative_bounds()
    if found == Dimension.MASS:
        if adjust.ncv_tj_per_t is not None:
            note = f"; NCV {adjust.ncv_published} ({adjust.source})"
            return _FuelAmount(conversion_factor(unit, "t") * adjust.ncv_tj_per_t, None, None, note)
        return _FuelAmount(conversion_factor(unit, "t") * fuel.ncv.value, ncv_range, None, "")
    stated_volume = adjust.ncv_volume_unit
    if (
        adjust.ncv_per_volume is not None
        and stated_volume is not None
        and found == dimension_of(stated_volume)
    ):
        per = conversion_factor(unit, stated_volume)
        note = f"; NCV {adjust.ncv_published} ({adjust.source})"
        return _FuelAmount(per * adjust.ncv_per_volume, None, None, note)
    density = fuel.density
    if density is not None and found == density.dimension:
        tonnes = conversion_factor(unit, density.volume_unit) * density.kg_per_volume / KG_PER_T
        origin = (
            "assumption stated in the data file" if density.assumption else density.source.cite()
        )
        ncv = fuel.ncv.value if adjust.ncv_tj_per_t is None else adjust.ncv_tj_per_t
        note = f"; density {density.published} ({origin})"
        if adjust.ncv_tj_per_t is not None:
            note += f"; NCV {adjust.ncv_published} ({adjust.source})"
        return _FuelAmount(
            tonnes * ncv, ncv_range if adjust.ncv_tj_per_t is None else None, None, note
        )
    accepted = ["mass (t, kg)", "energy (TJ, GJ, MWh)"]
    if density is not None:
        accepted.append(
            "normal gas volume (Nm3)" if density.volume_unit == "Nm3" else "volume (L, m3)"
        )
    hint = ""
    if found == Dimension.VOLUME and density is not None and density.volume_unit == "Nm3":
        hint = "; gas volumes must be in Nm3 (0 degC, 101.325 kPa), a plain m3 is ambiguous"
    raise UnitError(unit, f"{fuel.id} needs {' or '.join(accepted)}, got {describe(unit)}{hint}")


def _energy_amount(
    fuel: FuelData, unit: str, calorific: CalorificDefaults, adjust: Adjustments
) -> _FuelAmount:
    """An energy amount: IPCC factors are per TJ of NCV, so a gross (GCV) amount is taken
    to NCV with the fuel's ratio (IPCC 2006 Vol. 2 Ch. 1, section 1.4.1.2)."""
    bare, named = split_basis(unit)
    basis = named
    if basis is None and bare in adjust.gross_units:
        basis = "gross"
    if basis is None and bare in adjust.net_units:
        basis = "net"
    if basis is None:
        basis = calorific.basis_of(unit)
    if basis is None:
        raise UnitError(
            unit,
            f"say which calorific basis {bare!r} is quoted on: {bare!r} NCV (net) or "
            f"{bare!r} GCV (gross)",
        )
    tj = conversion_factor(unit, FUEL_UNIT)
    if basis == "net":
        return _FuelAmount(tj, None, "net", "")
    if adjust.ncv_per_gcv is not None:
        ratio, origin = adjust.ncv_per_gcv, adjust.source
    elif fuel.ncv_per_gcv is not None:
        ratio, origin = fuel.ncv_per_gcv.value, fuel.ncv_per_gcv.source.cite()
    else:
        raise UnitError(
            unit,
            f"{unit!r} is a gross (GCV) amount and {fuel.id} has no default NCV/GCV ratio; "
            "state it in the factor set (overrides.<activity>.ncv_per_gcv) or meter on NCV",
        )
    note = f"; gross (GCV) amount taken to NCV x {ratio:g} ({origin})"
    return _FuelAmount(tj * ratio, None, "gross", note)


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
    ncv_range: tuple[float, float] | None = None,
    calorific_basis: str | None = None,
) -> ResolvedFactor:
    if gases.co2e_fixed is not None:
        co2e = gases.co2e_fixed
    else:
        # The plain CH4 GWP: IPCC CO2 factors already count the carbon that CH4 from
        # combustion would oxidise to (gwp.yaml says more).
        co2e = gases.co2 + gases.ch4 * gwp.ch4 + gases.n2o * gwp.n2o
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
        ncv_relative_range=ncv_range,
        calorific_basis=calorific_basis,
        gwp_set=gwp.name,
        gwp_ch4=gwp.ch4,
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
