"""Schemas of the factor data files and the immutable records the library works on.

Every value is converted once, at load, from the unit the source publishes into the
unit the library computes in (kg per TJ, TJ per t, kg per kWh, kg per GJ, kg per t),
so the hot path never touches pint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from carbonlink.core.yamlfiles import Readable, StrictModel, read_yaml, validate_model
from carbonlink.emissions._units import (
    CalorificBasis,
    Dimension,
    conversion_factor,
    dimension_of,
    split_basis,
)
from carbonlink.errors import ConfigError, UnitError

Sector = Literal["manufacturing", "energy"]
SECTORS: tuple[Sector, ...] = ("manufacturing", "energy")
GridBasis = Literal["per_gas", "co2_only", "co2e_only"]

STATIONARY_FILE = "ipcc2006_stationary.yaml"
GWP_FILE = "gwp.yaml"
GRID_FILE = "grid.yaml"
HEAT_FILE = "heat.yaml"
PROCESS_FILE = "process.yaml"
DATA_FILES = (STATIONARY_FILE, GWP_FILE, GRID_FILE, HEAT_FILE, PROCESS_FILE)

# Internal computation units; changing one means changing the loader conversions too.
NCV_UNIT = "TJ/t"
FUEL_FACTOR_UNIT = "kg/TJ"
GRID_FACTOR_UNIT = "kg/kWh"
HEAT_FACTOR_UNIT = "kg/GJ"
PROCESS_FACTOR_UNIT = "kg/t"
RATIO_UNIT = "dimensionless"

_ACTIVITY_ID = re.compile(r"^[a-z][a-z0-9_]*$")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SourceRef:
    """Where a number comes from: document, table, version and year."""

    document: str
    table: str
    version: str
    year: int | None

    def cite(self) -> str:
        return f"{self.document}, {self.table}"


@dataclass(frozen=True)
class Param:
    """A published value converted to the computation unit, with its 95% bounds."""

    value: float
    lower: float | None
    upper: float | None
    derived: bool
    assumption: bool
    published: str
    source: SourceRef

    def relative_bounds(self) -> tuple[float, float] | None:
        """Relative distance of the lower and upper bound from the value, if published."""
        if self.lower is None or self.upper is None or self.value == 0:
            return None
        return (self.value - self.lower) / self.value, (self.upper - self.value) / self.value


@dataclass(frozen=True)
class Density:
    """Mass per volume used to take a metered volume to mass (kg per ``volume_unit``)."""

    kg_per_volume: float
    volume_unit: str
    dimension: Dimension
    published: str
    assumption: bool
    source: SourceRef


@dataclass(frozen=True)
class FuelData:
    id: str
    description: str
    biogenic: bool
    ncv: Param  # TJ per t
    co2: Param  # kg per TJ
    ch4: Mapping[Sector, Param]  # kg per TJ
    n2o: Mapping[Sector, Param]  # kg per TJ
    density: Density | None
    ncv_per_gcv: Param | None  # None: gross energy amounts need a ratio from a factor set


@dataclass(frozen=True)
class GwpSet:
    """GWP-100 values. ``ch4`` is for combustion, grid and heat CH4; ``ch4_fossil`` only
    for fugitive fossil CH4 (see gwp.yaml for why)."""

    name: str
    ch4: float
    ch4_fossil: float
    n2o: float
    source: SourceRef


@dataclass(frozen=True)
class CalorificDefaults:
    """The basis an energy unit is quoted on when the unit text does not say."""

    gross: frozenset[str]
    net: frozenset[str]
    source: SourceRef

    def basis_of(self, unit: str) -> CalorificBasis | None:
        """The unit's basis: as its text names it, else by convention; None if unknown."""
        bare, named = split_basis(unit)
        if named is not None:
            return named
        if bare in self.gross:
            return "gross"
        if bare in self.net:
            return "net"
        return None


@dataclass(frozen=True)
class GridEntry:
    """One region-year; gas values in kg per kWh (0 for gases the source omits)."""

    region: str
    year: int
    basis: GridBasis
    co2: float
    ch4: float
    n2o: float
    co2e: float | None
    published: str
    source: SourceRef


@dataclass(frozen=True)
class GridRegion:
    id: str
    description: str
    entries: Mapping[int, GridEntry]


@dataclass(frozen=True)
class HeatData:
    id: str
    description: str
    aliases: tuple[str, ...]
    co2: float  # kg per GJ
    published: str
    source: SourceRef


