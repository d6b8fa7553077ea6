"""Durations (``90s``, ``15m``, ``1.5h``, ``7d``) and the times config files refer to
(an offset from a run's start like ``+2h`` or ``-90m``, or an RFC 3339 instant).

One parser for the CLI, fault files and policy files, so "15m" means the same everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import BeforeValidator, Field

__all__ = [
    "Duration",
    "TimeRef",
    "parse_duration_s",
    "parse_time_ref",
]

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_OFFSET: Final = re.compile(r"^\s*([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
UNIT_S: Final[dict[str | None, float]] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    None: 1.0,
}
MS_PER_S: Final = 1000


def parse_duration_s(value: object) -> float:
    """Seconds from a number (seconds) or text like ``90s``, ``5m``, ``1.5h``, ``2d``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * UNIT_S[match.group(2)]
    raise ValueError(f"expected a duration like 90s, 15m, 12h, 7d; got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration_s), Field(ge=0)]
"""A pydantic field type: seconds, written as a number or as text like ``15m``."""


@dataclass(frozen=True, slots=True)
class TimeRef:
    """An instant given absolutely (``at_ms``) or as an offset from a run's start."""

    at_ms: int | None = None
    offset_ms: int = 0

    def resolve(self, run_start_ms: int) -> int:
        return self.at_ms if self.at_ms is not None else run_start_ms + self.offset_ms

    @property
    def is_offset(self) -> bool:
        return self.at_ms is None


def parse_time_ref(text: object) -> TimeRef:
    """``+2h`` / ``-90m`` (offset from the run's start) or an RFC 3339 time."""
    from carbonlink.wire import parse_timestamp  # wire imports config types; keep it lazy

    if isinstance(text, str):
        offset = _OFFSET.match(text)
        if offset is not None:
            sign = -1 if offset[1] == "-" else 1
            seconds = float(offset[2]) * UNIT_S[offset[3]]
            return TimeRef(offset_ms=sign * round(seconds * MS_PER_S))
    try:
        return TimeRef(at_ms=parse_timestamp(text))
    except Exception as exc:
        raise ValueError(f'expected RFC 3339 or an offset like "+2h" or "-30m": {exc}') from exc
