"""What the platform stores, and the interface every storage backend implements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

ACTIVITY_MEASUREMENT: Final = "activity"
EMISSIONS_MEASUREMENT: Final = "emissions"
# The factor set and version each plant counts under now (one series per plant), so
# readers without the config (Grafana, InfluxQL) pick the same points as the API.
ASSIGNMENT_MEASUREMENT: Final = "factor_assignment"
SEQUENCES_MEASUREMENT: Final = "telemetry_sequences"
"""One point per telemetry batch received, keyed (agent, seq): whichever worker of a
shared group received it, so that gaps are counted over all of them (``sequence_gaps``)."""

# Half-widths of the 95% interval of co2e_kg from the emission factors (lower and upper
# side: IPCC's ranges are asymmetric) and from the meter's accuracy. Stored per point so
# every reader can combine them the same way (platform/_uncertainty.py).
UNCERTAINTY_FIELDS: Final = ("u95_factor_lower_kg", "u95_factor_upper_kg", "u95_meter_kg")

ACTIVITY_FIELDS: Final = ("value", "duration_s")
EMISSION_FIELDS: Final = (
    "co2_kg",
    "ch4_kg",
    "n2o_kg",
    "co2e_kg",
    "biogenic_co2_kg",
    "converted_amount",
    *UNCERTAINTY_FIELDS,
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
    "u95_factor_lower_kg": "float64",
    "u95_factor_upper_kg": "float64",
    "u95_meter_kg": "float64",
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
    """The emissions of one reading under one factor set version.

    ``u95_*`` are half-widths of the 95% interval of ``co2e_kg`` (see UNCERTAINTY_FIELDS).
    """

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
    u95_factor_lower_kg: float = 0.0
    u95_factor_upper_kg: float = 0.0
    u95_meter_kg: float = 0.0


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


@dataclass(frozen=True, slots=True)
class EmissionTags:
    """What every emission point of one meter under one factor set version shares."""

    activity: str
    source: str
    scope: int
    category: str
    factor_set: str
    factor_version: str
    gwp: str
    converted_unit: str


# Columns of ``StoredBatch.numbers``, in this order.
EMISSION_NUMBERS: Final = (
    "converted_amount", "co2_kg", "ch4_kg", "n2o_kg", "co2e_kg", "biogenic_co2_kg",
    *UNCERTAINTY_FIELDS,
)  # fmt: skip
FloatMatrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """Many readings as columns: what the platform's hot path passes to a store.

    One Python object per column instead of two dataclasses per reading. Row i of every
    list is reading i; ``tags[i]`` is None for a reading without emissions (an output-only
    meter), and then row i of ``numbers`` (one column per ``EMISSION_NUMBERS``) is zero.
    ``readings()`` and ``from_readings()`` convert losslessly to and from
    ``StoredReading``.
    """

    plant: list[str]
    meter: list[str]
    ts_ms: list[int]
    value: list[float]
    unit: list[str]
    duration_ms: list[int]
    quality: list[str]
    tags: list[EmissionTags | None]
    numbers: FloatMatrix

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def empty(cls) -> StoredBatch:
        return cls([], [], [], [], [], [], [], [], np.zeros((0, len(EMISSION_NUMBERS))))

    @classmethod
    def from_readings(cls, readings: Sequence[StoredReading]) -> StoredBatch:
        numbers = np.zeros((len(readings), len(EMISSION_NUMBERS)))
        tags: list[EmissionTags | None] = []
        for row, reading in enumerate(readings):
            e = reading.emission
            if e is None:
                tags.append(None)
                continue
            tags.append(
                EmissionTags(
                    e.activity, e.source, e.scope, e.category, e.factor_set, e.factor_version,
                    e.gwp, e.converted_unit,
                )
            )  # fmt: skip
            numbers[row] = (
                e.converted_amount, e.co2_kg, e.ch4_kg, e.n2o_kg, e.co2e_kg, e.biogenic_co2_kg,
                e.u95_factor_lower_kg, e.u95_factor_upper_kg, e.u95_meter_kg,
            )  # fmt: skip
        return cls(
            [r.plant for r in readings],
            [r.meter for r in readings],
            [r.ts_ms for r in readings],
            [r.value for r in readings],
            [r.unit for r in readings],
            [r.duration_ms for r in readings],
            [r.quality for r in readings],
            tags,
            numbers,
        )

    @staticmethod
    def concat(batches: Sequence[StoredBatch]) -> StoredBatch:
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return StoredBatch.empty()
        return StoredBatch(
            [p for b in batches for p in b.plant],
            [m for b in batches for m in b.meter],
            [t for b in batches for t in b.ts_ms],
            [v for b in batches for v in b.value],
            [u for b in batches for u in b.unit],
            [d for b in batches for d in b.duration_ms],
            [q for b in batches for q in b.quality],
            [t for b in batches for t in b.tags],
            np.concatenate([b.numbers for b in batches]),
        )

    def take(self, rows: Iterable[int]) -> StoredBatch:
        """The given rows, in that order."""
        rows = list(rows)
        return StoredBatch(
            [self.plant[r] for r in rows],
            [self.meter[r] for r in rows],
            [self.ts_ms[r] for r in rows],
            [self.value[r] for r in rows],
            [self.unit[r] for r in rows],
            [self.duration_ms[r] for r in rows],
            [self.quality[r] for r in rows],
            [self.tags[r] for r in rows],
            self.numbers[rows] if rows else np.zeros((0, len(EMISSION_NUMBERS))),
        )

    def readings(self) -> list[StoredReading]:
        """One StoredReading per row (for stores and tools without a columnar path)."""
        out = []
        rows = zip(
            self.plant, self.meter, self.ts_ms, self.value, self.unit, self.duration_ms,
            self.quality, self.tags, self.numbers.tolist(), strict=True,
        )  # fmt: skip
        for plant, meter, ts_ms, value, unit, duration_ms, quality, tags, numbers in rows:
            emission = None
            if tags is not None:
                amount, co2, ch4, n2o, co2e, biogenic, u_low, u_high, u_meter = numbers
                emission = Emission(
                    tags.activity, tags.source, tags.scope, tags.category, tags.factor_set,
                    tags.factor_version, tags.gwp, amount, tags.converted_unit, co2, ch4, n2o,
                    co2e, biogenic, u_low, u_high, u_meter,
                )  # fmt: skip
            out.append(
                StoredReading(plant, meter, ts_ms, value, unit, duration_ms, quality, emission)
            )
        return out


# Plant -> (factor set, version) to count: every total is taken under exactly one version
# per plant, so a recompute that stored a second version beside the first counts once.
FactorVersions = Mapping[str, tuple[str, str]]


class Store(Protocol):
    """A storage backend. Calls block; the platform runs them on worker threads, and up to
    ``platform.write_concurrency`` ``write_batch`` calls at once, so writes must be
    thread-safe (SQLite serialises them under a lock; the HTTP clients pool connections)."""

    url: str

    def write(self, readings: Sequence[StoredReading]) -> None:
        """Store readings idempotently. Raises StoreError (retryable when transient)."""

    def write_batch(self, batch: StoredBatch) -> None:
        """:meth:`write` for columns: the same points, without an object per reading."""

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

    def totals(
        self,
        versions: FactorVersions,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        """Per plant of ``versions``: ``plant``, ``readings`` (activity points),
        ``factor_set``, ``factor_version`` and ``co2e_kg`` under that version only."""

    def assign_factors(self, versions: FactorVersions) -> None:
        """Record the factor set and version each plant counts under now, replacing the
        previous record (``ASSIGNMENT_MEASUREMENT``)."""

    def assigned_factors(self) -> dict[str, tuple[str, str]]:
        """What ``assign_factors`` last recorded, per plant."""

    def record_sequences(self, rows: Sequence[tuple[str, int]]) -> None:
        """Record that telemetry batches ``(agent, seq)`` were received; a repeat is
        recorded once (``SEQUENCES_MEASUREMENT``)."""

    def sequence_gaps(self, max_gap: int) -> dict[str, int]:
        """Per agent recorded, the batch numbers missing between consecutive recorded
        ones. A jump of more than ``max_gap`` is an agent that started again with a new
        outbox (or a forged number), not that many lost batches: it counts nothing.
        Computed by the server, so the answer is a row per agent."""

    def count_readings(self, plant: str | None = None) -> int:
        """Stored activity readings (all plants when ``plant`` is None)."""

    def time_range(self, plant: str | None = None) -> tuple[int, int] | None:
        """(first, last) reading time in epoch ms, or None when nothing is stored."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class ClosedOnExit:
    """``with open_store(url) as store:`` closes the store on the way out, as files do."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def totals_frame(
    versions: FactorVersions, readings: Mapping[str, int], co2e: Mapping[str, float]
) -> pd.DataFrame:
    """The frame ``Store.totals`` answers, from per-plant counts and sums."""
    plants = sorted(versions)
    return pd.DataFrame(
        {
            "plant": pd.Series(plants, dtype="str"),
            "readings": pd.Series([int(readings.get(p, 0)) for p in plants], dtype="int64"),
            "factor_set": pd.Series([versions[p][0] for p in plants], dtype="str"),
            "factor_version": pd.Series([versions[p][1] for p in plants], dtype="str"),
            "co2e_kg": pd.Series([float(co2e.get(p, 0.0)) for p in plants], dtype="float64"),
        }
    )


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


def epoch_ms(times: pd.Series) -> list[int]:
    """A frame's ``time`` column (UTC timestamps) as epoch milliseconds."""
    if not len(times):
        return []
    epoch = pd.Timestamp(0, tz="UTC")
    return [int(ms) for ms in (times - epoch) // pd.Timedelta(milliseconds=1)]


def readings_ending_in(start_ms: int, end_ms: int) -> tuple[int, int]:
    """The ``start_ms``/``end_ms`` store filter (start <= ts < end) that selects exactly the
    readings whose interval lies in the window (start, end]: a reading's interval ends at
    its timestamp, so one stamped on ``end_ms`` belongs in, one on ``start_ms`` does not."""
    return start_ms + 1, end_ms + 1


def check_field(field: str) -> str:
    if field not in SERIES_FIELDS:
        raise ValueError(f"unknown field {field!r}; expected one of {', '.join(SERIES_FIELDS)}")
    return field
