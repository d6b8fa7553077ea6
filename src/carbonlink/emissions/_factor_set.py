"""Named, versioned factor selections that the platform assigns per plant."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pydantic

from carbonlink.core.yamlfiles import StrictModel, read_yaml, validate_model
from carbonlink.emissions._data import Sector
from carbonlink.emissions._library import NO_ADJUSTMENTS, Adjustments, FactorLibrary
from carbonlink.emissions._result import DataQuality, ResolvedFactor
from carbonlink.emissions._units import Dimension, conversion_factor, dimension_of, split_basis
from carbonlink.errors import ConfigError, UnitError, UnknownActivityError

_OVERRIDE_GASES = ("co2", "ch4", "n2o")
# An NCV stated per unit of these is matched to readings of the same dimension.
_NCV_DENOMINATORS = (
    ("t", Dimension.MASS),
    ("Nm3", Dimension.NORMAL_VOLUME),
    ("L", Dimension.VOLUME),
    ("scf", Dimension.STANDARD_VOLUME_US),
)
_NCV_UNIT = "TJ"


class _GridSchema(StrictModel):
    # A region here pins the grid factor for every plant on the set; without one, each
    # plant's own grid_region is used.
    region: str | None = pydantic.Field(default=None, min_length=1)
    year: int | None = None


class _GasValueSchema(StrictModel):
    value: float = pydantic.Field(ge=0)
    unit: str = pydantic.Field(min_length=1)


class _NcvSchema(StrictModel):
    value: float = pydantic.Field(gt=0)
    unit: str = pydantic.Field(min_length=1)


class _CalorificSchema(StrictModel):
    gross: list[str] = pydantic.Field(default_factory=list)
    net: list[str] = pydantic.Field(default_factory=list)
    source: str = pydantic.Field(min_length=1)


class _OverrideSchema(StrictModel):
    co2: _GasValueSchema | None = None
    ch4: _GasValueSchema | None = None
    n2o: _GasValueSchema | None = None
    ncv: _NcvSchema | None = None
    ncv_per_gcv: float | None = pydantic.Field(default=None, gt=0, le=1)
    cullet_ratio: float | None = pydantic.Field(default=None, ge=0, lt=1)
    source: str = pydantic.Field(min_length=1)
    data_quality: Literal["measured", "estimated", "default"] = "measured"

    @pydantic.model_validator(mode="after")
    def _states_something(self) -> _OverrideSchema:
        stated = (self.co2, self.ch4, self.n2o, self.ncv, self.ncv_per_gcv, self.cullet_ratio)
        if all(value is None for value in stated):
            raise ValueError(
                "an override needs at least one of co2, ch4, n2o, ncv, ncv_per_gcv, cullet_ratio"
            )
        return self


class _FactorSetSchema(StrictModel):
    name: str = pydantic.Field(min_length=1)
    version: str = pydantic.Field(min_length=1)
    description: str = pydantic.Field(min_length=1)
    gwp: str = pydantic.Field(min_length=1)
    sector: Sector = "manufacturing"
    grid: _GridSchema | None = None
    calorific_basis: _CalorificSchema | None = None
    overrides: dict[str, _OverrideSchema] = pydantic.Field(default_factory=dict)


@dataclass(frozen=True)
class FactorOverride:
    """Plant- or set-specific values for one activity.

    ``gases`` are kg per the activity's canonical unit; ``adjust`` carries a stated
    NCV, gross-to-net ratio or cullet ratio (applied before the factors are folded in).
    """

    activity: str
    gases: Mapping[str, float]
    source: str
    data_quality: DataQuality
    adjust: Adjustments = NO_ADJUSTMENTS


@dataclass(frozen=True)
class FactorSet:
    """A validated factor-set file; resolve through it instead of the bare library.

    Grid precedence: a set whose ``grid.region`` names a region pins that factor for
    every plant on it (the carbon-market default, say); a set without one uses each
    plant's ``grid_region``.
    """

    name: str
    version: str
    description: str
    gwp: str
    sector: Sector
    grid_region: str | None  # pinned region, None: the plant's grid_region
    grid_year: int | None
    overrides: Mapping[str, FactorOverride]
    path: str | None = None
    gross_units: frozenset[str] = frozenset()
    net_units: frozenset[str] = frozenset()
    calorific_source: str = ""
    _cache: dict[tuple[int, str, str, str | None, int | None], ResolvedFactor] = field(
        default_factory=dict, repr=False, compare=False, hash=False
    )

    @property
    def label(self) -> str:
        """``name version``: what results record as ``factor_version``."""
        return f"{self.name} {self.version}"

    @classmethod
    def load(cls, path: str | Path, library: FactorLibrary | None = None) -> FactorSet:
        """Read and check a factor-set file; any problem raises ConfigError(path, key, ...)."""
        lib = library if library is not None else FactorLibrary.builtin()
        label = str(path)
        parsed = validate_model(_FactorSetSchema, read_yaml(Path(path), label), label)
        if parsed.gwp not in lib.gwp_sets():
            raise ConfigError(
                label, "gwp", f"unknown GWP set {parsed.gwp!r}; known: {', '.join(lib.gwp_sets())}"
            )
        region = None
        if parsed.grid is not None and parsed.grid.region is not None:
            known = {r.lower(): r for r in lib.regions()}
            region = known.get(parsed.grid.region.lower())
            if region is None:
                raise ConfigError(
                    label,
                    "grid.region",
                    f"unknown region {parsed.grid.region!r}; known: {', '.join(lib.regions())}",
                )
        calorific = parsed.calorific_basis
        gross, net = _basis_units(label, calorific)
        overrides = {
            activity: _override(lib, label, activity, spec, gross, net)
            for activity, spec in parsed.overrides.items()
        }
        return cls(
            name=parsed.name,
            version=parsed.version,
            description=parsed.description,
            gwp=parsed.gwp,
            sector=parsed.sector,
            grid_region=region,
            grid_year=None if parsed.grid is None else parsed.grid.year,
            overrides=overrides,
            path=label,
            gross_units=gross,
            net_units=net,
            calorific_source="" if calorific is None else calorific.source,
        )

    def grid_for(self, plant_region: str | None) -> tuple[str | None, int | None]:
        """(region, year) the set applies to a plant's electricity: its pinned region if
        it names one, else the plant's ``grid_region``."""
        return (self.grid_region or plant_region), self.grid_year

    def resolve(
        self,
        library: FactorLibrary,
        activity: str,
        unit: str,
        *,
        region: str | None = None,
        year: int | None = None,
    ) -> ResolvedFactor:
        """Resolve with this set's GWP, sector, grid and overrides (cached per set).

        ``region`` is the plant's ``grid_region``: used for electricity only when the set
        pins no region (a set that names a grid factor wins over the plant's region).
        ``year`` likewise applies only when the set names no year.
        """
        use_region = self.grid_region if self.grid_region is not None else region
        use_year = self.grid_year if self.grid_year is not None else year
        key = (id(library), activity, unit, use_region, use_year)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        name = library.activity_id(activity)
        override = self.overrides.get(name)
        adjust = Adjustments(
            gross_units=self.gross_units, net_units=self.net_units, source=self.calorific_source
        )
        if override is not None:
            adjust = dataclasses.replace(
                override.adjust, gross_units=self.gross_units, net_units=self.net_units
            )
        base = library.resolve(
            activity,
            unit,
            gwp=self.gwp,
            region=use_region,
            year=use_year,
            sector=self.sector,
            adjust=adjust,
        )
        resolved = base if override is None else self._apply(base, override)
        self._cache[key] = resolved
        return resolved

    def _apply(self, base: ResolvedFactor, override: FactorOverride) -> ResolvedFactor:
        stated = ", ".join(sorted(override.gases))
        if not override.gases:
            # Only an NCV, ratio or cullet ratio: the library folded it in (and cited it).
            return dataclasses.replace(
                base, factor_version=self.label, data_quality=override.data_quality
            )
        biogenic = base.biogenic_co2_factor > 0
        co2 = override.gases.get("co2")
        ch4 = override.gases.get("ch4", base.ch4_factor)
        n2o = override.gases.get("n2o", base.n2o_factor)
        fossil_co2 = base.co2_factor if co2 is None or biogenic else co2
        biogenic_co2 = co2 if co2 is not None and biogenic else base.biogenic_co2_factor
        co2e = fossil_co2 + ch4 * base.gwp_ch4 + n2o * base.gwp_n2o
        conv = base.conversion
        return dataclasses.replace(
            base,
            co2_kg_per_unit=fossil_co2 * conv,
            ch4_kg_per_unit=ch4 * conv,
            n2o_kg_per_unit=n2o * conv,
            biogenic_co2_kg_per_unit=biogenic_co2 * conv,
            co2e_kg_per_unit=co2e * conv,
            # The published range no longer describes an overridden CO2 factor.
            co2_relative_range=None if co2 is not None else base.co2_relative_range,
            factor_source=f"{override.source} ({stated}); other factors: {base.factor_source}",
            factor_version=self.label,
            data_quality=override.data_quality,
            gas_basis="per_gas" if base.gas_basis != "co2e_only" else base.gas_basis,
            co2_factor=fossil_co2,
            ch4_factor=ch4,
            n2o_factor=n2o,
            biogenic_co2_factor=biogenic_co2,
        )


