"""Windows, KPIs and totals at a cost independent of history: whole hours and days come
from the rollups a store keeps as data lands, only the ragged edges from raw points.

What this module answers is a frame of *pseudo-points*: raw points inside the edges
(``readings`` 1 each) and one row per rolled-up bucket, stamped with the bucket's end
(the interval-end label a reading in it would carry, so ``windows.window_start`` puts it
in the same window) and holding the bucket's sums and its reading count. Every figure
``windows.aggregate`` and ``windows.plant_kpis`` compute (sums, sums per activity, per
meter, per scope, the 95% intervals, which add half-widths linearly per factor and per
meter before combining) is a sum of sums, so pseudo-points give the raw scan's figures,
up to floating-point summation order. A bucket holding a point without uncertainty
fields has NaN half-widths, as the raw point would have made its group.

A bucket of ``step`` starting at ``b`` holds readings with ``b < ts <= b + step``; a
query's store filter is ``start <= ts < end``. Windows of 1 m and 15 m are finer than an
hour and read raw points; 1 h windows use hourly rollups; 1 d windows and unwindowed
queries use days, with hours and raw points at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from carbonlink.storage._base import (
    ACTIVITY_COLUMNS,
    EMISSION_COLUMNS,
    UNCERTAINTY_FIELDS,
    Store,
    typed_frame,
)
from carbonlink.storage._buckets import DAY_MS, HOUR_MS

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "Piece",
    "RollupStore",
    "activity_points",
    "emission_points",
    "plan",
]

READINGS: Final = "readings"
_STEPS: Final = {"1h": HOUR_MS, "1d": DAY_MS}
# Windows that whole hours (and days) fit in; finer windows read raw points.
_HOURLY_WINDOWS: Final = ("1h", "1d")
_EMISSION_POINTS: Final = EMISSION_COLUMNS | {READINGS: "int64"}
_ACTIVITY_POINTS: Final = ACTIVITY_COLUMNS | {READINGS: "int64"}


@runtime_checkable
class RollupStore(Protocol):
    """A store that keeps hourly and daily rollups (SQLite, InfluxDB 1.x)."""

    def rollups(
        self,
        kind: str,
        step_ms: int,
        plant: str | None,
        first_ms: int,
        end_ms: int | None,
        *,
        factor_set: str | None = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame | None:
        """Rollup rows of ``kind`` (emissions | activity) for buckets of ``step_ms``
        starting in [first_ms, end_ms) (open-ended when None), time stamped with the
        bucket's end; None when the store has none (read raw points)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of a query: raw points with ``start <= ts < end``, or buckets of ``source``
    (``1h`` | ``1d``) starting in [start, end). None: unbounded on that side."""

    source: Literal["raw", "1h", "1d"]
    start: int | None
    end: int | None


def plan(start_ms: int | None, end_ms: int | None, window: str | None = None) -> list[Piece]:
    """The pieces that cover the store filter ``start_ms <= ts < end_ms`` exactly once."""
    if window is not None and window not in _HOURLY_WINDOWS:
        return [Piece("raw", start_ms, end_ms)]
    first = 0 if start_ms is None else start_ms
    hour_first = -(-(first - 1) // HOUR_MS) * HOUR_MS  # the first bucket wholly inside
    hour_end = None if end_ms is None else (end_ms - 1) // HOUR_MS * HOUR_MS
    if hour_end is not None and hour_first >= hour_end:
        return [Piece("raw", start_ms, end_ms)]
    pieces = []
    if start_ms is None or start_ms < hour_first + 1:
        pieces.append(Piece("raw", start_ms, hour_first + 1))
    day_first = -(-hour_first // DAY_MS) * DAY_MS
    day_end = None if hour_end is None else hour_end // DAY_MS * DAY_MS
    if window == "1h" or (day_end is not None and day_first >= day_end):
        pieces.append(Piece("1h", hour_first, hour_end))
    else:
        if hour_first < day_first:
            pieces.append(Piece("1h", hour_first, day_first))
        pieces.append(Piece("1d", day_first, day_end))
        if day_end is not None and hour_end is not None and day_end < hour_end:
            pieces.append(Piece("1h", day_end, hour_end))
    if end_ms is not None and hour_end is not None and hour_end + 1 < end_ms:
        pieces.append(Piece("raw", hour_end + 1, end_ms))
    return pieces


def emission_points(
    store: Store,
    plant: str | None,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    factor_set: str | None = None,
    factor_version: str | None = None,
    window: str | None = None,
    raw: bool = False,
) -> pd.DataFrame:
    """Emission pseudo-points (``EMISSION_COLUMNS`` and ``readings``) for ``windows``'
    aggregate and KPIs; ``raw`` reads every point (the reference the rollups match)."""
    frames = []
    for piece in _pieces(store, start_ms, end_ms, window, raw):
        if piece.source == "raw":
            frame = store.emissions(
                plant, start_ms=piece.start, end_ms=piece.end,
                factor_set=factor_set, factor_version=factor_version,
            )  # fmt: skip
            frames.append(frame.assign(**{READINGS: 1}))
            continue
        assert isinstance(store, RollupStore)  # _pieces gives rollups to such stores only
        rolled = store.rollups(
            "emissions", _STEPS[piece.source], plant, _bucket(piece.start), piece.end,
            factor_set=factor_set, factor_version=factor_version,
        )  # fmt: skip
        if rolled is not None and not rolled.empty:
            unknown = rolled.pop("unknown").to_numpy() > 0
            for column in UNCERTAINTY_FIELDS:
                rolled[column] = rolled[column].astype("float64").mask(unknown, np.nan)
            frames.append(rolled)
    return _typed(_EMISSION_POINTS, frames)


def activity_points(
    store: Store,
    plant: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    raw: bool = False,
) -> pd.DataFrame:
    """Activity pseudo-points (``ACTIVITY_COLUMNS`` and ``readings``): ``value`` and
    ``duration_s`` summed per bucket; ``quality`` is empty on rolled-up rows."""
    frames = []
    for piece in _pieces(store, start_ms, end_ms, None, raw):
        if piece.source == "raw":
            frame = store.activity(plant, start_ms=piece.start, end_ms=piece.end)
            frames.append(frame.assign(**{READINGS: 1}))
            continue
        assert isinstance(store, RollupStore)
        rolled = store.rollups(
            "activity", _STEPS[piece.source], plant, _bucket(piece.start), piece.end
        )
        if rolled is not None and not rolled.empty:
            frames.append(rolled.assign(quality=""))
    return _typed(_ACTIVITY_POINTS, frames)


def _pieces(
    store: Store, start_ms: int | None, end_ms: int | None, window: str | None, raw: bool
) -> list[Piece]:
    if raw or not isinstance(store, RollupStore) or not _has_rollups(store):
        return [Piece("raw", start_ms, end_ms)]
    return plan(start_ms, end_ms, window)


def _has_rollups(store: RollupStore) -> bool:
    # An empty probe: a read-only store from before rollups answers None.
    return store.rollups("activity", DAY_MS, None, 0, 0) is not None


def _bucket(start: int | None) -> int:
    return 0 if start is None else start


def _typed(columns: dict[str, str], frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    for frame in frames:  # rollups stamp epoch ms; one dtype before concatenating
        if pd.api.types.is_numeric_dtype(frame["time"]):
            frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True)
    if not frames:
        return typed_frame(columns)
    return typed_frame(columns, pd.concat(frames, ignore_index=True))
