"""The outcome of a computation and the resolved, per-unit factor that produces it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

DataQuality = Literal["measured", "estimated", "default"]
FloatArray = npt.NDArray[np.float64]

ARRAY_KEYS = ("co2_kg", "ch4_kg", "n2o_kg", "co2e_kg", "biogenic_co2_kg")


def combine_relative(*parts: tuple[float, float] | None) -> tuple[float, float] | None:
    """Relative 95% half-widths of a product, IPCC 2006 Vol. 1 Ch. 3 Eq. 3.1 (Approach 1).

    Lower and upper sides are combined separately because the published intervals are
    asymmetric. Parts given as ``None`` (no published range) are skipped; if none has a
    range the result has none.
    """
    known = [p for p in parts if p is not None]
    if not known:
        return None
    lower = math.sqrt(sum(p[0] ** 2 for p in known))
    upper = math.sqrt(sum(p[1] ** 2 for p in known))
    return lower, upper


@dataclass(frozen=True)
class EmissionResult:
    """Emissions for one metered amount, with everything needed to recompute them.

    ``biogenic_co2_kg`` is kept apart: it is in neither ``co2_kg`` nor ``co2e_kg``.
    ``co2e_range_kg`` applies the 95% range of the CO2 part (CH4 and N2O at central
    values); it is None where the source publishes no range.
    """

    activity: str
    amount: float
    unit: str
    converted_amount: float
    converted_unit: str
    co2_kg: float
    ch4_kg: float
    n2o_kg: float
    co2e_kg: float
    biogenic_co2_kg: float
    gwp_set: str
    scope: int
    category: str
    factor_source: str
    factor_version: str
    factor_year: int | None
    co2e_range_kg: tuple[float, float] | None
    calorific_basis: str | None
    data_quality: DataQuality
    region: str | None
    gas_basis: str
    factor_unit: str
    co2_factor: float
    ch4_factor: float
    n2o_factor: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the range as a two-item list or None)."""
        out = asdict(self)
        out["co2e_range_kg"] = None if self.co2e_range_kg is None else list(self.co2e_range_kg)
        return out


@dataclass(frozen=True)
class ResolvedFactor:
    """Factors for one (activity, metered unit, GWP set, region, year, sector).

    All ``*_per_unit`` values are kg per one metered unit, so applying them is a
    multiplication; ``co2_factor`` etc. are per ``converted_unit`` as the source states
    them (e.g. kg/TJ) for the audit record.
    """

    activity: str
    unit: str
    converted_unit: str
    conversion: float
    co2_kg_per_unit: float
    ch4_kg_per_unit: float
    n2o_kg_per_unit: float
    biogenic_co2_kg_per_unit: float
    co2e_kg_per_unit: float
    co2_relative_range: tuple[float, float] | None
    ncv_relative_range: tuple[float, float] | None  # an NCV range the conversion used
    calorific_basis: str | None  # "net" | "gross" for an energy amount, else None
    gwp_set: str
    gwp_ch4: float
    gwp_n2o: float
    scope: int
    category: str
    factor_source: str
    factor_version: str
    factor_year: int | None
    data_quality: DataQuality
    region: str | None
    gas_basis: str
    co2_factor: float
    ch4_factor: float
    n2o_factor: float
    biogenic_co2_factor: float

    @property
    def factor_unit(self) -> str:
        return f"kg/{self.converted_unit}"

    @property
    def co2e_factor_u95_per_unit(self) -> tuple[float, float]:
        """Half-widths (lower, upper side) of the 95% interval of CO2e per metered unit
        that the factor's published ranges give (CO2 part only; CH4, N2O and factors
        without a published range count as exact); zero where none is published."""
        if self.co2_relative_range is None:
            return 0.0, 0.0
        low, high = self.co2_relative_range
        return abs(self.co2_kg_per_unit) * low, abs(self.co2_kg_per_unit) * high

    def _co2e_range(self, co2_kg: float, co2e_kg: float) -> tuple[float, float] | None:
        if self.co2_relative_range is None:
            return None
        low_rel, high_rel = self.co2_relative_range
        low, high = co2e_kg - co2_kg * low_rel, co2e_kg + co2_kg * high_rel
        # A negative amount (a correction) flips the bounds.
        return (low, high) if low <= high else (high, low)

    def apply(self, amount: float) -> EmissionResult:
        """Emissions for ``amount`` of the metered unit."""
        co2 = amount * self.co2_kg_per_unit
        co2e = amount * self.co2e_kg_per_unit
        return EmissionResult(
            activity=self.activity,
            amount=amount,
            unit=self.unit,
            converted_amount=amount * self.conversion,
            converted_unit=self.converted_unit,
            co2_kg=co2,
            ch4_kg=amount * self.ch4_kg_per_unit,
            n2o_kg=amount * self.n2o_kg_per_unit,
            co2e_kg=co2e,
            biogenic_co2_kg=amount * self.biogenic_co2_kg_per_unit,
            gwp_set=self.gwp_set,
            scope=self.scope,
            category=self.category,
            factor_source=self.factor_source,
            factor_version=self.factor_version,
            factor_year=self.factor_year,
            co2e_range_kg=self._co2e_range(co2, co2e),
            calorific_basis=self.calorific_basis,
            data_quality=self.data_quality,
            region=self.region,
            gas_basis=self.gas_basis,
            factor_unit=self.factor_unit,
            co2_factor=self.co2_factor,
            ch4_factor=self.ch4_factor,
            n2o_factor=self.n2o_factor,
        )

    def apply_array(self, amounts: npt.ArrayLike) -> dict[str, FloatArray]:
        """Vectorised :meth:`apply` for many amounts: arrays keyed by ``ARRAY_KEYS``."""
        values = np.asarray(amounts, dtype=np.float64)
        per_unit = (
            self.co2_kg_per_unit,
            self.ch4_kg_per_unit,
            self.n2o_kg_per_unit,
            self.co2e_kg_per_unit,
            self.biogenic_co2_kg_per_unit,
        )
        return {key: values * factor for key, factor in zip(ARRAY_KEYS, per_unit, strict=True)}
