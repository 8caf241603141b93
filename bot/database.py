"""Opening sera's SQLite file: WAL, so readers never wait on the writer and a crash loses no committed row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.errors import SeraError


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode, shareable across threads (callers serialise it with a lock)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except (sqlite3.Error, OSError) as exc:
        raise SeraError(f"cannot open the database {path}: {exc}") from None
    return db
