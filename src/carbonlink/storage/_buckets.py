"""Rollup buckets, the same on every backend: a bucket of ``step`` ms starting at ``b``
holds the readings whose interval ends in (b, b + step], i.e. ``b + 1 <= ts < b + step
+ 1``: the interval-end rule every window uses (``windows.window_start``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000


def runs(buckets: Iterable[int], step_ms: int) -> list[tuple[int, int]]:
    """Bucket starts as sorted [first, end) runs of consecutive buckets."""
    out: list[tuple[int, int]] = []
    for bucket in sorted(set(buckets)):
        if out and out[-1][1] == bucket:
            out[-1] = (out[-1][0], bucket + step_ms)
        else:
            out.append((bucket, bucket + step_ms))
    return out


def hours_touched(plants: list[str], ts_ms: list[int]) -> dict[str, set[int]]:
    """Per plant, the hour buckets the readings ``(plants[i], ts_ms[i])`` fall in."""
    out: dict[str, set[int]] = {}
    for plant, ts in zip(plants, ts_ms, strict=True):
        out.setdefault(plant, set()).add((ts - 1) // HOUR_MS * HOUR_MS)
    return out


def days_of(hours: Iterable[int]) -> set[int]:
    return {hour // DAY_MS * DAY_MS for hour in hours}
