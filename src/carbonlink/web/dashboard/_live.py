"""What the dashboard streams: the fleet overview, and each plant's new windows.

Everything here blocks on the store; the event streams run it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

import pandas as pd

from carbonlink.config import PlantConfig
from carbonlink.emissions import FactorSet
from carbonlink.storage import Store
from carbonlink.storage.windows import PlantKpis, ncv_ranges_of, plant_kpis
from carbonlink.web.dashboard._frames import (
    KG_PER_T,
    MS_PER_HOUR,
    WINDOW_MS,
    ChartWindows,
    chart_windows,
    finite,
)
from carbonlink.web.dashboard._layout import PlantLayout

__all__ = [
    "RANGE_MS",
    "RATE_SPAN_MS",
    "BrowserFeed",
    "PlantView",
    "overview_row",
    "start_of_local_day",
]

RATE_SPAN_MS: Final = 15 * 60 * 1000  # the live CO2e rate averages this much of the newest data
MEASURED: Final = "measured"
RANGE_MS: Final[dict[str, int]] = {
    "1h": MS_PER_HOUR,
    "6h": 6 * MS_PER_HOUR,
    "24h": 24 * MS_PER_HOUR,
    "7d": 7 * 24 * MS_PER_HOUR,
}


@dataclass(frozen=True, slots=True)
class PlantView:
    """One plant as the dashboard reads it: config, chart layout, current factor set."""

    config: PlantConfig
    layout: PlantLayout
    factor_set: FactorSet

    def kpis(self, emissions: pd.DataFrame, activity: pd.DataFrame) -> PlantKpis:
        """The API's KPIs, with the same 95% intervals."""
        ranges = ncv_ranges_of(self.config, self.factor_set)
        return plant_kpis(self.config, emissions, activity, ranges)

    def emissions(self, store: Store, start_ms: int | None) -> pd.DataFrame:
        return store.emissions(
            self.config.id,
            start_ms=start_ms,
            factor_set=self.factor_set.name,
            factor_version=self.factor_set.version,
        )


