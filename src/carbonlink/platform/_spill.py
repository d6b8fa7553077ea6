"""The platform's spill file: readings accepted while the store was down.

Telemetry is acknowledged to the broker once its readings are either in the store or
here; a drainer writes spilled readings to the store when it answers again. This keeps
a long store outage from backing up into the broker, whose queues are finite.

Each item is one batch as columns (JSON); items written by earlier versions, one
reading each, are still read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from carbonlink.storage import EMISSION_NUMBERS, Emission, EmissionTags, StoredBatch, StoredReading
from carbonlink.storage.queue import DurableQueue

# Items looked at per read of the spill; each holds one write batch.
PEEK_ITEMS: Final = 64
_COLUMNS: Final = ("plant", "meter", "ts_ms", "value", "unit", "duration_ms", "quality")


def encode_stored(reading: StoredReading) -> bytes:
    """One reading, the format of earlier versions (kept for tests of reading old files)."""
    return orjson.dumps(dataclasses.asdict(reading))


def encode_batch(batch: StoredBatch) -> bytes:
    tag_sets = list(dict.fromkeys(t for t in batch.tags if t is not None))
    number = {tags: n for n, tags in enumerate(tag_sets)}
    body: dict[str, Any] = {name: getattr(batch, name) for name in _COLUMNS}
    body["tag_sets"] = [dataclasses.astuple(t) for t in tag_sets]
    body["tags"] = [-1 if t is None else number[t] for t in batch.tags]
    body["numbers"] = batch.numbers.tolist()  # floats round-trip exactly through JSON
    return orjson.dumps(body)


def decode_item(item: bytes) -> StoredBatch:
    data = orjson.loads(item)
    if "tag_sets" not in data:  # one reading, as earlier versions spilled
        emission = data.pop("emission")
        reading = StoredReading(**data, emission=Emission(**emission) if emission else None)
        return StoredBatch.from_readings([reading])
    tag_sets = [EmissionTags(*t) for t in data["tag_sets"]]
    numbers = np.array(data["numbers"], dtype=np.float64).reshape(len(data["ts_ms"]), -1)
    if numbers.shape[1] < len(EMISSION_NUMBERS):
        # Spilled before the uncertainty columns existed: they were not computed then.
        missing = len(EMISSION_NUMBERS) - numbers.shape[1]
        numbers = np.hstack([numbers, np.zeros((len(numbers), missing))])
    columns = {name: data[name] for name in _COLUMNS}
    tags = [None if n < 0 else tag_sets[n] for n in data["tags"]]
    return StoredBatch(**columns, tags=tags, numbers=numbers)


class SpillFile:
    def __init__(self, path: Path) -> None:
        self._queue = DurableQueue(path)

    def __len__(self) -> int:
        """Items (batches) waiting, not readings."""
        return len(self._queue)

    def add(self, batch: StoredBatch) -> None:
        self._queue.append([encode_batch(batch)])

    def oldest(self, max_readings: int) -> tuple[int, StoredBatch]:
        """The oldest items, together up to ``max_readings`` (at least one item), and the
        id to remove them through."""
        batches: list[StoredBatch] = []
        last_id, total = 0, 0
        for item_id, item in self._queue.peek(PEEK_ITEMS):
            batch = decode_item(item)
            if batches and total + len(batch) > max_readings:
                break
            batches.append(batch)
            last_id, total = item_id, total + len(batch)
        return last_id, StoredBatch.concat(batches)

    def remove_through(self, last_id: int) -> None:
        self._queue.remove_through(last_id)

    def close(self) -> None:
        self._queue.close()
