"""The agent's per-sample checks and counter conversion, without a broker."""

from __future__ import annotations

import pytest

from carbonlink.agent import MeterValidator
from carbonlink.config import AgentConfig, MeterConfig, PlantConfig
from carbonlink.wire import MeterMessage, Reason, Sample

NOW = 1_795_420_800_000
MINUTE = 60_000


def plant() -> PlantConfig:
    return PlantConfig(
        id="p1",
        name="test plant",
        archetype="cement",
        grid_region="CN",
        factor_set="any",
        meters=(
            MeterConfig(
                id="coal", activity="other_bituminous_coal", unit="t",
                sample_period_s=60, nominal_per_hour=20, rated_per_hour=30,
            ),
            MeterConfig(
                id="grid", activity="electricity", unit="kWh", reading="counter",
                counter_rollover=100_000, nominal_per_hour=6000, rated_per_hour=9000,
            ),
        ),
    )  # fmt: skip


@pytest.fixture
def validator() -> MeterValidator:
    return MeterValidator(plant(), AgentConfig(max_clock_skew_s=300), lambda: NOW)


def message(meter: str, *samples: Sample, unit: str = "t", kind: str = "interval") -> MeterMessage:
    return MeterMessage("p1", meter, unit, kind, None, samples)


def test_interval_readings_pass_with_default_duration(validator: MeterValidator) -> None:
    verdict = validator.check(message("coal", Sample(NOW - MINUTE, 0.3), Sample(NOW, 0.31)))
    assert [(r.ts_ms, r.value, r.duration_ms) for r in verdict.accepted] == [
        (NOW - MINUTE, 0.3, MINUTE),
        (NOW, 0.31, MINUTE),
    ]
    assert verdict.rejected == ()


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (Sample(NOW, -0.1), Reason.NEGATIVE),
        (Sample(NOW, 0.6), Reason.IMPLAUSIBLE),  # 36 t/h against 30 t/h rated (+10%)
        (Sample(NOW + 301_000, 0.3), Reason.CLOCK_SKEW),
        (Sample(NOW - 8 * 86_400_000, 0.3), Reason.CLOCK_SKEW),
    ],
)
def test_bad_sample_rejected_good_neighbours_kept(
    validator: MeterValidator, sample: Sample, reason: str
) -> None:
    verdict = validator.check(
        message("coal", Sample(NOW - 2 * MINUTE, 0.3), sample, Sample(NOW - MINUTE, 0.3))
    )
    assert [r.ts_ms for r in verdict.accepted] == [NOW - 2 * MINUTE, NOW - MINUTE]
    assert [r.reason for r in verdict.rejected] == [reason]
    assert verdict.rejected[0].meter == "coal"


def test_plausibility_scales_with_declared_duration(validator: MeterValidator) -> None:
    verdict = validator.check(message("coal", Sample(NOW, 3.0, duration_ms=10 * MINUTE)))
    assert len(verdict.accepted) == 1  # 18 t/h over ten minutes


def test_duplicates_rejected_late_but_new_interval_accepted(validator: MeterValidator) -> None:
    validator.check(message("coal", Sample(NOW, 0.3)))
    verdict = validator.check(message("coal", Sample(NOW, 0.3), Sample(NOW - 5 * MINUTE, 0.3)))
    assert [r.reason for r in verdict.rejected] == [Reason.DUPLICATE]
    assert [r.ts_ms for r in verdict.accepted] == [NOW - 5 * MINUTE]


def test_unknown_meter_wrong_unit_wrong_kind(validator: MeterValidator) -> None:
    cases = [
        (message("steam", Sample(NOW, 1.0)), Reason.UNKNOWN_METER),
        (message("coal", Sample(NOW, 1.0), unit="kg"), Reason.WRONG_UNIT),
        (message("coal", Sample(NOW, 1.0), kind="counter"), Reason.WRONG_KIND),
    ]
    for msg, reason in cases:
        verdict = validator.check(msg)
        assert verdict.accepted == ()
        assert [r.reason for r in verdict.rejected] == [reason]


def counter(*samples: Sample) -> MeterMessage:
    return message("grid", *samples, unit="kWh", kind="counter")


def test_counter_becomes_intervals_after_baseline(validator: MeterValidator) -> None:
    verdict = validator.check(
        counter(Sample(NOW - 2 * MINUTE, 1000.0), Sample(NOW - MINUTE, 1100.0), Sample(NOW, 1205.5))
    )
    assert [(r.ts_ms, r.value, r.duration_ms) for r in verdict.accepted] == [
        (NOW - MINUTE, 100.0, MINUTE),
        (NOW, 105.5, MINUTE),
    ]


def test_counter_rollover_is_an_interval(validator: MeterValidator) -> None:
    verdict = validator.check(counter(Sample(NOW - MINUTE, 99_950.0), Sample(NOW, 30.0)))
    assert [r.value for r in verdict.accepted] == [pytest.approx(80.0)]
    assert verdict.rejected == ()


def test_counter_reset_rejected_and_rebaselined(validator: MeterValidator) -> None:
    verdict = validator.check(
        counter(Sample(NOW - 2 * MINUTE, 50_000.0), Sample(NOW - MINUTE, 10.0), Sample(NOW, 110.0))
    )
    assert [r.reason for r in verdict.rejected] == [Reason.COUNTER_RESET]
    assert [(r.ts_ms, r.value) for r in verdict.accepted] == [(NOW, 100.0)]


def test_counter_out_of_order_and_duplicate(validator: MeterValidator) -> None:
    validator.check(counter(Sample(NOW - MINUTE, 1000.0), Sample(NOW, 1100.0)))
    verdict = validator.check(counter(Sample(NOW - 2 * MINUTE, 900.0), Sample(NOW, 1100.0)))
    assert [r.reason for r in verdict.rejected] == [Reason.OUT_OF_ORDER, Reason.DUPLICATE]
    assert verdict.accepted == ()


def test_interval_older_than_dedup_window_is_refused_as_late(
    validator: MeterValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carbonlink.agent import _validation

    monkeypatch.setattr(_validation, "DEDUP_WINDOW", 3)
    small = MeterValidator(plant(), AgentConfig(), lambda: NOW)
    small.check(message("coal", *(Sample(NOW - k * MINUTE, 0.3) for k in (4, 3, 2, 1))))
    verdict = small.check(message("coal", Sample(NOW - 4 * MINUTE, 0.3), Sample(NOW, 0.3)))
    assert [r.reason for r in verdict.rejected] == [Reason.OUT_OF_ORDER]
    assert [r.ts_ms for r in verdict.accepted] == [NOW]