def _basis_units(
    label: str, spec: _CalorificSchema | None
) -> tuple[frozenset[str], frozenset[str]]:
    if spec is None:
        return frozenset(), frozenset()
    for side in ("gross", "net"):
        for unit in getattr(spec, side):
            try:
                found = dimension_of(unit)
            except UnitError as exc:
                raise ConfigError(label, f"calorific_basis.{side}", exc.problem) from None
            if found is not Dimension.ENERGY:
                raise ConfigError(label, f"calorific_basis.{side}", f"{unit!r} is no energy unit")
    both = set(spec.gross) & set(spec.net)
    if both:
        raise ConfigError(label, "calorific_basis", f"{sorted(both)} listed as gross and net")
    return frozenset(spec.gross), frozenset(spec.net)


def _override(
    library: FactorLibrary,
    label: str,
    activity: str,
    spec: _OverrideSchema,
    gross: frozenset[str],
    net: frozenset[str],
) -> FactorOverride:
    key = f"overrides.{activity}"
    try:
        target = f"kg/{library.canonical_unit(activity)}"
        kind = library.kind_of(activity)
    except UnknownActivityError:
        raise ConfigError(label, key, f"unknown activity {activity!r}") from None
    if kind == "electricity":
        # Grid factors depend on region and year; a single override would silently
        # replace all of them.
        raise ConfigError(label, key, "electricity cannot be overridden; choose grid.region")
    if kind != "fuel":
        for name in ("ncv", "ncv_per_gcv"):
            if getattr(spec, name) is not None:
                raise ConfigError(label, f"{key}.{name}", "applies to fuels only")
    gases: dict[str, float] = {}
    for gas in _OVERRIDE_GASES:
        value = getattr(spec, gas)
        if value is None:
            continue
        try:
            per_unit = value.value * conversion_factor(value.unit, target)
        except UnitError as exc:
            raise ConfigError(
                label, f"{key}.{gas}.unit", f"{exc.problem} (need mass per {target[3:]})"
            ) from None
        if split_basis(value.unit)[1] == "gross":
            # Per gross energy (EPA's factors are per HHV): per NCV it is larger by 1/ratio.
            per_unit /= _ratio(library, label, f"{key}.{gas}.unit", activity, spec)
        gases[gas] = per_unit
    if spec.cullet_ratio is not None and not library.takes_cullet_ratio(activity):
        raise ConfigError(label, f"{key}.cullet_ratio", "applies to glass only")
    adjust = Adjustments(
        ncv_per_gcv=spec.ncv_per_gcv,
        cullet_ratio=spec.cullet_ratio,
        gross_units=gross,
        net_units=net,
        source=spec.source,
    )
    if spec.ncv is not None:
        gross_heat = split_basis(spec.ncv.unit)[1] == "gross"
        ratio = _ratio(library, label, f"{key}.ncv.unit", activity, spec) if gross_heat else 1.0
        adjust = _with_ncv(adjust, label, f"{key}.ncv", spec.ncv, ratio)
    return FactorOverride(
        activity=activity,
        gases=gases,
        source=spec.source,
        data_quality=spec.data_quality,
        adjust=adjust,
    )


