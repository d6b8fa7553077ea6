"""Durations (``90s``, ``15m``, ``1.5h``, ``1h30m``, ``7d``), and offsets from a run's
start (``+2h``, ``-90m``).

One parser for the CLI, fault files and policy files, so "15m" means the same everywhere.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import BeforeValidator, Field

__all__ = ["OFFSET", "UNIT_S", "Duration", "parse_duration_s"]

_NUMBER: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")  # bare seconds
# One or more NUMBER UNIT terms, largest first as people write them (1h30m, 2d12h, 1m30.5s);
# "ms" before "m" so that 500ms is milliseconds.
_TERM: Final = r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)"
_DURATION: Final = re.compile(rf"^\s*(?:{_TERM}\s*)+$")
_TERMS: Final = re.compile(_TERM)
OFFSET: Final = re.compile(r"^\s*([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
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
    """Seconds from a number (seconds) or text like ``90s``, ``5m``, ``1.5h``, ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        bare = _NUMBER.match(value)
        if bare:
            return float(bare.group(1))
        if _DURATION.match(value):
            units = [unit for _, unit in _TERMS.findall(value)]
            if len(set(units)) == len(units):  # "1m2m" is a typo, not 3 minutes
                return sum(float(n) * UNIT_S[u] for n, u in _TERMS.findall(value))
    raise ValueError(f"expected a duration like 90s, 15m, 1h30m, 12h, 7d; got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration_s), Field(ge=0)]
"""A pydantic field type: seconds, written as a number or as text like ``15m``."""
