"""Named, versioned factor selections that the platform assigns per plant."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pydantic

from carbonlink._exceptions import ConfigError, UnitError, UnknownActivityError
from carbonlink._yamlconfig import StrictModel, read_yaml, validate_model
from carbonlink.emissions._data import Sector
from carbonlink.emissions._library import FactorLibrary
from carbonlink.emissions._result import DataQuality, ResolvedFactor
from carbonlink.emissions._units import conversion_factor

_OVERRIDE_GASES = ("co2", "ch4", "n2o")


class _GridSchema(StrictModel):
    region: str = pydantic.Field(min_length=1)
    year: int | None = None


class _GasValueSchema(StrictModel):
    value: float = pydantic.Field(ge=0)
    unit: str = pydantic.Field(min_length=1)


class _OverrideSchema(StrictModel):
    co2: _GasValueSchema | None = None
    ch4: _GasValueSchema | None = None
    n2o: _GasValueSchema | None = None
    source: str = pydantic.Field(min_length=1)
    data_quality: Literal["measured", "estimated", "default"] = "measured"

    @pydantic.model_validator(mode="after")
    def _at_least_one_gas(self) -> _OverrideSchema:
        if self.co2 is None and self.ch4 is None and self.n2o is None:
            raise ValueError("an override needs at least one of co2, ch4, n2o")
        return self


class _FactorSetSchema(StrictModel):
    name: str = pydantic.Field(min_length=1)
    version: str = pydantic.Field(min_length=1)
    description: str = pydantic.Field(min_length=1)
    gwp: str = pydantic.Field(min_length=1)
    sector: Sector = "manufacturing"
    grid: _GridSchema | None = None
    overrides: dict[str, _OverrideSchema] = pydantic.Field(default_factory=dict)


@dataclass(frozen=True)
class FactorOverride:
    """Plant- or set-specific factors for one activity, kg per the activity's canonical unit."""

    activity: str
    gases: Mapping[str, float]
    source: str
    data_quality: DataQuality


@dataclass(frozen=True)
class FactorSet:
    """A validated factor-set file; resolve through it instead of the bare library."""

    name: str
    version: str
    description: str
    gwp: str
    sector: Sector
    grid_region: str | None
    grid_year: int | None
    overrides: Mapping[str, FactorOverride]
    path: str | None = None
    _cache: dict[tuple[int, str, str, str | None, int | None], ResolvedFactor] = field(
        default_factory=dict, repr=False, compare=False, hash=False
    )

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
        if parsed.grid is not None:
            known = {r.lower(): r for r in lib.regions()}
            region = known.get(parsed.grid.region.lower())
            if region is None:
                raise ConfigError(
                    label,
                    "grid.region",
                    f"unknown region {parsed.grid.region!r}; known: {', '.join(lib.regions())}",
                )
        overrides = {
            activity: _override(lib, label, activity, spec)
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
        )

    def resolve(
        self,
        library: FactorLibrary,
        activity: str,
        unit: str,
        *,
        region: str | None = None,
        year: int | None = None,
    ) -> ResolvedFactor:
        """Resolve with this set's GWP, sector, grid and overrides (cached per set)."""
        use_region = region if region is not None else self.grid_region
        use_year = year if year is not None else self.grid_year
        key = (id(library), activity, unit, use_region, use_year)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        base = library.resolve(
            activity, unit, gwp=self.gwp, region=use_region, year=use_year, sector=self.sector
        )
        override = self.overrides.get(base.activity)
        resolved = base if override is None else self._apply(base, override)
        self._cache[key] = resolved
        return resolved

    def _apply(self, base: ResolvedFactor, override: FactorOverride) -> ResolvedFactor:
        biogenic = base.biogenic_co2_factor > 0
        co2 = override.gases.get("co2")
        ch4 = override.gases.get("ch4", base.ch4_factor)
        n2o = override.gases.get("n2o", base.n2o_factor)
        fossil_co2 = base.co2_factor if co2 is None or biogenic else co2
        biogenic_co2 = co2 if co2 is not None and biogenic else base.biogenic_co2_factor
        co2e = fossil_co2 + ch4 * base.gwp_ch4 + n2o * base.gwp_n2o
        gases = ", ".join(sorted(override.gases))
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
            factor_source=f"{override.source} ({gases}); other factors: {base.factor_source}",
            factor_version=f"{self.name} {self.version}",
            data_quality=override.data_quality,
            gas_basis="per_gas" if base.gas_basis != "co2e_only" else base.gas_basis,
            co2_factor=fossil_co2,
            ch4_factor=ch4,
            n2o_factor=n2o,
            biogenic_co2_factor=biogenic_co2,
        )


def _override(
    library: FactorLibrary, label: str, activity: str, spec: _OverrideSchema
) -> FactorOverride:
    key = f"overrides.{activity}"
    try:
        target = f"kg/{library.canonical_unit(activity)}"
    except UnknownActivityError:
        raise ConfigError(label, key, f"unknown activity {activity!r}") from None
    if library.kind_of(activity) == "electricity":
        # Grid factors depend on region and year; a single override would silently
        # replace all of them.
        raise ConfigError(label, key, "electricity cannot be overridden; choose grid.region")
    gases: dict[str, float] = {}
    for gas in _OVERRIDE_GASES:
        value = getattr(spec, gas)
        if value is None:
            continue
        try:
            gases[gas] = value.value * conversion_factor(value.unit, target)
        except UnitError as exc:
            raise ConfigError(
                label, f"{key}.{gas}.unit", f"{exc.problem} (need mass per {target[3:]})"
            ) from None
    return FactorOverride(
        activity=activity, gases=gases, source=spec.source, data_quality=spec.data_quality
    )
