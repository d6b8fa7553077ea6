"""Which readings of a batch may be stored: a reading's identity and time, checked.

A reading is (plant, meter, ts) with the interval (ts - duration, ts] it covers. Before a
batch is written, every reading is checked against what the store holds and against the
rest of its batch:

- the same reading again (same value and duration): a *repeat*, kept once and not
  written again (a redelivered message, a batch with a row twice);
- another value or duration for a stored (plant, meter, ts): refused as ``conflict``; the
  stored value stays;
- an interval that overlaps a stored one of the same meter: refused as ``overlap``, since
  that time would be counted twice.

The index remembers the last readings of each configured meter, so a batch of new
readings (the normal case) is checked without asking the store. It asks the store only
for readings that reach back before what it has seen since it started: once per plant
at first sight (the plant's newest stored time), then for the time range of such
readings. With several platform workers on one plant's telemetry, each worker sees only
part of it, so the index then asks the store for every batch (``exact=True``).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from carbonlink.errors import RejectedReading
from carbonlink.storage import Store, StoredBatch, epoch_ms
from carbonlink.wire import Reason

# Readings remembered per meter: a day of one-minute intervals, twice over.
REMEMBERED_PER_METER: Final = 4096
_NEVER: Final = -(2**62)
_ALWAYS: Final = 2**62


@dataclass(slots=True)
class _MeterHistory:
    """The last readings of one meter: sorted end times, and what each one was."""

    times: list[int] = field(default_factory=list)
    readings: dict[int, tuple[float, int]] = field(default_factory=dict)  # ts -> (value, dur)
    # Stored readings ending at or before this may be unknown here: ask the store.
    known_from: int = _ALWAYS

    def add(self, ts_ms: int, value: float, duration_ms: int) -> None:
        if not self.times or ts_ms > self.times[-1]:
            self.times.append(ts_ms)
        else:
            bisect.insort(self.times, ts_ms)
        self.readings[ts_ms] = (value, duration_ms)
        if len(self.times) > REMEMBERED_PER_METER:
            forgotten = self.times.pop(0)
            del self.readings[forgotten]
            self.known_from = max(self.known_from, forgotten)

    def remove(self, ts_ms: int) -> None:
        if self.readings.pop(ts_ms, None) is not None:
            del self.times[bisect.bisect_left(self.times, ts_ms)]

    def verdict(self, ts_ms: int, value: float, duration_ms: int) -> str | None:
        """``repeat``, ``conflict`` or ``overlap`` against what is remembered; None: new."""
        known = self.readings.get(ts_ms)
        if known is not None:
            return "repeat" if known == (value, duration_ms) else Reason.CONFLICT
        at = bisect.bisect_left(self.times, ts_ms)
        if at > 0 and self.times[at - 1] > ts_ms - duration_ms:
            return Reason.OVERLAP  # the one before ends inside this interval
        if at < len(self.times):
            after = self.times[at]
            if after - self.readings[after][1] < ts_ms:
                return Reason.OVERLAP  # the one after starts inside this interval
        return None


@dataclass(frozen=True, slots=True)
class Admission:
    """A batch split by identity: the rows to write, the refused rows, the repeats."""

    rows: list[int]
    refused: list[tuple[int, RejectedReading]]
    repeats: int


class IdentityIndex:
    """Admits the rows of a batch that are new; safe to call from several threads."""

    def __init__(
        self,
        store: Store,
        max_interval_ms: Callable[[str, str], int],
        *,
        exact: bool = False,
    ) -> None:
        self._store = store
        self._max_interval_ms = max_interval_ms
        self._exact = exact
        self._meters: dict[tuple[str, str], _MeterHistory] = {}
        self._horizon: dict[str, int] = {}  # plant -> newest stored ts at first sight
        self._lock = threading.Lock()

    def admit(self, batch: StoredBatch) -> Admission:
        """Check every row; remember the admitted ones as stored (call :meth:`forget`
        for rows whose write then fails for good)."""
        with self._lock:
            return self._admit(batch)

    def forget(self, batch: StoredBatch, rows: Sequence[int]) -> None:
        with self._lock:
            for row in rows:
                history = self._meters.get((batch.plant[row], batch.meter[row]))
                if history is not None:
                    history.remove(batch.ts_ms[row])

    def _admit(self, batch: StoredBatch) -> Admission:
        order = sorted(range(len(batch)), key=lambda i: (batch.plant[i], batch.ts_ms[i]))
        rows: list[int] = []
        refused: list[tuple[int, RejectedReading]] = []
        repeats = 0
        unknown: dict[str, list[int]] = {}  # plant -> rows that reach back past the index
        for row in order:
            history = self._history(batch.plant[row], batch.meter[row])
            ts, duration = batch.ts_ms[row], batch.duration_ms[row]
            if ts - duration < history.known_from:
                unknown.setdefault(batch.plant[row], []).append(row)
                continue
            outcome = history.verdict(ts, batch.value[row], duration)
            repeats += self._settle(batch, row, outcome, history, rows, refused)
        for plant, plant_rows in unknown.items():
            repeats += self._against_store(batch, plant, plant_rows, rows, refused)
        rows.sort()
        return Admission(rows, refused, repeats)

    def _history(self, plant: str, meter: str) -> _MeterHistory:
        history = self._meters.get((plant, meter))
        if history is None:
            if plant not in self._horizon:
                span = None if self._exact else self._store.time_range(plant)
                self._horizon[plant] = _ALWAYS if self._exact else (span[1] if span else _NEVER)
            history = self._meters[plant, meter] = _MeterHistory(known_from=self._horizon[plant])
        return history

    def _against_store(
        self,
        batch: StoredBatch,
        plant: str,
        plant_rows: list[int],
        rows: list[int],
        refused: list[tuple[int, RejectedReading]],
    ) -> int:
        """Check rows that reach back before the index against the store itself."""
        start = min(batch.ts_ms[r] - batch.duration_ms[r] for r in plant_rows)
        end = max(batch.ts_ms[r] + self._max_interval_ms(plant, batch.meter[r]) for r in plant_rows)
        stored = self._store.activity(plant, start_ms=start, end_ms=end + 1)
        found: dict[str, _MeterHistory] = {}
        ms = epoch_ms(stored["time"])
        for meter, ts, value, seconds in zip(
            stored["meter"], ms, stored["value"], stored["duration_s"], strict=True
        ):
            if math.isnan(value) or math.isnan(seconds):
                # InfluxDB 1.x writes a point's fields one by one: a reading another worker
                # is writing right now can be read half there. The InfluxDB store hides
                # such points (its activity()); this keeps any other store's from failing
                # the batch. Its write decides; the store's keys are idempotent, so
                # admitting ours too stores it once.
                continue
            found.setdefault(str(meter), _MeterHistory()).add(
                int(ts), float(value), round(float(seconds) * 1000)
            )
        repeats = 0
        for row in plant_rows:
            meter, ts = batch.meter[row], batch.ts_ms[row]
            value, duration = batch.value[row], batch.duration_ms[row]
            history = self._history(plant, meter)
            outcome = found.get(meter, _MeterHistory()).verdict(ts, value, duration)
            if outcome is None:
                outcome = history.verdict(ts, value, duration)
            repeats += self._settle(batch, row, outcome, history, rows, refused)
            if outcome is None:
                found.setdefault(meter, _MeterHistory()).add(ts, value, duration)
        return repeats

    @staticmethod
    def _settle(
        batch: StoredBatch,
        row: int,
        outcome: str | None,
        history: _MeterHistory,
        rows: list[int],
        refused: list[tuple[int, RejectedReading]],
    ) -> int:
        meter, ts = batch.meter[row], batch.ts_ms[row]
        if outcome is None:
            history.add(ts, batch.value[row], batch.duration_ms[row])
            rows.append(row)
        elif outcome == "repeat":
            return 1
        elif outcome == Reason.CONFLICT:
            refused.append((row, RejectedReading(
                Reason.CONFLICT,
                f"{meter} at {ts} is stored with another value or interval; the stored one stays",
                meter=meter,
            )))  # fmt: skip
        else:
            refused.append((row, RejectedReading(
                Reason.OVERLAP,
                f"{meter} at {ts} over {batch.duration_ms[row]} ms overlaps a stored interval",
                meter=meter,
            )))  # fmt: skip
        return 0
