"""A seeded fleet run offline: the samples the meters would publish, as one DataFrame.

The same ``Fleet`` the live simulators drive over MQTT, stepped as fast as numpy goes and
without a broker, for notebooks and tests: the same seed and start give the same samples
as ``carbonlink simulate --seed`` (before the wire rounds them), whatever else is running.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd

from carbonlink.config import Settings
from carbonlink.simulators._fleet import Fleet
from carbonlink.simulators._runner import emission_factors

__all__ = ["SAMPLE_COLUMNS", "run_offline"]

SAMPLE_COLUMNS: Final = ("time", "plant", "meter", "activity", "reading", "value", "unit")


def run_offline(
    settings: Settings,
    *,
    start_ms: int,
    duration_s: float,
    seed: int = 0,
    plants: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every sample of ``plants`` (all configured ones by default) from ``start_ms`` for
    ``duration_s`` simulated seconds, columns ``SAMPLE_COLUMNS``: ``value`` is what the
    meter shows (a counter's register, an interval's amount) in ``unit``."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s!r}")
    chosen = [settings.plant(p) for p in plants] if plants else list(settings.plants.values())
    fleet = Fleet(chosen, seed, start_ms, emission_factors(settings.factor_set))
    ticks = fleet.advance(start_ms + round(duration_s * 1000))
    if not ticks:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SAMPLE_COLUMNS})
    refs = fleet.meter_refs
    index = np.concatenate([t.meters for t in ticks])
    times = np.concatenate([np.full(len(t.meters), t.ts_ms, dtype=np.int64) for t in ticks])
    values = np.concatenate([t.values for t in ticks])
    plant_ids = np.array([p.id for p, _ in refs], dtype=object)
    meter_ids = np.array([m.id for _, m in refs], dtype=object)
    activities = np.array([m.activity or "" for _, m in refs], dtype=object)
    kinds = np.array([m.reading.value for _, m in refs], dtype=object)
    units = np.array([m.unit for _, m in refs], dtype=object)
    return pd.DataFrame(
        {
            "time": pd.to_datetime(times, unit="ms", utc=True),
            "plant": plant_ids[index],
            "meter": meter_ids[index],
            "activity": activities[index],
            "reading": kinds[index],
            "value": values,
            "unit": units[index],
        }
    )