@dataclass(frozen=True)
class ProcessData:
    id: str
    description: str
    category: str
    co2: Param  # kg per t of product (glass: per t from raw materials, before cullet)
    cullet_ratio: Param | None = None  # glass (Eq. 2.12): share of cullet in the charge


@dataclass(frozen=True)
class LibraryData:
    fuels: Mapping[str, FuelData]
    gwp: Mapping[str, GwpSet]
    grid: Mapping[str, GridRegion]
    heat: Mapping[str, HeatData]
    processes: Mapping[str, ProcessData]
    calorific: CalorificDefaults


# --------------------------------------------------------------------------- schemas


class _SourceSchema(StrictModel):
    document: str = pydantic.Field(min_length=1)
    table: str = pydantic.Field(min_length=1)
    version: str = pydantic.Field(min_length=1)
    year: int | None

    def record(self) -> SourceRef:
        return SourceRef(self.document, self.table, self.version, self.year)


class _ParamSchema(StrictModel):
    value: float = pydantic.Field(ge=0)
    unit: str = pydantic.Field(min_length=1)
    lower: float | None = None
    upper: float | None = None
    derived: bool = False
    assumption: bool = False
    source: _SourceSchema

    @pydantic.model_validator(mode="after")
    def _bounds_around_value(self) -> _ParamSchema:
        if (self.lower is None) != (self.upper is None):
            raise ValueError("give both lower and upper, or neither")
        if (
            self.lower is not None
            and self.upper is not None
            and not (self.lower <= self.value <= self.upper)
        ):
            raise ValueError("the 95% bounds must satisfy lower <= value <= upper")
        return self


class _AmountSchema(StrictModel):
    value: float = pydantic.Field(ge=0)
    unit: str = pydantic.Field(min_length=1)


class _FuelSchema(StrictModel):
    description: str = pydantic.Field(min_length=1)
    biogenic: bool
    ncv: _ParamSchema
    co2: _ParamSchema
    ch4: dict[Sector, _ParamSchema]
    n2o: dict[Sector, _ParamSchema]
    density: _ParamSchema | None = None
    ncv_per_gcv: _ParamSchema | None = None

    @pydantic.model_validator(mode="after")
    def _every_sector(self) -> _FuelSchema:
        for gas, table in (("ch4", self.ch4), ("n2o", self.n2o)):
            missing = [s for s in SECTORS if s not in table]
            if missing:
                raise ValueError(f"{gas} lacks sector(s) {', '.join(missing)}")
        return self


class _CalorificSchema(StrictModel):
    gross: list[str] = pydantic.Field(min_length=1)
    net: list[str] = pydantic.Field(min_length=1)
    source: _SourceSchema


class _StationaryFile(StrictModel):
    sources: dict[str, Any] = pydantic.Field(default_factory=dict)
    fuels: dict[str, _FuelSchema]
    calorific_basis: _CalorificSchema


class _GwpSetSchema(StrictModel):
    ch4: float = pydantic.Field(gt=0)
    ch4_fossil: float = pydantic.Field(gt=0)
    n2o: float = pydantic.Field(gt=0)
    source: _SourceSchema


class _GwpFile(StrictModel):
    sets: dict[str, _GwpSetSchema]


class _GridYearSchema(StrictModel):
    basis: GridBasis
    co2: _AmountSchema | None = None
    ch4: _AmountSchema | None = None
    n2o: _AmountSchema | None = None
    co2e: _AmountSchema | None = None
    source: _SourceSchema

    @pydantic.model_validator(mode="after")
    def _gases_match_basis(self) -> _GridYearSchema:
        present = {g for g in ("co2", "ch4", "n2o", "co2e") if getattr(self, g) is not None}
        expected = {
            "per_gas": {"co2", "ch4", "n2o"},
            "co2_only": {"co2"},
            "co2e_only": {"co2e"},
        }[self.basis]
        if present != expected:
            raise ValueError(f"basis {self.basis} needs exactly: {', '.join(sorted(expected))}")
        return self


class _GridRegionSchema(StrictModel):
    description: str = pydantic.Field(min_length=1)
    years: dict[int, _GridYearSchema] = pydantic.Field(min_length=1)


class _GridFile(StrictModel):
    sources: dict[str, Any] = pydantic.Field(default_factory=dict)
    regions: dict[str, _GridRegionSchema]


class _HeatSchema(StrictModel):
    description: str = pydantic.Field(min_length=1)
    aliases: list[str] = pydantic.Field(default_factory=list)
    co2: _AmountSchema
    source: _SourceSchema


