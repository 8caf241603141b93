"""sera's SQLite file: one connection per process, shared by every store, and one way to write to it.

WAL, so readers never wait on the writer; ``synchronous=FULL``, so a committed row (an analysis, an
opt-out, a ``/forget``) survives a power cut, not only a crash (sera commits a few rows a second at
most, so the extra fsync is cheap); ``secure_delete``, so deleted rows are overwritten, not left
readable in free pages.

Every write goes through ``transaction``: it commits, or it rolls back and raises ``StorageError``.
A failed write (another process holding the lock past the busy timeout, a full disk) therefore never
leaves the shared connection inside an open transaction, where every later write would silently wait
for a commit that never comes and be lost at restart.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from sera.errors import SeraError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 5.0


class StorageError(SeraError):
    """The database refused a read or write; nothing of that write was kept."""


class HoldsUserData(Protocol):
    """A store that keeps rows about a person registers itself (``Database.holds_user_data``), so that
    ``/forget`` reaches it without anyone listing the stores by hand."""

    def delete_user_data(self, tx: sqlite3.Connection, user: str) -> dict[str, int]:
        """Inside ``tx``: delete what this store keeps about ``user``; return counts by kind."""
        ...


class Database:
    """One connection shared across threads, serialised by a lock (SQLite calls take microseconds)."""

    def __init__(self, path: Path, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._holders: list[HoldsUserData] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
        except (sqlite3.Error, OSError) as exc:
            raise SeraError(f"cannot open the database {path}: {exc}") from None

    def apply(self, schema: str) -> None:
        """Create what ``schema`` describes (``CREATE ... IF NOT EXISTS``), in one transaction."""
        with self.transaction() as db:
            for statement in filter(str.strip, schema.split(";")):
                db.execute(statement)

    def holds_user_data(self, store: HoldsUserData) -> None:
        self._holders.append(store)

    def forget_user(self, user: str) -> dict[str, int]:
        """Every registered store's rows about ``user``, deleted in one transaction: all or nothing."""
        deleted: dict[str, int] = {}
        with self.transaction() as tx:
            for store in self._holders:
                deleted.update(store.delete_user_data(tx, user))
        return deleted

    def columns(self, table: str) -> set[str]:
        with self.read() as db:
            return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``with db.transaction() as connection:`` writes that are all kept or, on any error, none."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _storage_error("begin", exc) from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _storage_error("write", exc) from None
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise _storage_error("read", exc) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _storage_error(what: str, exc: sqlite3.Error) -> StorageError:
    log.error("database %s failed: %s", what, exc)
    if "locked" in str(exc) or "busy" in str(exc):
        return StorageError("the database is busy (another process is writing to it); nothing was changed, try again")
    return StorageError(f"the database failed ({exc}); nothing was changed")
