"""The agent's checks on each meter sample, and counter-to-interval conversion.

Pure and synchronous so it can be tested without a broker and run fast on the hot path.

A meter's state is what it has sent lately: the readings of an interval meter (end time,
amount, interval length), the last register of a counter. :meth:`MeterValidator.check`
judges a message against that state and against the message's own earlier samples, and
returns what it would change as :class:`Remembered` rows; :meth:`MeterValidator.commit`
applies them once the agent has kept the accepted readings on disk. So a reading that
could not be kept (a full disk) is not remembered either, and its resend is not refused
as a duplicate. The agent persists the same rows beside its outbox, so the state, and with
it duplicate, conflict and overlap detection, survives a restart.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from carbonlink.config import AgentConfig, MeterConfig, PlantConfig, ReadingKind
from carbonlink.emissions import unit_ratio
from carbonlink.errors import RejectedReading
from carbonlink.wire import MeterMessage, Reading, Reason, Sample

# How many recent readings per meter are remembered to catch duplicates, conflicts and
# overlaps; a sample older than all of them cannot be checked and is refused as late.
DEDUP_WINDOW: Final = 4096
# Oldest accepted sample, relative to the agent's clock.
MAX_READING_AGE_S: Final = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Remembered:
    """One sample the meter's state now holds. For an interval meter: the reading's end
    time, amount and interval; for a counter: the register at that time (duration 0)."""

    meter: str
    ts_ms: int
    value: float
    duration_ms: int


@dataclass(slots=True)
class _MeterState:
    times: list[int] = field(default_factory=list)  # sorted
    samples: dict[int, tuple[float, int]] = field(default_factory=dict)  # ts -> (value, dur)
    # Newest time pushed out of the window: at or before it, a sample may be a duplicate
    # or an overlap we no longer remember.
    forgotten_up_to: int | None = None

    def add(self, ts_ms: int, value: float, duration_ms: int) -> int | None:
        """Remember a sample; return the time of the one forgotten to make room, if any."""
        if ts_ms not in self.samples:
            if not self.times or ts_ms > self.times[-1]:
                self.times.append(ts_ms)
            else:
                bisect.insort(self.times, ts_ms)
        self.samples[ts_ms] = (value, duration_ms)
        if len(self.times) <= DEDUP_WINDOW:
            return None
        evicted = self.times.pop(0)
        del self.samples[evicted]
        if self.forgotten_up_to is None or evicted > self.forgotten_up_to:
            self.forgotten_up_to = evicted
        return evicted

    @property
    def last(self) -> tuple[int, float] | None:
        """The newest sample: (time, value)."""
        if not self.times:
            return None
        ts = self.times[-1]
        return ts, self.samples[ts][0]


@dataclass(slots=True)
class _Pending:
    """A message's accepted samples, seen by its later samples before they are committed."""

    samples: dict[int, tuple[float, int]] = field(default_factory=dict)
    times: list[int] = field(default_factory=list)
    last_counter: tuple[int, float] | None = None

    def add(self, ts_ms: int, value: float, duration_ms: int) -> None:
        bisect.insort(self.times, ts_ms)
        self.samples[ts_ms] = (value, duration_ms)


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: tuple[Reading, ...]
    rejected: tuple[RejectedReading, ...]
    remembered: tuple[Remembered, ...] = ()