class _HeatFile(StrictModel):
    heat: dict[str, _HeatSchema]


class _ProcessSchema(StrictModel):
    description: str = pydantic.Field(min_length=1)
    category: str = pydantic.Field(min_length=1)
    co2: _ParamSchema
    cullet_ratio: _ParamSchema | None = None


class _ProcessFile(StrictModel):
    sources: dict[str, Any] = pydantic.Field(default_factory=dict)
    processes: dict[str, _ProcessSchema]


# --------------------------------------------------------------------------- loading


def _factor(unit: str, target: str, label: str, key: str) -> float:
    try:
        return conversion_factor(unit, target)
    except UnitError as exc:
        raise ConfigError(label, key, f"unit {unit!r}: {exc.problem} (need {target})") from None


def _param(schema: _ParamSchema, target: str, label: str, key: str) -> Param:
    scale = _factor(schema.unit, target, label, f"{key}.unit")
    return Param(
        value=schema.value * scale,
        lower=None if schema.lower is None else schema.lower * scale,
        upper=None if schema.upper is None else schema.upper * scale,
        derived=schema.derived,
        assumption=schema.assumption,
        published=f"{schema.value:g} {schema.unit}",
        source=schema.source.record(),
    )


def _amount(schema: _AmountSchema | None, target: str, label: str, key: str) -> float:
    if schema is None:
        return 0.0
    return schema.value * _factor(schema.unit, target, label, f"{key}.unit")


def _check_id(activity: str, label: str, key: str) -> None:
    if not _ACTIVITY_ID.match(activity):
        raise ConfigError(label, key, "activity ids must be snake_case")


def _density(schema: _ParamSchema, label: str, key: str) -> Density:
    # The density unit says which volumes it applies to: per litre for liquids,
    # per normal cubic metre for gases.
    for volume_unit, dimension in (("L", Dimension.VOLUME), ("Nm3", Dimension.NORMAL_VOLUME)):
        try:
            scale = conversion_factor(schema.unit, f"kg/{volume_unit}")
        except UnitError:
            continue
        return Density(
            kg_per_volume=schema.value * scale,
            volume_unit=volume_unit,
            dimension=dimension,
            published=f"{schema.value:g} {schema.unit}",
            assumption=schema.assumption,
            source=schema.source.record(),
        )
    raise ConfigError(label, f"{key}.unit", "a density must be mass per L or per Nm3")


def _ratio(schema: _ParamSchema | None, label: str, key: str) -> Param | None:
    if schema is None:
        return None
    ratio = _param(schema, RATIO_UNIT, label, key)
    if not 0 < ratio.value <= 1:
        raise ConfigError(label, key, "a ratio must lie in (0, 1]")
    return ratio


def _calorific(schema: _CalorificSchema, label: str) -> CalorificDefaults:
    for side in ("gross", "net"):
        for unit in getattr(schema, side):
            if dimension_of(unit) is not Dimension.ENERGY:
                raise ConfigError(label, f"calorific_basis.{side}", f"{unit!r} is no energy unit")
    return CalorificDefaults(frozenset(schema.gross), frozenset(schema.net), schema.source.record())


def _load_fuels(directory: Any, label: str) -> tuple[dict[str, FuelData], CalorificDefaults]:
    parsed = validate_model(_StationaryFile, read_yaml(directory / STATIONARY_FILE, label), label)
    fuels: dict[str, FuelData] = {}
    for fuel_id, fuel in parsed.fuels.items():
        key = f"fuels.{fuel_id}"
        _check_id(fuel_id, label, key)
        fuels[fuel_id] = FuelData(
            id=fuel_id,
            description=fuel.description,
            biogenic=fuel.biogenic,
            ncv=_param(fuel.ncv, NCV_UNIT, label, f"{key}.ncv"),
            co2=_param(fuel.co2, FUEL_FACTOR_UNIT, label, f"{key}.co2"),
            ch4={
                s: _param(fuel.ch4[s], FUEL_FACTOR_UNIT, label, f"{key}.ch4.{s}") for s in SECTORS
            },
            n2o={
                s: _param(fuel.n2o[s], FUEL_FACTOR_UNIT, label, f"{key}.n2o.{s}") for s in SECTORS
            },
            density=None
            if fuel.density is None
            else _density(fuel.density, label, f"{key}.density"),
            ncv_per_gcv=_ratio(fuel.ncv_per_gcv, label, f"{key}.ncv_per_gcv"),
        )
    return fuels, _calorific(parsed.calorific_basis, label)


