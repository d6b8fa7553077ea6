"""Meter messages as bytes, formatted directly for speed.

Equivalent to ``carbonlink.wire.encode_meter_message`` (tests check both decode alike)
but several times faster, which matters at tens of thousands of samples a second.
"""

from __future__ import annotations

from collections.abc import Sequence


def encode_samples(
    unit: str, kind: str, seq: int, samples: Sequence[tuple[int, float]], dur_s: float | None
) -> bytes:
    """``samples`` are (ts_ms, value); ``dur_s`` is set for interval meters."""
    dur = f',"dur":{dur_s!r}' if dur_s is not None else ""
    body = ",".join(f'{{"ts":{ts},"value":{value!r}{dur}}}' for ts, value in samples)
    return f'{{"v":1,"unit":"{unit}","kind":"{kind}","seq":{seq},"samples":[{body}]}}'.encode()
