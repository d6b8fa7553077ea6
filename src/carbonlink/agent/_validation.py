"""The agent's checks on each meter sample, and counter-to-interval conversion.

Pure and synchronous so it can be tested without a broker and run fast on the hot path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from carbonlink._exceptions import RejectedReading
from carbonlink.config import AgentConfig, MeterConfig, PlantConfig, ReadingKind
from carbonlink.wire import MeterMessage, Reading, Reason, Sample

# A reading may exceed its meter's rated draw by this margin before it is called
# implausible: meters are calibrated to a few percent and intervals jitter.
PLAUSIBILITY_MARGIN: Final = 1.10
# How many recent timestamps per meter are remembered to catch duplicates; a sample
# older than all of them cannot be told apart from a duplicate and is refused as late.
DEDUP_WINDOW: Final = 4096
# Oldest accepted sample, relative to the agent's clock.
MAX_READING_AGE_S: Final = 7 * 24 * 3600.0


@dataclass(slots=True)
class _MeterState:
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=DEDUP_WINDOW))
    recent_set: set[int] = field(default_factory=set)
    last_ts_ms: int | None = None
    last_counter: float | None = None
    # Newest timestamp pushed out of the window: at or before it, a sample may be a
    # duplicate we no longer remember.
    forgotten_up_to: int | None = None

    def remember(self, ts_ms: int) -> None:
        if len(self.recent) == self.recent.maxlen:
            evicted = self.recent[0]
            self.recent_set.discard(evicted)
            if self.forgotten_up_to is None or evicted > self.forgotten_up_to:
                self.forgotten_up_to = evicted
        self.recent.append(ts_ms)
        self.recent_set.add(ts_ms)
        if self.last_ts_ms is None or ts_ms > self.last_ts_ms:
            self.last_ts_ms = ts_ms


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: tuple[Reading, ...]
    rejected: tuple[RejectedReading, ...]


class MeterValidator:
    """Validates one plant's meter messages and turns them into interval readings."""

    def __init__(self, plant: PlantConfig, config: AgentConfig, now_ms: Callable[[], int]) -> None:
        self._plant = plant
        self._meters = {m.id: m for m in plant.meters}
        self._state = {m.id: _MeterState() for m in plant.meters}
        self._max_skew_ms = round(config.max_clock_skew_s * 1000)
        self._max_age_ms = round(MAX_READING_AGE_S * 1000)
        self._now_ms = now_ms

    def counter_baseline(self, meter_id: str) -> tuple[int, float] | None:
        """The register a counter meter's next interval starts from, to persist it."""
        state = self._state.get(meter_id)
        if state is None or state.last_ts_ms is None or state.last_counter is None:
            return None
        return state.last_ts_ms, state.last_counter

    def restore_counter(self, meter_id: str, ts_ms: int, register: float) -> None:
        """Resume from a persisted baseline, so a restart loses no counter interval."""
        state = self._state.get(meter_id)
        if state is not None:
            state.remember(ts_ms)
            state.last_counter = register

    def check(self, message: MeterMessage) -> Verdict:
        meter = self._meters.get(message.meter)
        if meter is None:
            error = RejectedReading(
                Reason.UNKNOWN_METER,
                f"plant {self._plant.id!r} has no meter {message.meter!r}",
                meter=message.meter,
            )
            return Verdict((), (error, *message.rejected))
        if message.unit != meter.unit:
            error = RejectedReading(
                Reason.WRONG_UNIT,
                f"meter {meter.id!r} reports {meter.unit!r}, got {message.unit!r}",
                meter=meter.id,
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
        now = self._now_ms()
        for sample in message.samples:
            try:
                reading = self._check_sample(meter, sample, now)
            except RejectedReading as exc:
                rejected.append(RejectedReading(exc.reason, exc.detail, meter=meter.id))
            else:
                if reading is not None:
                    accepted.append(reading)
        return Verdict(tuple(accepted), tuple(rejected))

    def _check_sample(self, meter: MeterConfig, sample: Sample, now_ms: int) -> Reading | None:
        if sample.value < 0:
            raise RejectedReading(Reason.NEGATIVE, f"value {sample.value} < 0")
        if sample.ts_ms - now_ms > self._max_skew_ms:
            ahead = (sample.ts_ms - now_ms) / 1000
            raise RejectedReading(Reason.CLOCK_SKEW, f"timestamp {ahead:.0f} s in the future")
        if now_ms - sample.ts_ms > self._max_age_ms:
            behind = (now_ms - sample.ts_ms) / 1000
            raise RejectedReading(Reason.CLOCK_SKEW, f"timestamp {behind:.0f} s in the past")
        state = self._state[meter.id]
        if sample.ts_ms in state.recent_set:
            raise RejectedReading(Reason.DUPLICATE, f"timestamp {sample.ts_ms} already received")
        if meter.reading is ReadingKind.COUNTER:
            return self._counter_interval(meter, state, sample)
        if state.forgotten_up_to is not None and sample.ts_ms <= state.forgotten_up_to:
            raise RejectedReading(Reason.OUT_OF_ORDER, "older than the duplicate-detection window")
        duration_ms = sample.duration_ms or round(meter.sample_period_s * 1000)
        self._check_plausible(meter, sample.value, duration_ms)
        state.remember(sample.ts_ms)
        return Reading(
            meter.id, sample.ts_ms, sample.value, meter.unit, duration_ms, sample.quality
        )

    def _counter_interval(
        self, meter: MeterConfig, state: _MeterState, sample: Sample
    ) -> Reading | None:
        last_ts, last_value = state.last_ts_ms, state.last_counter
        if last_ts is not None and sample.ts_ms < last_ts:
            raise RejectedReading(Reason.OUT_OF_ORDER, "counter sample older than the last one")
        if last_ts is None or last_value is None:
            # The first register value only sets the baseline: an interval needs two.
            state.remember(sample.ts_ms)
            state.last_counter = sample.value
            return None
        delta = sample.value - last_value
        duration_ms = sample.ts_ms - last_ts
        if delta < 0:
            rollover = meter.counter_rollover
            wrapped = (rollover - last_value) + sample.value if rollover else None
            if wrapped is None or not self._plausible(meter, wrapped, duration_ms):
                state.remember(sample.ts_ms)
                state.last_counter = sample.value
                raise RejectedReading(
                    Reason.COUNTER_RESET,
                    f"register fell from {last_value} to {sample.value}; new baseline",
                )
            delta = wrapped
        self._check_plausible(meter, delta, duration_ms)
        state.remember(sample.ts_ms)
        state.last_counter = sample.value
        return Reading(meter.id, sample.ts_ms, delta, meter.unit, duration_ms, sample.quality)

    @staticmethod
    def _plausible(meter: MeterConfig, amount: float, duration_ms: int) -> bool:
        ceiling = meter.rated_per_hour * PLAUSIBILITY_MARGIN * duration_ms / 3_600_000
        return amount <= ceiling

    def _check_plausible(self, meter: MeterConfig, amount: float, duration_ms: int) -> None:
        if not self._plausible(meter, amount, duration_ms):
            rate = amount / (duration_ms / 3_600_000)
            raise RejectedReading(
                Reason.IMPLAUSIBLE,
                f"{rate:.4g} {meter.unit}/h exceeds rated {meter.rated_per_hour:g} {meter.unit}/h",
            )