class MeterValidator:
    """Validates one plant's meter messages and turns them into interval readings."""

    def __init__(self, plant: PlantConfig, config: AgentConfig, now_ms: Callable[[], int]) -> None:
        self._plant = plant
        self._meters = {m.id: m for m in plant.meters}
        self._state = {m.id: _MeterState() for m in plant.meters}
        self._max_skew_ms = round(config.max_clock_skew_s * 1000)
        self._max_age_ms = round(MAX_READING_AGE_S * 1000)
        self._now_ms = now_ms

    # --- state ----------------------------------------------------------------------

    def counter_baseline(self, meter_id: str) -> tuple[int, float] | None:
        """The register a counter meter's next interval starts from, to persist it."""
        meter, state = self._meters.get(meter_id), self._state.get(meter_id)
        if meter is None or state is None or meter.reading is not ReadingKind.COUNTER:
            return None
        return state.last

    def restore_counter(self, meter_id: str, ts_ms: int, register: float) -> None:
        """Resume from a persisted baseline, so a restart loses no counter interval."""
        self.restore([Remembered(meter_id, ts_ms, register, 0)])

    def restore(self, rows: Iterable[Remembered]) -> None:
        """Resume from persisted samples (in any order); unknown meters are ignored."""
        for row in rows:
            state = self._state.get(row.meter)
            if state is not None:
                state.add(row.ts_ms, row.value, row.duration_ms)

    def restore_forgotten(self, meter_id: str, ts_ms: int) -> None:
        state = self._state.get(meter_id)
        if state is not None and (state.forgotten_up_to is None or ts_ms > state.forgotten_up_to):
            state.forgotten_up_to = ts_ms

    def forgotten(self, meter_id: str) -> int | None:
        state = self._state.get(meter_id)
        return None if state is None else state.forgotten_up_to

    def commit(self, verdict: Verdict) -> list[tuple[str, int]]:
        """Remember what a verdict accepted; return the (meter, time) forgotten for it."""
        evicted = []
        for row in verdict.remembered:
            gone = self._state[row.meter].add(row.ts_ms, row.value, row.duration_ms)
            if gone is not None:
                evicted.append((row.meter, gone))
        return evicted

    # --- checks ---------------------------------------------------------------------

    def check(self, message: MeterMessage, *, commit: bool = True) -> Verdict:
        """Judge a message. ``commit=False`` leaves the state as it was: call
        :meth:`commit` with the verdict once its readings are kept."""
        meter = self._meters.get(message.meter)
        if meter is None:
            error = RejectedReading(
                Reason.UNKNOWN_METER,
                f"plant {self._plant.id!r} has no meter {message.meter!r}",
                meter=message.meter,
            )
            return Verdict((), (error, *message.rejected))
        if message.unit != meter.unit and not _same_unit(message.unit, meter.unit):
            error = RejectedReading(
                Reason.WRONG_UNIT, _unit_problem(meter, message.unit), meter=meter.id
            )
            return Verdict((), (error, *message.rejected))
        if message.kind != meter.reading.value:
            error = RejectedReading(
                Reason.WRONG_KIND,
                f"meter {meter.id!r} is configured as {meter.reading.value}, got {message.kind}",
                meter=meter.id,
            )
            return Verdict((), (error, *message.rejected))
        accepted: list[Reading] = []
        rejected = list(message.rejected)
        remembered: list[Remembered] = []
        pending = _Pending()
        state = self._state[meter.id]
        now = self._now_ms()
        for sample in message.samples:
            try:
                reading = self._check_sample(meter, state, pending, sample, now)
            except RejectedReading as exc:
                rejected.append(RejectedReading(exc.reason, exc.detail, meter=meter.id))
                if isinstance(exc, _NewBaseline):  # refused, but the register moves on
                    remembered.append(Remembered(meter.id, sample.ts_ms, sample.value, 0))
                continue
            if meter.reading is ReadingKind.COUNTER:
                remembered.append(Remembered(meter.id, sample.ts_ms, sample.value, 0))
            elif reading is not None:
                remembered.append(Remembered(meter.id, reading.ts_ms, reading.value,
                                             reading.duration_ms))  # fmt: skip
            if reading is not None:
                accepted.append(reading)
        verdict = Verdict(tuple(accepted), tuple(rejected), tuple(remembered))
        if commit:
            self.commit(verdict)
        return verdict

    def _check_sample(
        self,
        meter: MeterConfig,
        state: _MeterState,
        pending: _Pending,
        sample: Sample,
        now_ms: int,
    ) -> Reading | None:
        if sample.value < 0:
            raise RejectedReading(Reason.NEGATIVE, f"value {sample.value} < 0")
        if sample.ts_ms - now_ms > self._max_skew_ms:
            ahead = (sample.ts_ms - now_ms) / 1000
            raise RejectedReading(Reason.CLOCK_SKEW, f"timestamp {ahead:.0f} s in the future")
        if now_ms - sample.ts_ms > self._max_age_ms:
            behind = (now_ms - sample.ts_ms) / 1000
            raise RejectedReading(Reason.CLOCK_SKEW, f"timestamp {behind:.0f} s in the past")
        if meter.reading is ReadingKind.COUNTER:
            return self._counter_interval(meter, state, pending, sample)
        duration_ms = (
            sample.duration_ms
            if sample.duration_ms is not None
            else round(meter.sample_period_s * 1000)
        )
        problem = meter.plausibility(sample.value, duration_ms)
        if problem is not None:
            raise RejectedReading(Reason.IMPLAUSIBLE, problem)
        _identity(state, pending, sample.ts_ms, sample.value, duration_ms)
        if state.forgotten_up_to is not None and sample.ts_ms <= state.forgotten_up_to:
            raise RejectedReading(Reason.OUT_OF_ORDER, "older than the duplicate-detection window")
        _no_overlap(state, pending, sample.ts_ms, duration_ms)
        pending.add(sample.ts_ms, sample.value, duration_ms)
        return Reading(
            meter.id, sample.ts_ms, sample.value, meter.unit, duration_ms, sample.quality
        )

    def _counter_interval(
        self, meter: MeterConfig, state: _MeterState, pending: _Pending, sample: Sample
    ) -> Reading | None:
        _identity(state, pending, sample.ts_ms, sample.value, 0)
        last = pending.last_counter or state.last
        if last is not None and sample.ts_ms < last[0]:
            raise RejectedReading(Reason.OUT_OF_ORDER, "counter sample older than the last one")
        if last is None:
            # The first register value only sets the baseline: an interval needs two.
            pending.add(sample.ts_ms, sample.value, 0)
            pending.last_counter = (sample.ts_ms, sample.value)
            return None
        last_ts, last_value = last
        delta = sample.value - last_value
        duration_ms = sample.ts_ms - last_ts
        if delta < 0:
            rollover = meter.counter_rollover
            wrapped = (rollover - last_value) + sample.value if rollover else None
            if wrapped is None or meter.plausibility(wrapped, duration_ms) is not None:
                pending.add(sample.ts_ms, sample.value, 0)
                pending.last_counter = (sample.ts_ms, sample.value)
                raise _NewBaseline(
                    Reason.COUNTER_RESET,
                    f"register fell from {last_value} to {sample.value}; new baseline",
                )
            delta = wrapped
        problem = meter.plausibility(delta, duration_ms)
        if problem is not None:
            # A glitch: the baseline stays, so the next good register gives the interval.
            raise RejectedReading(Reason.IMPLAUSIBLE, problem)
        pending.add(sample.ts_ms, sample.value, 0)
        pending.last_counter = (sample.ts_ms, sample.value)
        return Reading(meter.id, sample.ts_ms, delta, meter.unit, duration_ms, sample.quality)


