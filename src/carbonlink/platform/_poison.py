"""Poison messages: a message that keeps failing is parked, never redelivered forever.

An exception while handling a message cannot stop the platform: it is refused as
``internal_error`` and acknowledged. What remains is a message that takes the *process*
down before it is acknowledged (memory exhausted, a crash in native code, a kill at the
wrong moment): the broker delivers it again after every restart, with the DUP flag set.

So every message that arrives with DUP set is counted on disk *before* it is handled,
in a small table beside the spill file. A message seen ``POISON_ATTEMPTS`` times is
parked: kept whole in the ``parked`` table, dead-lettered as ``poison``, acknowledged,
and not handled again. A message handled to the end has its count removed. Messages
without DUP (all of them, normally) cost nothing here.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Final

POISON_ATTEMPTS: Final = 5
"""Deliveries before a message is parked: a broker or network restart redelivers a few
in-flight messages once, and those must never be parked."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS parked (
    key TEXT PRIMARY KEY, parked_ms INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL
);
"""


def message_key(topic: str, payload: bytes) -> str:
    """The identity of a message across redeliveries: its topic and payload."""
    digest = hashlib.blake2b(topic.encode(), digest_size=16)
    digest.update(b"\0")
    digest.update(payload)
    return digest.hexdigest()


class PoisonGuard:
    """Counts redeliveries of a message on disk and parks the ones that never succeed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def attempt(self, key: str) -> int:
        """Count one more delivery of a redelivered message; return how many so far."""
        with self._lock:
            self._db.execute(
                "INSERT INTO attempts VALUES (?, 1) "
                "ON CONFLICT (key) DO UPDATE SET count = count + 1",
                (key,),
            )
            (count,) = self._db.execute(
                "SELECT count FROM attempts WHERE key = ?", (key,)
            ).fetchone()
        return int(count)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM attempts WHERE key = ?", (key,))

    def park(self, key: str, topic: str, payload: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO parked VALUES (?, ?, ?, ?)",
                (key, int(time.time() * 1000), topic, payload),
            )
            self._db.execute("DELETE FROM attempts WHERE key = ?", (key,))

    def parked(self) -> list[tuple[str, bytes]]:
        """Every parked message, oldest first: (topic, payload)."""
        with self._lock:
            rows = self._db.execute("SELECT topic, payload FROM parked ORDER BY parked_ms")
            return [(str(t), bytes(p)) for t, p in rows.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()
