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
    ) -> pd.DataFrame:
        """Points of one field: columns ``time`` (UTC), ``plant``, ``meter``, ``value``."""

    def totals(self, *, start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
        """Per plant: ``plant``, ``readings``, ``co2e_kg`` over the range."""

    def count_readings(self, plant: str | None = None) -> int:
        """Stored activity readings (all plants when ``plant`` is None)."""

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


def check_field(field: str) -> str:
    if field not in SERIES_FIELDS:
        raise ValueError(f"unknown field {field!r}; expected one of {', '.join(SERIES_FIELDS)}")
    return field
