"""Dead letters: a refusal, with where it happened and the start of what was refused."""

from __future__ import annotations

from typing import Final

from carbonlink.errors import RejectedReading
from carbonlink.wire._json import WIRE_VERSION, dumps

DEADLETTER_PAYLOAD_BYTES: Final = 2048


def encode_rejection(stage: str, topic: str, error: RejectedReading, payload: bytes) -> bytes:
    """Dead-letter body: why, where, and the first 2 KiB of what was refused."""
    body = {
        "v": WIRE_VERSION,
        "stage": stage,
        "reason": error.reason,
        "detail": error.detail[:1000],
        "meter": error.meter,
        "topic": topic[:1000],
        "payload": payload[:DEADLETTER_PAYLOAD_BYTES].decode("utf-8", errors="replace"),
    }
    return dumps(body)
