"""The SQLite file after errors: a write that fails rolls back and leaves every store writable, and
consent and forget writes are kept across a restart. Real SQLite, a real lock held by another connection."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from sera.database import SQLiteDatabase, StorageError
from sera.adapters.discord.store import Origin, Store
from sera.plugin import Report
from sera.sessions import SessionStore
from sera.summary import Utterance

ROW = Utterance("alice", 1.0, 2.0, "calm", 0.8, {"calm": 0.8, "sad": 0.2}, {})
REPORT = Report(source="note.ogg", duration=3.0, segments=[(0.5, 2.5)], outputs={})


def open_stores(path: Path) -> tuple[SQLiteDatabase, Store, SessionStore]:
    db = SQLiteDatabase(path, busy_timeout=0.2)
    return db, Store(db), SessionStore(db)


def test_a_write_that_meets_a_lock_rolls_back_and_storage_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "sera.db"
    db, store, sessions = open_stores(path)
    info = sessions.start("guild", "room", "alice")
    sessions.set_consent("guild", "alice", True)
    sessions.set_consent("guild", "bob", True)

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the busy timeout
    with pytest.raises(StorageError, match="database is busy"):
        sessions.add(info.id, [ROW])
    with pytest.raises(StorageError):
        sessions.set_consent("guild", "bob", False)
    other.execute("ROLLBACK")
    other.close()

    # every store writes again, each write committed on its own
    sessions.add(info.id, [ROW])
    sessions.set_consent("guild", "bob", False)  # Bob withdraws his consent
    store.record(REPORT, Origin(7, 7, 1, 2, 3))
    store.update_settings(1, lambda s: s.__class__(**{**s.__dict__, "chart": True}))
    assert db.forget_user("alice") == {"analyses": 0, "utterances": 1, "sessions_started": 1}  # Alice's /forget
    db.close()

    db, store, sessions = open_stores(path)  # a restart
    assert sessions.consenting("guild") == set()  # the opt-out and the forget held
    assert sessions.utterances(info.id) == []
    assert sessions.info(info.id).info.started_by == "forgotten"
    assert store.analyses_of(7) == 1 and store.settings(1).chart is True
    db.close()


def test_an_error_inside_a_transaction_keeps_none_of_it(tmp_path: Path) -> None:
    db, store, sessions = open_stores(tmp_path / "sera.db")
    store.record(REPORT, Origin(7, 7, None, None, None))
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            store.delete_user_data(tx, "7")
            raise RuntimeError("the second store failed")
    assert store.analyses_of(7) == 1
    store.record(REPORT, Origin(8, 8, None, None, None))  # the connection is not left in a transaction
    assert store.analyses_of(8) == 1
    db.close()


def test_pragmas_that_keep_data_safe(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "sera.db")
    with db.read() as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert connection.execute("PRAGMA secure_delete").fetchone()[0] == 1
    db.close()


def test_a_database_from_before_requested_by_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE analyses (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, user_id INTEGER NOT NULL,"
        " guild_id INTEGER, channel_id INTEGER, message_id INTEGER, duration_s REAL NOT NULL, speech_s REAL NOT NULL,"
        " label TEXT, confidence REAL, result TEXT NOT NULL);"
        "INSERT INTO analyses (created, user_id, duration_s, speech_s, result) VALUES (1.0, 7, 3.0, 2.0, '{}');"
    )
    old.commit()
    old.close()
    store = Store(path)
    assert store.analyses_of(7) == 1
    store.record(REPORT, Origin(7, 9, None, None, None))
    assert store.analyses_of(9) == 1
    store.close()


def test_forget_reaches_every_store_that_registers_itself(tmp_path: Path) -> None:
    """A store added later (a plugin's, a new feature's) is reached by /forget once it registers,
    and a failure in any store keeps every store's rows."""
    db, store, _ = open_stores(tmp_path / "sera.db")
    store.record(REPORT, Origin(7, 7, None, None, None))

    class Notes:
        def __init__(self, fail: bool) -> None:
            self.fail = fail
            db.apply("CREATE TABLE IF NOT EXISTS notes (user TEXT)")
            db.holds_user_data(self)

        def delete_user_data(self, tx, user: str) -> dict[str, int]:
            if self.fail:
                raise sqlite3.OperationalError("disk I/O error")
            return {"notes": tx.execute("DELETE FROM notes WHERE user = ?", (user,)).rowcount}

        def delete_expired(self, tx, cutoff: float) -> dict[str, int]:
            return {"notes": tx.execute("DELETE FROM notes WHERE user = 'old'").rowcount}

    notes = Notes(fail=True)
    with db.transaction() as tx:
        tx.execute("INSERT INTO notes VALUES ('7')")
    with pytest.raises(StorageError):
        db.forget_user("7")
    assert store.analyses_of(7) == 1  # nothing went
    notes.fail = False
    assert db.forget_user("7")["notes"] == 1 and store.analyses_of(7) == 0
    with db.transaction() as tx:
        tx.execute("INSERT INTO notes VALUES ('old')")
    assert db.expire(time.time())["notes"] == 1  # retention reaches it through the same registry

    class Hoarder:  # keeps people's data, can be forgotten, never expires: refused
        def delete_user_data(self, tx, user: str) -> dict[str, int]:
            return {}

    with pytest.raises(TypeError, match="Hoarder keeps people's data but has no delete_expired"):
        db.holds_user_data(Hoarder())
    db.close()
