"""Emission factor library: IPCC 2006 defaults, grid and heat factors, factor sets.

Typical use::

    lib = FactorLibrary.builtin()
    result = lib.compute("natural_gas", 1200.0, "Nm3", gwp="AR5")
    factor = lib.resolve("electricity", "kWh", region="CN", year=2023)
    arrays = factor.apply_array(readings)
"""

from carbonlink.emissions._factor_set import FactorOverride, FactorSet
from carbonlink.emissions._library import ActivityInfo, ActivityKind, FactorLibrary
from carbonlink.emissions._result import DataQuality, EmissionResult, ResolvedFactor
from carbonlink.emissions._units import UREG, unit_ratio

__all__ = [
    "UREG",
    "ActivityInfo",
    "ActivityKind",
    "DataQuality",
    "EmissionResult",
    "FactorLibrary",
    "FactorOverride",
    "FactorSet",
    "ResolvedFactor",
    "unit_ratio",
]
