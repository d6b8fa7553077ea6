"""95% intervals of totals, windows and KPIs: IPCC 2006 Vol. 1 Ch. 3, Approach 1.

Every stored emission point carries the half-widths of its CO2e's 95% interval from
the emission factor (``u95_factor_lower_kg``/``u95_factor_upper_kg``: the published
ranges, asymmetric) and from the meter (``u95_meter_kg``: its accuracy class). Approach 1
propagates them by error propagation: Eq. 3.1 for products (relative half-widths add in
quadrature, as each point's figures already do) and Eq. 3.2 for sums (absolute
half-widths of independent terms add in quadrature). Eq. 3.2 holds for independent
terms only, so correlated ones are summed first (IPCC 2006 Vol. 1 Ch. 3, section 3.2.3.1:
combine correlated categories before combining across them):

- **One factor, one error.** A default factor applied to many readings is wrong by the
  same amount for all of them: its half-widths add linearly over every point of the same
  activity, across meters and plants alike (an IPCC default is the same number
  everywhere). This slightly overstates where one activity is metered both by mass (NCV
  and CO2 factor ranges) and by energy (CO2 factor range only).
- **One meter, one error.** An accuracy class bounds a systematic (calibration) error,
  so a meter's half-widths add linearly over its readings.
- **Different factors and different meters are independent**, and so are a factor and a
  meter: their sums combine in quadrature.
- Lower and upper sides are combined separately.
- Ratios (carbon intensity and the like) are linearised: each error source shifts
  numerator and denominator together, so an output meter whose readings also make process
  CO2 (clinker) cancels where it should.
- GWP values, and CH4 and N2O factors (no range carried), count as exact; a point stored
  without uncertainty fields makes the interval of its group unknown (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import pandas as pd

__all__ = [
    "LOWER_SUFFIX",
    "UPPER_SUFFIX",
    "Contributions",
    "Interval",
    "emission_contributions",
    "interval_of",
    "meter_contributions",
    "ratio_interval",
    "scaled",
    "window_intervals",
]

LOWER_SUFFIX: Final = "_lower95"
UPPER_SUFFIX: Final = "_upper95"
FACTOR_LOWER: Final = "u95_factor_lower_kg"
FACTOR_UPPER: Final = "u95_factor_upper_kg"
METER: Final = "u95_meter_kg"

# Error source -> (fall of the quantity when the source sits at its lower bound, rise
# when at its upper bound), both >= 0. Keys: ("factor", activity), ("meter", plant, meter),
# ("ncv", activity).
Contributions = dict[tuple[str, ...], tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Interval:
    """A value with the half-widths of its 95% interval (NaN: not known)."""

    value: float
    lower: float
    upper: float

    @property
    def low(self) -> float:
        return self.value - self.lower

    @property
    def high(self) -> float:
        return self.value + self.upper


def emission_contributions(points: pd.DataFrame) -> Contributions | None:
    """Per error source, the summed half-widths of the points' CO2e (None: some point
    has no uncertainty stored)."""
    if points[[FACTOR_LOWER, FACTOR_UPPER, METER]].isna().to_numpy().any():
        return None
    out: Contributions = {}
    factors = points.groupby("activity", sort=True)[[FACTOR_LOWER, FACTOR_UPPER]].sum()
    for activity, row in factors.iterrows():
        out["factor", str(activity)] = (float(row[FACTOR_LOWER]), float(row[FACTOR_UPPER]))
    meters = points.groupby(["plant", "meter"], sort=True)[METER].sum()
    for key, half in meters.items():
        where = tuple(str(part) for part in key)  # type: ignore[attr-defined]
        out["meter", *where] = (float(half), float(half))
    return out


def meter_contributions(
    amounts: pd.DataFrame, accuracy_pct: Mapping[str, float], plant: str, value: str = "value"
) -> Contributions:
    """Half-widths a quantity summed from ``amounts`` (columns ``meter`` and ``value``)
    gets from each meter's accuracy (% of reading, 95%)."""
    out: Contributions = {}
    for meter, total in amounts.groupby("meter", sort=True)[value].sum().items():
        half = abs(float(total)) * accuracy_pct[str(meter)] / 100.0
        out["meter", plant, str(meter)] = (half, half)
    return out


def scaled(contributions: Contributions | None, factor: float) -> Contributions | None:
    """The contributions of ``factor`` times the quantity (factor > 0)."""
    if contributions is None:
        return None
    return {k: (down * factor, up * factor) for k, (down, up) in contributions.items()}


def interval_of(value: float, contributions: Contributions | None) -> Interval:
    """Independent sources combined in quadrature, each side on its own (Eq. 3.2)."""
    if contributions is None:
        return Interval(value, math.nan, math.nan)
    lower = math.sqrt(sum(down * down for down, _ in contributions.values()))
    upper = math.sqrt(sum(up * up for _, up in contributions.values()))
    return Interval(value, lower, upper)


def ratio_interval(
    numerator: float,
    numerator_sources: Contributions | None,
    denominator: float,
    denominator_sources: Contributions | None,
) -> Interval | None:
    """The interval of numerator / denominator, linearised per error source; None where
    the ratio is undefined (zero denominator)."""
    if denominator == 0:
        return None
    ratio = numerator / denominator
    if numerator_sources is None or denominator_sources is None:
        return Interval(ratio, math.nan, math.nan)
    out: Contributions = {}
    for key in numerator_sources.keys() | denominator_sources.keys():
        n_down, n_up = numerator_sources.get(key, (0.0, 0.0))
        d_down, d_up = denominator_sources.get(key, (0.0, 0.0))
        at_lower = (-n_down + ratio * d_down) / denominator
        at_upper = (n_up - ratio * d_up) / denominator
        out[key] = (max(0.0, -at_lower, -at_upper), max(0.0, at_lower, at_upper))
    return interval_of(ratio, out)


def window_intervals(
    points: pd.DataFrame, keys: Sequence[str], value: str = "co2e_kg"
) -> pd.DataFrame:
    """Per group of ``keys``: ``value``, and the bounds ``<value>_lower95`` and
    ``<value>_upper95`` of its 95% interval (NaN where a point has no uncertainty)."""
    frame = points if keys else points.assign(_all=0)
    group = list(keys) if keys else ["_all"]
    unknown = frame[[FACTOR_LOWER, FACTOR_UPPER, METER]].isna().any(axis=1)
    factor = frame.groupby([*group, "activity"], sort=True)[[FACTOR_LOWER, FACTOR_UPPER]].sum()
    factor_sq = (factor**2).groupby(level=list(range(len(group)))).sum()
    meter = frame.groupby([*group, "plant", "meter"], sort=True)[METER].sum()
    meter_sq = (meter**2).groupby(level=list(range(len(group)))).sum()
    totals = (
        frame.assign(_unknown=unknown)
        .groupby(group, sort=True)
        .agg(total=pd.NamedAgg(value, "sum"), unknown=pd.NamedAgg("_unknown", "max"))
    )
    lower = (factor_sq[FACTOR_LOWER] + meter_sq).pow(0.5).reindex(totals.index)
    upper = (factor_sq[FACTOR_UPPER] + meter_sq).pow(0.5).reindex(totals.index)
    lower = lower.mask(totals["unknown"])
    upper = upper.mask(totals["unknown"])
    result = pd.DataFrame(
        {
            f"{value}{LOWER_SUFFIX}": totals["total"] - lower,
            f"{value}{UPPER_SUFFIX}": totals["total"] + upper,
        },
        index=totals.index,
    )
    if not keys:
        return result.reset_index(drop=True)
    return result.reset_index()
