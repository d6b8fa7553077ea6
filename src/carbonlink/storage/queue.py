"""A durable FIFO in one SQLite file: the agent's outbox and the platform's spill file.

Items are opaque bytes appended in batches and removed only once their consumer has
handed them on, so a crash between the two loses nothing. WAL mode with
``synchronous=NORMAL``: a commit survives the process being killed; after a power cut
the last commits may be lost (``synchronous=FULL`` would fsync each one, far slower).

A full disk is survivable. SQLite's log (the ``-wal`` file) is most of what a busy queue
holds on disk, so the first answer to "disk full" is a checkpoint that folds the log into
the file and truncates it. A small reserve file is kept beside the queue so that removing
items, which also writes, still works when nothing else does: otherwise a full disk would
stop the agent from forgetting what it has sent, and from dropping its oldest readings.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

from carbonlink.errors import CarbonlinkError

SQLITE_BUSY_TIMEOUT_S: Final = 5.0
# Free space held back for removals on a full disk (see the module docstring).
DISK_RESERVE_BYTES: Final = 256 * 1024
# The log is truncated back to this after checkpoints, so it does not keep its peak size.
WAL_SIZE_LIMIT_BYTES: Final = 4 * 1024 * 1024

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

    def __init__(self, path: str | Path, *, extra_schema: str = "") -> None:
        """``extra_schema``: tables of the queue's owner, kept in the same file so that
        :meth:`append` can update them in the same transaction as the queue."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path),
            check_same_thread=False,
            isolation_level=None,
            timeout=SQLITE_BUSY_TIMEOUT_S,
        )
        # Lets a full disk get back the pages of dropped items. It must come first: once
        # the file exists (journal_mode writes it) it would need a full VACUUM.
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        self._db.executescript(_SCHEMA + extra_schema)
        self._reserve = self.path.with_name(self.path.name + ".reserve")
        self._keep_reserve()
        (self._count,) = self._db.execute("SELECT count(*) FROM queue").fetchone()

    def __len__(self) -> int:
        return int(self._count)

    def append(
        self,
        items: Sequence[bytes],
        meta: dict[str, str] | None = None,
        also: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        """Append items, update metadata and run ``also`` (writes to the owner's own
        tables), all in one transaction."""

        def work(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO queue (item) VALUES (?)", [(i,) for i in items])
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list((meta or {}).items()))
            if also is not None:
                also(db)

        self._transaction(work)
        self._count += len(items)

    def read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """Rows of a query on the owner's tables."""
        with self._lock:
            return [tuple(row) for row in self._db.execute(sql, params).fetchall()]

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

        self._count -= self._transaction(work, frees=True)

    def drop_oldest(self, count: int) -> int:
        """Discard the oldest items (the outbox's `drop_oldest` policy); returns how many."""
        removed = self._transaction(
            lambda db: int(
                db.execute(
                    "DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT ?)",
                    (count,),
                ).rowcount
            ),
            frees=True,
        )
        self._count -= removed
        self._give_back_space()
        return removed

    def replace_oldest(
        self,
        count: int,
        items: Sequence[bytes],
        meta: dict[str, str] | None = None,
        also: Callable[[sqlite3.Connection], object] | None = None,
    ) -> int:
        """Discard the oldest ``count`` items and append ``items`` in one transaction, so
        the new items reuse the pages just freed (a full disk's ``drop_oldest``); returns
        how many were discarded."""

        def work(db: sqlite3.Connection) -> int:
            removed = int(
                db.execute(
                    "DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT ?)",
                    (count,),
                ).rowcount
            )
            db.executemany("INSERT INTO queue (item) VALUES (?)", [(i,) for i in items])
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list((meta or {}).items()))
            if also is not None:
                also(db)
            return removed

        removed = self._transaction(work, frees=True)
        self._count += len(items) - removed
        self._give_back_space()
        return removed

    def meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self, work: Callable[[sqlite3.Connection], T], *, frees: bool = False) -> T:
        """Run ``work`` in one transaction. On a full disk, checkpoint and try again; a
        transaction that ``frees`` space (removals) may also spend the reserve."""
        with self._lock:
            try:
                return self._attempt(work)
            except sqlite3.Error as exc:
                if not _is_full(exc):
                    raise DurableQueueError(self.path, str(exc)) from exc
            self._make_room()
            try:
                return self._attempt(work)
            except sqlite3.Error as exc:
                if not (_is_full(exc) and frees and self._reserve.exists()):
                    raise DurableQueueError(self.path, str(exc), full=_is_full(exc)) from exc
            self._reserve.unlink()
            try:
                result = self._attempt(work)
            except sqlite3.Error as exc:
                raise DurableQueueError(self.path, str(exc), full=_is_full(exc)) from exc
            self._checkpoint()  # what was freed becomes reusable; the reserve is rebuilt
            self._keep_reserve()
            return result

    def _attempt(self, work: Callable[[sqlite3.Connection], T]) -> T:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = work(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full) has already rolled back: rolling back
            # again would raise "no transaction is active" and hide why.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return result

    def _give_back_space(self) -> None:
        """Return the pages of dropped items to the disk: otherwise they would stay in the
        file, and a full disk would stay full however much the queue drops."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # no room even for this: next drop tries
                self._db.execute("PRAGMA incremental_vacuum").fetchall()
            self._checkpoint()
            self._keep_reserve()

    def _make_room(self) -> None:
        """Fold the log into the file and truncate it. The checkpoint itself needs a
        little room to grow the file: when even that is missing, it borrows the reserve."""
        if self._checkpoint() or not self._reserve.exists():
            return
        self._reserve.unlink()
        self._checkpoint()
        self._keep_reserve()

    def _checkpoint(self) -> bool:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            return False  # an attempt to make room, not a requirement
        return True

    def _keep_reserve(self) -> None:
        if self._reserve.exists():
            return
        try:
            with self._reserve.open("wb") as reserve:
                reserve.write(bytes(DISK_RESERVE_BYTES))  # written, so really allocated
                reserve.flush()
                os.fsync(reserve.fileno())
        except OSError:
            # No room for it yet (the disk is full): removals will try again.
            self._reserve.unlink(missing_ok=True)


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