def _same_unit(sent: str, configured: str) -> bool:
    """Two spellings of one unit (``tonne`` for ``t``), as pint reads them."""
    ratio = unit_ratio(sent, configured)
    return ratio is not None and math.isclose(ratio, 1.0, rel_tol=1e-12)


def _unit_problem(meter: MeterConfig, sent: str) -> str:
    problem = f"meter {meter.id!r} reports {meter.unit!r}, got {sent!r}"
    ratio = unit_ratio(sent, meter.unit)
    if ratio is not None:
        # Convertible but not the same: the sender is off by a scale, which the agent
        # does not guess at (a kg meter sending t would be a thousandfold error).
        return f"{problem} (1 {sent} = {ratio:g} {meter.unit}): send {meter.unit!r}"
    return problem


class _NewBaseline(RejectedReading):
    """A counter sample refused as a reading but kept as the register's new baseline."""


def _identity(state: _MeterState, pending: _Pending, ts_ms: int, value: float, dur: int) -> None:
    """Refuse a sample whose time the meter already sent: the same again, or another."""
    known = pending.samples.get(ts_ms) or state.samples.get(ts_ms)
    if known is None:
        return
    if known == (value, dur):
        raise RejectedReading(Reason.DUPLICATE, f"timestamp {ts_ms} already received")
    raise RejectedReading(
        Reason.CONFLICT,
        f"timestamp {ts_ms} already received with value {known[0]:g} over {known[1]} ms; "
        f"the first one stays",
    )


def _no_overlap(state: _MeterState, pending: _Pending, ts_ms: int, duration_ms: int) -> None:
    """Refuse an interval (ts - duration, ts] that overlaps one already accepted."""
    for times, samples in ((state.times, state.samples), (pending.times, pending.samples)):
        at = bisect.bisect_left(times, ts_ms)
        neighbours = [times[at - 1]] if at > 0 else []
        neighbours += [times[at]] if at < len(times) else []
        for end in neighbours:
            start = end - samples[end][1]
            if start < ts_ms and end > ts_ms - duration_ms:
                raise RejectedReading(
                    Reason.OVERLAP,
                    f"interval ({ts_ms - duration_ms}, {ts_ms}] overlaps the reading "
                    f"({start}, {end}]",
                )