def _load_gwp(directory: Any, label: str) -> dict[str, GwpSet]:
    parsed = validate_model(_GwpFile, read_yaml(directory / GWP_FILE, label), label)
    return {
        name: GwpSet(name, s.ch4, s.ch4_fossil, s.n2o, s.source.record())
        for name, s in parsed.sets.items()
    }


def _load_grid(directory: Any, label: str) -> dict[str, GridRegion]:
    parsed = validate_model(_GridFile, read_yaml(directory / GRID_FILE, label), label)
    regions: dict[str, GridRegion] = {}
    for region_id, region in parsed.regions.items():
        entries: dict[int, GridEntry] = {}
        for year, entry in region.years.items():
            key = f"regions.{region_id}.years.{year}"
            published = ", ".join(
                f"{gas.upper()} {amount.value:g} {amount.unit}"
                for gas in ("co2", "ch4", "n2o", "co2e")
                if (amount := getattr(entry, gas)) is not None
            )
            entries[year] = GridEntry(
                region=region_id,
                year=year,
                basis=entry.basis,
                co2=_amount(entry.co2, GRID_FACTOR_UNIT, label, f"{key}.co2"),
                ch4=_amount(entry.ch4, GRID_FACTOR_UNIT, label, f"{key}.ch4"),
                n2o=_amount(entry.n2o, GRID_FACTOR_UNIT, label, f"{key}.n2o"),
                co2e=None
                if entry.co2e is None
                else _amount(entry.co2e, GRID_FACTOR_UNIT, label, f"{key}.co2e"),
                published=published,
                source=entry.source.record(),
            )
        regions[region_id] = GridRegion(region_id, region.description, entries)
    return regions


def _load_heat(directory: Any, label: str) -> dict[str, HeatData]:
    parsed = validate_model(_HeatFile, read_yaml(directory / HEAT_FILE, label), label)
    heat: dict[str, HeatData] = {}
    for heat_id, item in parsed.heat.items():
        key = f"heat.{heat_id}"
        _check_id(heat_id, label, key)
        for alias in item.aliases:
            _check_id(alias, label, f"{key}.aliases")
        heat[heat_id] = HeatData(
            id=heat_id,
            description=item.description,
            aliases=tuple(item.aliases),
            co2=_amount(item.co2, HEAT_FACTOR_UNIT, label, f"{key}.co2"),
            published=f"{item.co2.value:g} {item.co2.unit}",
            source=item.source.record(),
        )
    return heat


def _load_processes(directory: Any, label: str) -> dict[str, ProcessData]:
    parsed = validate_model(_ProcessFile, read_yaml(directory / PROCESS_FILE, label), label)
    processes: dict[str, ProcessData] = {}
    for process_id, item in parsed.processes.items():
        key = f"processes.{process_id}"
        _check_id(process_id, label, key)
        processes[process_id] = ProcessData(
            id=process_id,
            description=item.description,
            category=item.category,
            co2=_param(item.co2, PROCESS_FACTOR_UNIT, label, f"{key}.co2"),
            cullet_ratio=_cullet(item.cullet_ratio, label, f"{key}.cullet_ratio"),
        )
    return processes


def _cullet(schema: _ParamSchema | None, label: str, key: str) -> Param | None:
    if schema is None:
        return None
    ratio = _param(schema, RATIO_UNIT, label, key)
    if not 0 <= ratio.value < 1:
        raise ConfigError(label, key, "a cullet ratio must lie in [0, 1)")
    return ratio


def load_data(directory: Readable | Any, label: str) -> LibraryData:
    """Load and check every data file under ``directory`` (a Path or resource folder)."""
    fuels, calorific = _load_fuels(directory, f"{label}/{STATIONARY_FILE}")
    data = LibraryData(
        fuels=fuels,
        gwp=_load_gwp(directory, f"{label}/{GWP_FILE}"),
        grid=_load_grid(directory, f"{label}/{GRID_FILE}"),
        heat=_load_heat(directory, f"{label}/{HEAT_FILE}"),
        processes=_load_processes(directory, f"{label}/{PROCESS_FILE}"),
        calorific=calorific,
    )
    seen: set[str] = {"electricity"}
    names = [*data.fuels, *data.processes]
    for item in data.heat.values():
        names.extend((item.id, *item.aliases))
    for name in names:
        if name in seen:
            raise ConfigError(label, name, "activity id defined more than once")
        seen.add(name)
    return data