def start_of_local_day(now_ms: int, timezone: str) -> int:
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone))
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def _ms(stamp: pd.Timestamp) -> int:
    return int(stamp.value // 1_000_000)  # ns -> ms


def _newest_ms(emissions: pd.DataFrame) -> int | None:
    return None if emissions.empty else _ms(emissions["time"].max())


def _intervals(kpis: PlantKpis) -> dict[str, list[float | None]]:
    """Each KPI's 95% interval as [low, high] (null where not known)."""
    return {k: [finite(i.low), finite(i.high)] for k, i in sorted(kpis.intervals.items())}


def _kpi_record(
    view: PlantView, emissions: pd.DataFrame, activity: pd.DataFrame
) -> dict[str, object]:
    kpis = view.kpis(emissions, activity)
    return {
        "intervals": _intervals(kpis),
        "total_tco2e": finite(kpis.total_tco2e),
        "tco2e_by_scope": {str(s): finite(v) for s, v in sorted(kpis.tco2e_by_scope.items())},
        "output": finite(kpis.output),
        "output_unit": kpis.output_unit,
        "carbon_intensity": finite(kpis.carbon_intensity),
        "carbon_productivity": finite(kpis.carbon_productivity),
        "energy_gj": finite(kpis.energy_gj),
        "energy_intensity": finite(kpis.energy_intensity),
        "electricity_kwh": finite(kpis.electricity_kwh),
        "biogenic_tco2": finite(kpis.biogenic_tco2),
        "energy_structure": {a: finite(v) for a, v in kpis.energy_structure.items()},
    }


def _rate_t_per_h(emissions: pd.DataFrame, newest: int, period_ms: int) -> float:
    """t CO2e/h over the newest ``RATE_SPAN_MS`` of data.

    With less data than that (a plant just started, or just after midnight) it averages
    over what is there, each reading standing for one sample period.
    """
    since = pd.Timestamp(newest - RATE_SPAN_MS, unit="ms", tz="UTC")
    recent = emissions[emissions["time"] > since]
    span_ms = min(RATE_SPAN_MS, newest - _ms(recent["time"].min()) + period_ms)
    return float(recent["co2e_kg"].sum()) / KG_PER_T / (span_ms / MS_PER_HOUR)


def overview_row(
    store: Store,
    view: PlantView,
    now_ms: int,
    status: Mapping[str, str],
    rejected_by_plant: Mapping[str, int] | None,
) -> dict[str, object]:
    """Today's figures of one plant, "today" being the plant's local calendar day."""
    plant = view.config.id
    day_start = start_of_local_day(now_ms, view.config.timezone)
    emissions = view.emissions(store, day_start)
    activity = store.activity(plant, start_ms=day_start)
    newest = _newest_ms(emissions)
    rate = None if newest is None else _rate_t_per_h(emissions, newest, view.layout.period_ms)
    kpis = view.kpis(emissions, activity)
    return {
        "plant": plant,
        "factor_version": view.factor_set.label,
        "today_tco2e_interval": _intervals(kpis).get("total_tco2e"),
        "name": view.config.name,
        "timezone": view.config.timezone,
        "status": status.get(plant, "unknown"),
        "rate_tco2e_h": finite(rate),
        "today_tco2e": finite(float(emissions["co2e_kg"].sum()) / KG_PER_T),
        "carbon_intensity": finite(kpis.carbon_intensity),
        "output_unit": kpis.output_unit,
        "newest_ms": newest,
        "readings_today": len(activity),
        "estimated_today": int((activity["quality"] != MEASURED).sum()),
        "rejected": None if rejected_by_plant is None else int(rejected_by_plant.get(plant, 0)),
    }


class BrowserFeed:
    """One browser's view of one plant: history once, then only windows it has not seen.

    A window is sent once it is complete, i.e. the plant's newest data is a grace period
    past its end, so the browser can append it and never has to change a drawn point.
    The window still filling is sent separately, with the KPIs, as ``current``.
    """

    def __init__(
        self,
        store: Store,
        view: PlantView,
        window: str,
        range_name: str,
        clock: Callable[[], int],
    ) -> None:
        self._store = store
        self._view = view
        self._window = window
        self._window_ms = WINDOW_MS[window]
        self._range_ms = RANGE_MS[range_name]
        self._clock = clock
        self._sent_until_ms = 0  # end of the newest window the browser holds
        self._newest_ms: int | None = None

    @property
    def max_points(self) -> int:
        return self._range_ms // self._window_ms

    def history(self) -> dict[str, object]:
        start = self._clock() - self._range_ms
        start -= start % self._window_ms  # from a window boundary, so the first is whole
        self._sent_until_ms = start
        emissions = self._view.emissions(self._store, start)
        complete = self._take_complete(emissions)
        return {
            "window": self._window,
            "window_ms": self._window_ms,
            "max_points": self.max_points,
            "windows": complete.as_record(),
        } | self._current(emissions, start)

    def poll(self) -> list[tuple[str, dict[str, object]]]:
        """Events since the last call: ``append`` (complete windows) and ``current``."""
        emissions = self._view.emissions(self._store, self._sent_until_ms)
        newest = _newest_ms(emissions)
        if newest is None or newest == self._newest_ms:
            return []
        events: list[tuple[str, dict[str, object]]] = []
        complete = self._take_complete(emissions)
        if len(complete):
            events.append(("append", {"windows": complete.as_record()}))
        span_start = self._clock() - self._range_ms
        span = self._view.emissions(self._store, span_start)
        events.append(("current", self._current(span, span_start)))
        return events

    def _take_complete(self, emissions: pd.DataFrame) -> ChartWindows:
        windows = chart_windows(emissions, self._view.layout, self._window)
        newest = _newest_ms(emissions)
        if newest is None:
            return windows
        self._newest_ms = newest
        settled = newest - self._view.layout.grace_ms
        keep = [
            self._sent_until_ms <= t and t + self._window_ms <= settled for t in windows.start_ms
        ]
        complete = windows.select(keep)
        if len(complete):
            self._sent_until_ms = complete.start_ms[-1] + self._window_ms
        return complete

    def _current(self, emissions: pd.DataFrame, start_ms: int) -> dict[str, object]:
        """KPIs over the selected range and the window(s) still filling."""
        filling = emissions["time"] > pd.Timestamp(self._sent_until_ms, unit="ms", tz="UTC")
        open_windows = chart_windows(emissions[filling], self._view.layout, self._window)
        activity = self._store.activity(self._view.config.id, start_ms=start_ms)
        return {
            "newest_ms": _newest_ms(emissions),
            "open": open_windows.as_record(),
            "kpis": _kpi_record(self._view, emissions, activity),
        }
