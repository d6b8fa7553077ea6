"""The identity index against a store that shows a reading half written.

InfluxDB 1.x writes a point's fields one by one, so a worker that asks the store while
another worker writes the same plant can read a point with ``value`` but no
``duration_s`` (CI found this in the two-worker delivery test: the batch was refused as
an internal error). The end-to-end path is the shared-subscription test in
``tests/test_delivery.py``; this one pins the race, which the real store shows only by
chance.
"""

from __future__ import annotations

import pandas as pd

from carbonlink.platform._identity import IdentityIndex
from carbonlink.storage import StoredBatch, StoredReading

MINUTE = 60_000


class _HalfWrittenStore:
    """Answers like InfluxDB mid-write: one stored reading, one with its duration missing."""

    def __init__(self) -> None:
        self.asked = 0

    def time_range(self, plant: str) -> tuple[int, int] | None:
        return (0, 10 * MINUTE)

    def activity(self, plant: str, **_: object) -> pd.DataFrame:
        self.asked += 1
        return pd.DataFrame({
            "time": pd.to_datetime([2 * MINUTE, 3 * MINUTE], unit="ms", utc=True),
            "plant": [plant, plant], "meter": ["kiln-coal", "kiln-coal"],
            "value": [0.25, 0.25], "unit": ["t", "t"],
            "duration_s": [60.0, float("nan")], "quality": ["good", "good"],
        })  # fmt: skip


def _batch(*rows: tuple[int, float]) -> StoredBatch:
    return StoredBatch.from_readings([
        StoredReading("p1", "kiln-coal", ts, value, "t", MINUTE, "good", None)
        for ts, value in rows
    ])  # fmt: skip


def test_a_half_written_stored_reading_does_not_fail_the_batch() -> None:
    store = _HalfWrittenStore()
    index = IdentityIndex(store, lambda plant, meter: MINUTE, exact=True)  # type: ignore[arg-type]
    admission = index.admit(_batch((2 * MINUTE, 0.25), (3 * MINUTE, 0.25), (4 * MINUTE, 0.5)))
    assert store.asked == 1
    # The fully stored reading is a repeat; the half-written one is left to the store's
    # idempotent key (same value, same point), and the new one is admitted.
    assert admission.repeats == 1
    assert admission.rows == [1, 2]
    assert admission.refused == []
