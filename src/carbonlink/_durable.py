"""A durable FIFO in one SQLite file: the agent's outbox and the platform's spill file.

Items are opaque bytes appended in batches and removed only once their consumer has
handed them on, so a crash between the two loses nothing. WAL mode with
``synchronous=NORMAL``: a commit survives the process being killed; after a power cut
the last commits may be lost (``synchronous=FULL`` would fsync each one, far slower).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

from carbonlink._exceptions import CarbonlinkError

SQLITE_BUSY_TIMEOUT_S: Final = 5.0

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, item BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class DurableQueueError(CarbonlinkError):
    """The queue file cannot be written (disk full, permissions, corruption).

    ``full`` says the disk (or the file's size limit) is full: the one case the
    configured outbox policy applies to, as a full outbox would.
    """

    def __init__(self, path: Path, problem: str, *, full: bool = False) -> None:
        self.path = path
        self.problem = problem
        self.full = full
        super().__init__(f"{path}: {problem}")


class DurableQueue:
    """FIFO of byte items with small key/value metadata, committed atomically together."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path),
            check_same_thread=False,
            isolation_level=None,
            timeout=SQLITE_BUSY_TIMEOUT_S,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        (self._count,) = self._db.execute("SELECT count(*) FROM queue").fetchone()

    def __len__(self) -> int:
        return int(self._count)

    def append(self, items: Sequence[bytes], meta: dict[str, str] | None = None) -> None:
        """Append items (and update metadata) in one transaction."""
        self._transaction(
            lambda db: (
                db.executemany("INSERT INTO queue (item) VALUES (?)", [(i,) for i in items]),
                db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", list((meta or {}).items())
                ),
            )
        )
        self._count += len(items)

    def peek(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest ``limit`` items with their ids, left in place."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, item FROM queue ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [(int(row_id), bytes(item)) for row_id, item in rows]

    def remove_through(self, last_id: int, meta: dict[str, str] | None = None) -> None:
        """Forget every item up to and including ``last_id`` (they were handed on), and
        update metadata in the same transaction."""

        def work(db: sqlite3.Connection) -> int:
            removed = int(db.execute("DELETE FROM queue WHERE id <= ?", (last_id,)).rowcount)
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list((meta or {}).items()))
            return removed

        self._count -= self._transaction(work)

    def drop_oldest(self, count: int) -> int:
        """Discard the oldest items (the outbox's `drop_oldest` policy); returns how many."""
        removed = self._transaction(
            lambda db: int(
                db.execute(
                    "DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT ?)",
                    (count,),
                ).rowcount
            )
        )
        self._count -= removed
        return removed

    def meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                raise DurableQueueError(self.path, str(exc), full=full) from exc
            return result
