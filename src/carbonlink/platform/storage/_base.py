"""What the platform stores, and the interface every storage backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import pandas as pd

ACTIVITY_MEASUREMENT: Final = "activity"
EMISSIONS_MEASUREMENT: Final = "emissions"

ACTIVITY_FIELDS: Final = ("value", "duration_s")
EMISSION_FIELDS: Final = (
    "co2_kg",
    "ch4_kg",
    "n2o_kg",
    "co2e_kg",
    "biogenic_co2_kg",
    "converted_amount",
)
SERIES_FIELDS: Final = ACTIVITY_FIELDS + EMISSION_FIELDS

# Column names and dtypes of the frames that ``Store.emissions`` and ``Store.activity``
# return, identical on every backend so the aggregation code is written once.
EMISSION_TAGS: Final = (
    "activity", "source", "scope", "category", "factor_set", "factor_version", "gwp",
)  # fmt: skip
EMISSION_COLUMNS: Final[dict[str, str]] = {
    "time": "datetime64[ms, UTC]",
    "plant": "str",
    "meter": "str",
    "activity": "str",
    "source": "str",
    "scope": "int64",
    "category": "str",
    "factor_set": "str",
    "factor_version": "str",
    "gwp": "str",
    "converted_amount": "float64",
    "converted_unit": "str",
    "co2_kg": "float64",
    "ch4_kg": "float64",
    "n2o_kg": "float64",
    "co2e_kg": "float64",
    "biogenic_co2_kg": "float64",
}
ACTIVITY_COLUMNS: Final[dict[str, str]] = {
    "time": "datetime64[ms, UTC]",
    "plant": "str",
    "meter": "str",
    "value": "float64",
    "unit": "str",
    "duration_s": "float64",
    "quality": "str",
}


@dataclass(frozen=True, slots=True)
class Emission:
    """The emissions of one reading under one factor set version."""

    activity: str
    source: str  # fuel | electricity | heat | process
    scope: int
    category: str
    factor_set: str
    factor_version: str
    gwp: str
    converted_amount: float
    converted_unit: str
    co2_kg: float
    ch4_kg: float
    n2o_kg: float
    co2e_kg: float
    biogenic_co2_kg: float


@dataclass(frozen=True, slots=True)
class StoredReading:
    """One validated reading and, when its meter is an emission source, its emissions.

    Identity is (plant, meter, ts_ms): a re-delivered reading overwrites itself.
    """

    plant: str
    meter: str
    ts_ms: int
    value: float
    unit: str
    duration_ms: int
    quality: str
    emission: Emission | None


class Store(Protocol):
    """A storage backend. Calls block; the platform runs them on one worker thread."""

    url: str

    def write(self, readings: Sequence[StoredReading]) -> None:
        """Store readings idempotently. Raises StoreError (retryable when transient)."""

    def series(
        self,
        plant: str,
        *,
        field: str = "co2e_kg",
        meter: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        factor_set: str | None = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame:
        """Points of one field: columns ``time`` (UTC), ``plant``, ``meter``, ``value``.

        ``factor_set``/``factor_version`` narrow emission fields to one factor set
        version (after a recompute several are stored side by side); activity fields
        ignore them.
        """

    def emissions(
        self,
        plant: str | None = None,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        factor_set: str | None = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame:
        """Emission points with their tags, columns ``EMISSION_COLUMNS``, in time order."""

    def activity(
        self,
        plant: str,
        *,
        meter: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        """Activity points (emission sources and output meters), ``ACTIVITY_COLUMNS``."""

    def totals(self, *, start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
        """Per plant: ``plant``, ``readings``, ``co2e_kg`` over the range."""

    def count_readings(self, plant: str | None = None) -> int:
        """Stored activity readings (all plants when ``plant`` is None)."""

    def time_range(self, plant: str | None = None) -> tuple[int, int] | None:
        """(first, last) reading time in epoch ms, or None when nothing is stored."""

    def close(self) -> None: ...


def empty_series() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.Series(dtype="datetime64[ms, UTC]"),
            "plant": pd.Series(dtype="str"),
            "meter": pd.Series(dtype="str"),
            "value": pd.Series(dtype="float64"),
        }
    )


def typed_frame(columns: dict[str, str], data: pd.DataFrame | None = None) -> pd.DataFrame:
    """``data`` (or nothing) with exactly ``columns`` in that order and with those dtypes.

    ``time`` may arrive as epoch ms (numbers) or as timestamps; either becomes UTC.
    """
    if data is None or data.empty:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})
    frame = data[list(columns)].copy()
    time = frame["time"]
    if pd.api.types.is_numeric_dtype(time):
        frame["time"] = pd.to_datetime(time, unit="ms", utc=True)
    else:
        frame["time"] = pd.to_datetime(time, utc=True)
    frame = frame.astype(columns)
    return frame.sort_values(["time", "plant", "meter"], ignore_index=True)


def readings_ending_in(start_ms: int, end_ms: int) -> tuple[int, int]:
    """The ``start_ms``/``end_ms`` store filter (start <= ts < end) that selects exactly the
    readings whose interval lies in the window (start, end]: a reading's interval ends at
    its timestamp, so one stamped on ``end_ms`` belongs in, one on ``start_ms`` does not."""
    return start_ms + 1, end_ms + 1


def check_field(field: str) -> str:
    if field not in SERIES_FIELDS:
        raise ValueError(f"unknown field {field!r}; expected one of {', '.join(SERIES_FIELDS)}")
    return field