def _ratio(
    library: FactorLibrary, label: str, key: str, activity: str, spec: _OverrideSchema
) -> float:
    """NCV/GCV of the activity: the override's, else the library's default."""
    ratio = spec.ncv_per_gcv if spec.ncv_per_gcv is not None else library.ncv_per_gcv(activity)
    if ratio is None:
        raise ConfigError(label, key, f"a gross (GCV) value needs ncv_per_gcv for {activity}")
    return ratio


def _with_ncv(
    adjust: Adjustments, label: str, key: str, ncv: _NcvSchema, ratio: float
) -> Adjustments:
    """A stated NCV per mass (GJ/t), per normal volume (GJ/(10^4 Nm3)), per litre or per
    scf; a heat content stated gross ("MMBtu/ton GCV") is taken to NCV with ``ratio``."""
    adjust = dataclasses.replace(adjust, ncv_published=f"{ncv.value:g} {ncv.unit}")
    for denominator, dimension in _NCV_DENOMINATORS:
        try:
            tj = ratio * ncv.value * conversion_factor(ncv.unit, f"{_NCV_UNIT}/{denominator}")
        except UnitError:
            continue
        if dimension is Dimension.MASS:
            return dataclasses.replace(adjust, ncv_tj_per_t=tj)
        return dataclasses.replace(adjust, ncv_per_volume=tj, ncv_volume_unit=denominator)
    raise ConfigError(label, f"{key}.unit", f"{ncv.unit!r}: need energy per t, per Nm3 or per L")
