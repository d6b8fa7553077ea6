"""The platform's spill file: readings accepted while the store was down.

Telemetry is acknowledged to the broker once its readings are either in the store or
here; a drainer writes spilled readings to the store when it answers again. This keeps
a long store outage from backing up into the broker, whose queues are finite.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from carbonlink._durable import DurableQueue
from carbonlink.platform.storage import Emission, StoredReading


def encode_stored(reading: StoredReading) -> bytes:
    return json.dumps(dataclasses.asdict(reading), separators=(",", ":")).encode()


def decode_stored(item: bytes) -> StoredReading:
    data = json.loads(item)
    emission = data.pop("emission")
    return StoredReading(**data, emission=Emission(**emission) if emission else None)


class SpillFile:
    def __init__(self, path: Path) -> None:
        self._queue = DurableQueue(path)

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, readings: Sequence[StoredReading]) -> None:
        self._queue.append([encode_stored(r) for r in readings])

    def oldest(self, limit: int) -> tuple[int, list[StoredReading]]:
        """Up to ``limit`` of the oldest readings and the id to remove them through."""
        rows = self._queue.peek(limit)
        return (rows[-1][0] if rows else 0), [decode_stored(item) for _, item in rows]

    def remove_through(self, last_id: int) -> None:
        self._queue.remove_through(last_id)

    def close(self) -> None:
        self._queue.close()
