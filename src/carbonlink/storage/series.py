"""One stored field as a table that says what it holds: the field, its unit, and the
factor set version it was counted under (what ``carbonlink query`` and ``/series`` show).
"""

from __future__ import annotations

from typing import Final

import pandas as pd

from carbonlink.storage import SERIES_FIELDS, Store
from carbonlink.storage._base import ACTIVITY_FIELDS

__all__ = ["FIELD_UNITS", "series_table"]

# Units of the stored fields; `value` (the reading as metered) and `converted_amount` (in
# the factor library's canonical unit) carry theirs per row.
FIELD_UNITS: Final[dict[str, str]] = {
    "duration_s": "s",
    "co2_kg": "kg CO2",
    "ch4_kg": "kg CH4",
    "n2o_kg": "kg N2O",
    "co2e_kg": "kg CO2e",
    "biogenic_co2_kg": "kg CO2 (biogenic, not in CO2e)",
    "u95_factor_lower_kg": "kg CO2e",
    "u95_factor_upper_kg": "kg CO2e",
    "u95_meter_kg": "kg CO2e",
}


def series_table(
    store: Store,
    plant: str,
    field: str,
    *,
    factor_set: str,
    factor_version: str,
    meter: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> pd.DataFrame:
    """One row per reading: ``time``, ``plant``, ``meter``, the field under its own name,
    ``unit``, and for emission fields the ``factor_set`` and ``factor_version`` counted
    (one version: a recompute that stored a second one beside it is not shown twice)."""
    if field not in SERIES_FIELDS:
        raise ValueError(f"unknown field {field!r}; expected one of {', '.join(SERIES_FIELDS)}")
    if field in ACTIVITY_FIELDS:
        frame = store.activity(plant, meter=meter, start_ms=start_ms, end_ms=end_ms)
        unit = frame["unit"] if field == "value" else FIELD_UNITS[field]
        table = frame[["time", "plant", "meter", field]].assign(unit=unit)
        return table.reset_index(drop=True)
    frame = store.emissions(
        plant,
        start_ms=start_ms,
        end_ms=end_ms,
        factor_set=factor_set,
        factor_version=factor_version,
    )
    if meter is not None:
        frame = frame[frame["meter"] == meter]
    unit = frame["converted_unit"] if field == "converted_amount" else FIELD_UNITS[field]
    table = frame[["time", "plant", "meter", field]].assign(
        unit=unit, factor_set=frame["factor_set"], factor_version=frame["factor_version"]
    )
    return table.reset_index(drop=True)
