"""Recompute stored emissions under another factor set version, from stored activity.

Emission points are keyed by (plant, meter, ts, factor_set, factor_version, gwp), so the
recomputed points sit beside the old ones: nothing is overwritten, and queries choose a
version (by default the one the plant's config names now).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pandas as pd

from carbonlink.config import PlantConfig, Settings
from carbonlink.emissions import FactorLibrary, FactorSet
from carbonlink.platform._ingest import emission_record
from carbonlink.storage import Store, StoredReading

__all__ = ["RecomputeResult", "recompute"]

# Readings per store write: bounded memory and request size on long ranges.
RECOMPUTE_WRITE_BATCH: Final = 5_000
_MS_PER_S: Final = 1000


@dataclass(frozen=True, slots=True)
class RecomputeResult:
    plant: str
    factor_set: str
    factor_version: str
    readings: int  # emission points written
    skipped: int  # activity points of output-only, unknown or re-united meters
    co2e_kg: float


def recompute(
    store: Store,
    settings: Settings,
    plant: str,
    *,
    start_ms: int | None,
    end_ms: int | None,
    factor_set: str | None = None,
    library: FactorLibrary | None = None,
) -> RecomputeResult:
    """Write emissions for the plant's stored activity in [start, end) under a factor set.

    Raises ConfigError for an unknown plant or factor set, StoreError from the store.
    """
    config = settings.plant(plant)
    chosen = settings.factor_set(plant, name=factor_set)
    lib = library or FactorLibrary.builtin()
    activity = store.activity(plant, start_ms=start_ms, end_ms=end_ms)
    readings: list[StoredReading] = []
    for meter_id, rows in activity.groupby("meter", sort=True):
        readings += _recomputed(config, str(meter_id), rows, chosen, lib)
    for start in range(0, len(readings), RECOMPUTE_WRITE_BATCH):
        store.write(readings[start : start + RECOMPUTE_WRITE_BATCH])
    return RecomputeResult(
        plant=plant,
        factor_set=chosen.name,
        factor_version=chosen.version,
        readings=len(readings),
        skipped=len(activity) - len(readings),
        co2e_kg=sum(r.emission.co2e_kg for r in readings if r.emission is not None),
    )


def _recomputed(
    plant: PlantConfig, meter_id: str, rows: pd.DataFrame, factor_set: FactorSet, lib: FactorLibrary
) -> list[StoredReading]:
    meter = plant.meter(meter_id)
    if meter is None or meter.activity is None:
        return []  # removed from the config since, or output only: no emissions to redo
    # Readings stored under another unit than the meter reports now are left alone: the
    # factor would be applied to the wrong quantity.
    rows = rows[rows["unit"] == meter.unit]
    factor = factor_set.resolve(lib, meter.activity, meter.unit, region=plant.grid_region)
    source = str(lib.kind_of(meter.activity))
    ts_ms = rows["time"].astype("int64")  # datetime64[ms]: epoch ms
    return [
        StoredReading(
            plant=plant.id,
            meter=meter_id,
            ts_ms=int(ts),
            value=float(value),
            unit=str(unit),
            duration_ms=round(float(duration_s) * _MS_PER_S),
            quality=str(quality),
            emission=emission_record(
                factor.apply(float(value)), factor_set, source, factor, meter.accuracy_pct
            ),
        )
        for ts, value, unit, duration_s, quality in zip(
            ts_ms, rows["value"], rows["unit"], rows["duration_s"], rows["quality"], strict=True
        )
    ]
