"""Window sums shaped for charts: one list per trace, rates per hour, local time labels.

Sums become rates (t CO2e/h, GJ/h) so that bars of 1-minute and 1-day windows read on
the same scale. Labels are wall-clock strings in the plant's time zone because plotly.js
has no time zones: it draws a naive time exactly as written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import pandas as pd

from carbonlink.storage.windows import ENERGY_GJ_PER_UNIT, WINDOWS, window_start
from carbonlink.web.dashboard._layout import PlantLayout

__all__ = [
    "KG_PER_T",
    "LABEL_FORMAT",
    "MS_PER_HOUR",
    "WINDOW_MS",
    "ChartWindows",
    "chart_windows",
    "finite",
    "local_labels",
]

KG_PER_T: Final = 1000.0
MS_PER_HOUR: Final = 3_600_000
LABEL_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
WINDOW_MS: Final[dict[str, int]] = {
    name: int(pd.Timedelta(offset).total_seconds() * 1000) for name, offset in WINDOWS.items()
}


def finite(value: float | None) -> float | None:
    """JSON has no NaN: undefined numbers travel as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def local_labels(times_ms: list[int], timezone: str) -> list[str]:
    stamps = pd.to_datetime(pd.Series(times_ms, dtype="int64"), unit="ms", utc=True)
    return stamps.dt.tz_convert(timezone).dt.strftime(LABEL_FORMAT).tolist()


@dataclass(slots=True)
class ChartWindows:
    """Windows in time order; every trace list is as long as ``start_ms``."""

    start_ms: list[int] = field(default_factory=list)
    x: list[str] = field(default_factory=list)
    source: dict[str, list[float]] = field(default_factory=dict)
    scope: dict[str, list[float]] = field(default_factory=dict)
    energy: dict[str, list[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.start_ms)

    def select(self, keep: list[bool]) -> ChartWindows:
        def pick(values: list[float]) -> list[float]:
            return [v for v, k in zip(values, keep, strict=True) if k]

        return ChartWindows(
            start_ms=[t for t, k in zip(self.start_ms, keep, strict=True) if k],
            x=[x for x, k in zip(self.x, keep, strict=True) if k],
            source={name: pick(v) for name, v in self.source.items()},
            scope={name: pick(v) for name, v in self.scope.items()},
            energy={name: pick(v) for name, v in self.energy.items()},
        )

    def as_record(self) -> dict[str, object]:
        return {
            "start_ms": self.start_ms,
            "x": self.x,
            "source": self.source,
            "scope": self.scope,
            "energy": self.energy,
        }


def _per_hour(
    frame: pd.DataFrame, index: pd.Index, columns: list[str], scale: float
) -> dict[str, list[float]]:
    table = frame.reindex(index=index, columns=columns, fill_value=0.0).fillna(0.0) * scale
    return {str(c): [float(v) for v in table[c]] for c in columns}


def chart_windows(emissions: pd.DataFrame, layout: PlantLayout, window: str) -> ChartWindows:
    """CO2e by source and scope (t/h) and energy by carrier (GJ/h) per ``window``."""
    if emissions.empty:
        return ChartWindows(
            source={s: [] for s in layout.sources},
            scope={str(s): [] for s in layout.scopes},
            energy={c: [] for c in layout.carriers},
        )
    frame = emissions.assign(window=window_start(emissions["time"], window))
    per_hour = MS_PER_HOUR / WINDOW_MS[window]
    by_source = frame.pivot_table(index="window", columns="source", values="co2e_kg", aggfunc="sum")
    by_scope = frame.pivot_table(index="window", columns="scope", values="co2e_kg", aggfunc="sum")
    by_scope.columns = [str(c) for c in by_scope.columns]
    gj_per_unit = frame["converted_unit"].map(ENERGY_GJ_PER_UNIT)
    energy = frame.assign(gj=frame["converted_amount"] * gj_per_unit).dropna(subset=["gj"])
    by_carrier = energy.pivot_table(index="window", columns="activity", values="gj", aggfunc="sum")
    index = by_source.index.union(by_scope.index)
    starts = [int(t.value // 1_000_000) for t in index]  # ns -> ms
    return ChartWindows(
        start_ms=starts,
        x=local_labels(starts, layout.timezone),
        source=_per_hour(by_source, index, list(layout.sources), per_hour / KG_PER_T),
        scope=_per_hour(by_scope, index, [str(s) for s in layout.scopes], per_hour / KG_PER_T),
        energy=_per_hour(by_carrier, index, list(layout.carriers), per_hour),
    )
