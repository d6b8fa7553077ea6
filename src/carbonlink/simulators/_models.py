"""Pure load, adoption and abatement models, vectorised over plants.

Kept free of state and I/O so tests can check them against closed forms, and the fleet
can call them once per tick for every plant at once.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from carbonlink.abatement import inflow
from carbonlink.config import AbatementConfig, DigitalConfig

FloatArray = npt.NDArray[np.float64]

MS_PER_HOUR: Final = 3_600_000
MS_PER_DAY: Final = 86_400_000
DAYS_PER_YEAR: Final = 365.2425
DIURNAL_PEAK_HOUR: Final = 14.0  # afternoon: ambient-driven loads (cooling, HVAC) peak
EPOCH_WEEKDAY: Final = 3  # 1970-01-01 was a Thursday (Monday = 0)


def shift_target(
    local_ms: npt.NDArray[np.int64],
    start_hour: FloatArray,
    hours: FloatArray,
    level: FloatArray,
    idle_level: FloatArray,
    weekend_level: FloatArray,
    daily_swing: FloatArray,
    seasonal_swing: FloatArray,
    seasonal_peak_day: FloatArray,
) -> FloatArray:
    """Production each plant aims for at its local time (fraction of capacity).

    ``weekend_level`` holds NaN for plants that run weekends like weekdays.
    """
    day = local_ms // MS_PER_DAY
    hour = (local_ms % MS_PER_DAY) / MS_PER_HOUR
    weekend = (day + EPOCH_WEEKDAY) % 7 >= 5
    running = (hour - start_hour) % 24.0 < hours
    on_level = np.where(weekend & ~np.isnan(weekend_level), weekend_level, level)
    target = np.where(running, on_level, idle_level)
    diurnal = 1.0 + daily_swing * np.cos(2 * np.pi * (hour - DIURNAL_PEAK_HOUR) / 24.0)
    day_of_year = day % DAYS_PER_YEAR
    seasonal = 1.0 + seasonal_swing * np.cos(
        2 * np.pi * (day_of_year - seasonal_peak_day) / DAYS_PER_YEAR
    )
    result: FloatArray = np.clip(target * diurnal * seasonal, 0.0, 1.0)
    return result


def ramp_towards(
    current: FloatArray, target: FloatArray, dt_h: FloatArray, ramp_h: FloatArray
) -> FloatArray:
    """Start-up and shut-down: output moves to its target at most 1/ramp_h per hour."""
    step = dt_h / ramp_h
    result: FloatArray = current + np.clip(target - current, -step, step)
    return result


def digital_multiplier(adoption: float | FloatArray, config: DigitalConfig) -> float | FloatArray:
    """Energy (and so emissions) relative to no adoption, as an inverted U in A.

    With u = A / A*, the overhead of digital equipment grows as 2u and the savings it
    enables as u^2, so 1 + g*(2u - u^2) peaks at A* with 1 + g (g = peak_overhead),
    is back to 1 at 2A*, and saves beyond, down to 1 - max_saving. In an industrial
    park, congestion takes ``park_congestion`` of the savings term, which pushes the
    peak to A*/(1 - c).
    """
    u = np.asarray(adoption, dtype=np.float64) / config.turning_point
    savings_kept = 1.0 - (config.park_congestion if config.industrial_park else 0.0)
    value = 1.0 + config.peak_overhead * (2.0 * u - savings_kept * u * u)
    clipped = np.maximum(value, 1.0 - config.max_saving)
    return float(clipped) if clipped.ndim == 0 else clipped


def abatement_inflow(
    config: AbatementConfig, effort_firm: float, effort_platform: float, sigma: float
) -> float:
    """I = sigma * (a_M * E_M + a_P * F * E_P) with the plant's own a_M, a_P and F: the
    coordination model's dynamics (``coordination.model.inflow``), model units per period."""
    return inflow(
        sigma, config.a_m, config.a_p, config.functional_availability, effort_firm,
        effort_platform,
    )  # fmt: skip
