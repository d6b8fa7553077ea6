"""Unit parsing and conversion for what meters report, on one shared pint registry."""

from __future__ import annotations

import enum
import functools
import re
import tokenize
from typing import Any, Literal

import pint

from carbonlink.errors import UnitError

# One registry for the whole process: pint units from different registries cannot be
# combined, and building a registry costs a few hundred milliseconds.
UREG: Any = pint.UnitRegistry()
# Normal cubic metres get their own dimension so a plain m3 of gas (whose amount of
# substance depends on the meter's temperature and pressure) is never silently treated
# as a volume at reference conditions (0 degC, 101.325 kPa).
UREG.define("normal_cubic_meter = [normal_gas_volume] = Nm3")
UREG.define("million_btu = 1e6 * Btu = MMBtu")
# Standard cubic feet, the US unit of gas volume, get a dimension of their own too: their
# reference conditions differ by program (40 CFR 98 uses 68 degF and 14.7 psia, EIA 60 degF),
# so they convert to no Nm3. A factor set that accepts them states the heat content per scf.
UREG.define("standard_cubic_foot = [standard_gas_volume_us] = scf")
UREG.define("thousand_standard_cubic_feet = 1000 * scf = Mscf")

# Spellings meters commonly send that pint would misread or does not know.
_SPELLINGS = {
    "Nm³": "Nm3",
    "Nm^3": "Nm3",
    "m3": "m**3",
    "m³": "m**3",
    "tonne": "t",
    "tonnes": "t",
}

_UNIT_CACHE_SIZE = 512

CalorificBasis = Literal["gross", "net"]
# A basis named in the unit text: "GJ NCV", "MMBtu (GCV)", "kWh_HHV", "GJ LHV".
_BASIS_WORDS: dict[str, CalorificBasis] = {
    "ncv": "net", "lhv": "net", "net": "net",
    "gcv": "gross", "hhv": "gross", "gross": "gross",
}  # fmt: skip
_BASIS_SUFFIX = re.compile(
    r"^(?P<unit>.*?\S)(?:\s+|_|\s*[(\[]\s*)(?P<basis>ncv|lhv|net|gcv|hhv|gross)\s*[)\]]?$",
    re.IGNORECASE,
)


class Dimension(enum.Enum):
    """The physical kinds of amount the library knows how to convert."""

    MASS = "mass"
    ENERGY = "energy"
    VOLUME = "volume"
    NORMAL_VOLUME = "normal gas volume"
    STANDARD_VOLUME_US = "US standard gas volume (scf)"
    OTHER = "other"


_REFERENCE_UNITS = {
    Dimension.MASS: "kg",
    Dimension.ENERGY: "J",
    Dimension.VOLUME: "L",
    Dimension.NORMAL_VOLUME: "Nm3",
    Dimension.STANDARD_VOLUME_US: "scf",
}


@functools.lru_cache(maxsize=_UNIT_CACHE_SIZE)
def split_basis(text: str) -> tuple[str, CalorificBasis | None]:
    """A unit without its calorific-basis word, and the basis it names (None: none).

    ``"MMBtu GCV"`` -> ``("MMBtu", "gross")``; ``"GJ (NCV)"`` -> ``("GJ", "net")``;
    ``"t"`` -> ``("t", None)``.
    """
    found = _BASIS_SUFFIX.match(text.strip())
    if found is None:
        return text, None
    return found["unit"].strip(), _BASIS_WORDS[found["basis"].lower()]


@functools.lru_cache(maxsize=_UNIT_CACHE_SIZE)
def parse_unit(text: str) -> Any:
    """Parse a unit string into a pint unit, or raise :class:`UnitError`."""
    cleaned = split_basis(text.strip())[0]
    if not cleaned:
        raise UnitError(text, "empty unit")
    cleaned = _SPELLINGS.get(cleaned, cleaned)
    try:
        return UREG.parse_units(cleaned)
    except (pint.errors.PintError, ValueError, TypeError, AttributeError, tokenize.TokenError):
        raise UnitError(text, "not a known unit") from None


@functools.lru_cache(maxsize=_UNIT_CACHE_SIZE)
def dimension_of(text: str) -> Dimension:
    """Classify a unit string by dimension (OTHER for anything not convertible here)."""
    dims = parse_unit(text).dimensionality
    for dimension, reference in _REFERENCE_UNITS.items():
        if dims == parse_unit(reference).dimensionality:
            return dimension
    return Dimension.OTHER


def describe(text: str) -> str:
    """A readable name for a unit's dimension, for error messages."""
    found = dimension_of(text)
    if found is Dimension.OTHER:
        return f"a quantity of dimension {parse_unit(text).dimensionality}"
    return str(found.value)


@functools.lru_cache(maxsize=_UNIT_CACHE_SIZE)
def conversion_factor(from_unit: str, to_unit: str) -> float:
    """How many ``to_unit`` one ``from_unit`` is; raises :class:`UnitError` if impossible.

    ``from_unit`` may carry a scale as sources print it: ``GJ/(10^4 Nm3)``.
    """
    target = parse_unit(to_unit)
    try:
        source = UREG.Quantity(1.0, parse_unit(from_unit))
    except UnitError:
        source = _scaled_quantity(from_unit)
    try:
        return float(source.to(target).magnitude)
    except pint.errors.DimensionalityError:
        raise UnitError(from_unit, f"cannot be converted to {to_unit}") from None


def _scaled_quantity(text: str) -> Any:
    """``GJ/(10^4 Nm3)`` as a quantity (pint refuses scales in a unit, not in an
    expression); raises :class:`UnitError` for anything else it cannot read."""
    cleaned = text.strip()
    for spelling, standard in _SPELLINGS.items():
        cleaned = re.sub(rf"(?<![\w]){re.escape(spelling)}(?![\w*])", standard, cleaned)
    try:
        quantity = UREG.parse_expression(cleaned)
    except (pint.errors.PintError, ValueError, TypeError, AttributeError, tokenize.TokenError):
        raise UnitError(text, "not a known unit") from None
    if not isinstance(quantity, UREG.Quantity):
        raise UnitError(text, "not a unit")
    return quantity


@functools.lru_cache(maxsize=_UNIT_CACHE_SIZE)
def unit_ratio(from_unit: str, to_unit: str) -> float | None:
    """How many ``to_unit`` one ``from_unit`` is, or None when either is unknown or they
    measure different things. A ratio of exactly 1 means two spellings of one unit
    (``tonne`` and ``t``, ``kW*h`` and ``kWh``): the agent accepts those as the same."""
    if split_basis(from_unit)[1] != split_basis(to_unit)[1]:
        return None  # GJ NCV and GJ GCV are not the same amount of fuel
    try:
        return conversion_factor(from_unit, to_unit)
    except UnitError:
        return None
