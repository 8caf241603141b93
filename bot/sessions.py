"""Live sessions in SQLite (WAL): one row per session, one per analysed utterance, written as they happen.

A session row is written when listening starts and each utterance is committed the moment its analysis
returns, so a crash or a dropped voice connection loses nothing already analysed. A session still
marked ``live`` when the store is opened again was cut short: ``interrupted_sessions`` marks it so,
and it can still be summarised from its rows. No audio is ever stored.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from bot.database import open_database
from bot.errors import SeraError
from bot.summary import SessionInfo, Utterance

LIVE, ENDED, INTERRUPTED = "live", "ended", "interrupted"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    space TEXT NOT NULL,
    room TEXT NOT NULL,
    report_to TEXT,
    started_by TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    shed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS utterances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    speaker TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    label TEXT,
    confidence REAL,
    probabilities TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS utterances_session ON utterances (session_id);
CREATE INDEX IF NOT EXISTS utterances_speaker ON utterances (speaker);
CREATE TABLE IF NOT EXISTS consent (
    space TEXT NOT NULL,
    speaker TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (space, speaker)
);
"""


class StoredSession(NamedTuple):
    """A session as the store knows it."""

    info: SessionInfo
    status: str
    duration: float  # seconds; up to now while it is live
    shed: int
    report_to: str | None  # where its summary goes


SESSION_COLUMNS = "id, space, room, started_by, started_at, status, ended_at, shed, report_to"

EXPORT_FIELDS = ("session", "speaker", "start_s", "end_s", "label", "confidence", "probabilities")


class SessionStore:
    """One connection shared by threads, serialised by a lock; every write is committed at once."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, SCHEMA)
        self.path = path
        self._lock = threading.Lock()

    def start(self, space: str, room: str, started_by: str, report_to: str | None = None) -> SessionInfo:
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO sessions (space, room, report_to, started_by, started_at, status) VALUES (?, ?, ?, ?, ?, ?)",
                (space, room, report_to, started_by, now, LIVE),
            )
        return SessionInfo(int(cursor.lastrowid), space, room, started_by, now)

    def add(self, session_id: int, rows: Iterable[Utterance]) -> None:
        values = [
            (
                session_id, r.speaker, r.start, r.end, r.label, r.confidence,
                json.dumps(dict(r.probabilities)), json.dumps(dict(r.outputs)),
            )
            for r in rows
        ]  # fmt: skip
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO utterances (session_id, speaker, start_s, end_s, label, confidence, probabilities, outputs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            self._db.execute("COMMIT")

    def finish(self, session_id: int, status: str, shed: int = 0) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE sessions SET ended_at = ?, status = ?, shed = ? WHERE id = ? AND status = ?",
                (time.time(), status, shed, session_id, LIVE),
            )

    def interrupted_sessions(self) -> list[int]:
        """Sessions left ``live`` by a process that died: mark them interrupted and return their ids."""
        with self._lock:
            ids = [row[0] for row in self._db.execute("SELECT id FROM sessions WHERE status = ?", (LIVE,))]
            for session_id in ids:
                last = self._db.execute(
                    "SELECT MAX(end_s) FROM utterances WHERE session_id = ?", (session_id,)
                ).fetchone()[0]
                self._db.execute(
                    "UPDATE sessions SET status = ?, ended_at = started_at + ? WHERE id = ?",
                    (INTERRUPTED, last or 0.0, session_id),
                )
        return ids

    def info(self, session_id: int) -> StoredSession | None:
        with self._lock:
            row = self._db.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _stored(row) if row else None

    def sessions(self, space: str, limit: int = 10) -> list[StoredSession]:
        """The latest sessions of a space, newest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE space = ? ORDER BY id DESC LIMIT ?", (space, limit)
            ).fetchall()
        return [_stored(row) for row in rows]

    def utterances(self, session_id: int) -> list[Utterance]:
        with self._lock:
            rows = self._db.execute(
                "SELECT speaker, start_s, end_s, label, confidence, probabilities, outputs FROM utterances "
                "WHERE session_id = ? ORDER BY start_s, id",
                (session_id,),
            ).fetchall()
        return [Utterance(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6])) for r in rows]

    def export_csv(self, session_id: int) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(EXPORT_FIELDS)
        for r in self.utterances(session_id):
            writer.writerow([session_id, r.speaker, f"{r.start:.3f}", f"{r.end:.3f}", r.label or "",
                             "" if r.confidence is None else f"{r.confidence:.4f}", json.dumps(dict(r.probabilities))])  # fmt: skip
        return out.getvalue()

    def export_json(self, session_id: int) -> str:
        known = self.info(session_id)
        if known is None:
            raise SeraError(f"no session {session_id}")
        info, status, duration, shed, _ = known
        return json.dumps(
            {
                "session": info.id,
                "space": info.space,
                "room": info.room,
                "started_by": info.started_by,
                "started_at": info.started_at,
                "status": status,
                "duration_s": round(duration, 3),
                "shed": shed,
                "utterances": [
                    {"speaker": r.speaker, "start_s": r.start, "end_s": r.end, "label": r.label,
                     "confidence": r.confidence, "probabilities": r.probabilities, "outputs": r.outputs}
                    for r in self.utterances(session_id)
                ],
            },  # fmt: skip
            indent=2,
        )

    def set_consent(self, space: str, speaker: str, consents: bool) -> None:
        """Remember (or revoke) a speaker's opt-in to live analysis in one space."""
        with self._lock:
            if consents:
                self._db.execute(
                    "INSERT OR IGNORE INTO consent (space, speaker, since) VALUES (?, ?, ?)", (space, speaker, time.time())
                )
            else:
                self._db.execute("DELETE FROM consent WHERE space = ? AND speaker = ?", (space, speaker))

    def consenting(self, space: str) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT speaker FROM consent WHERE space = ?", (space,))}

    def forget_speaker(self, speaker: str) -> int:
        """Delete every utterance and opt-in of one speaker; returns how many utterances went."""
        with self._lock:
            self._db.execute("DELETE FROM consent WHERE speaker = ?", (speaker,))
            return self._db.execute("DELETE FROM utterances WHERE speaker = ?", (speaker,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _stored(row: tuple) -> StoredSession:
    started_at, ended_at = row[4], row[6]
    info = SessionInfo(row[0], row[1], row[2], row[3], started_at)
    return StoredSession(info, row[5], (ended_at or time.time()) - started_at, row[7], row[8])
