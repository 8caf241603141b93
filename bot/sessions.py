"""Live sessions in SQLite (WAL): one row per session, one per analysed utterance, written as they happen.

An utterance row keeps every analyzer's result for it, a transcript's words too where its speaker agreed
to transcripts (a consent of its own, ``transcript_consent``); ``/forget`` and retention delete them with
the row.

A session row is written when listening starts and each utterance is committed the moment its analysis
returns, so a crash or a dropped voice connection loses nothing already analysed. Each session names the
process that runs it, which says every ``HEARTBEAT_SECONDS`` that it still does. A session still marked
``live`` whose process is gone (one of this machine that no longer runs, or one nobody vouched for in
``STALE_SECONDS``: processes of one bot may run on several machines) was cut short: ``claim_orphans``
takes it over (atomically, so two processes never both do), its summary is posted from its rows, and only
then is it marked interrupted (``mark_interrupted``), so a crash in between means a summary posted twice,
never one lost. No audio is ever stored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from sera.database import Connection, Database, Migration, connect
from sera.errors import SeraError
from sera.summary import SessionInfo, Utterance

LIVE, ENDED, INTERRUPTED = "live", "ended", "interrupted"
FORGOTTEN = "forgotten"  # stands in for the id of a user who asked to be forgotten

COMPONENT = "sessions"
MIGRATIONS = (
    Migration(1, "live sessions, utterances, consent", """
CREATE TABLE IF NOT EXISTS sessions (
    id {id},
    space TEXT NOT NULL,
    room TEXT NOT NULL,
    report_to TEXT,
    started_by TEXT NOT NULL,
    started_at {real} NOT NULL,
    ended_at {real},
    status TEXT NOT NULL,
    shed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS utterances (
    id {id},
    session_id {bigint} NOT NULL REFERENCES sessions (id),
    speaker TEXT NOT NULL,
    start_s {real} NOT NULL,
    end_s {real} NOT NULL,
    label TEXT,
    confidence {real},
    probabilities TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS utterances_session ON utterances (session_id);
CREATE INDEX IF NOT EXISTS utterances_speaker ON utterances (speaker);
CREATE TABLE IF NOT EXISTS consent (
    space TEXT NOT NULL,
    speaker TEXT NOT NULL,
    since {real} NOT NULL,
    PRIMARY KEY (space, speaker)
)"""),
    Migration(2, "which process runs each live session, and when it last said so", """
ALTER TABLE sessions ADD COLUMN owner TEXT;
ALTER TABLE sessions ADD COLUMN heartbeat {real}"""),
    Migration(3, "who agreed to transcripts, per space", """
CREATE TABLE IF NOT EXISTS transcript_consent (
    space TEXT NOT NULL,
    speaker TEXT NOT NULL,
    since {real} NOT NULL,
    PRIMARY KEY (space, speaker)
)"""),
)  # fmt: skip
CONSENTS = {"analysis": "consent", "transcripts": "transcript_consent"}  # what a speaker may agree to, and its table

HEARTBEAT_SECONDS = 30.0  # how often a process says its live sessions are still running
STALE_SECONDS = 4 * HEARTBEAT_SECONDS  # a live session nobody vouched for in this long was cut short


def pid_space() -> str:
    """Where a pid names one process: this boot of this kernel and this PID namespace (a container has
    its own), as a short digest; empty where neither can be read (not Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:12]


def process_name() -> str:
    """This process, as the sessions it runs name it: host, pid, a random part (pids are reused) and the
    pid's space (the same host name and pid in another container or after a reboot is another process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{pid_space()}"


OWNER = process_name()


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
    """Live sessions, utterances and consent, on the process's shared ``Database``."""

    def __init__(self, db: Database | Path | str, owner: str = OWNER) -> None:
        self._owns = not isinstance(db, Database)
        self.db = connect(db) if self._owns else db
        self.owner = owner
        self.db.migrate(COMPONENT, MIGRATIONS)
        self.db.holds_user_data(self)

    def start(self, space: str, room: str, started_by: str, report_to: str | None = None) -> SessionInfo:
        now = time.time()
        with self.db.transaction() as tx:
            cursor = tx.execute(
                "INSERT INTO sessions (space, room, report_to, started_by, started_at, status, owner, heartbeat)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (space, room, report_to, started_by, now, LIVE, self.owner, now),
            )
            session_id = int(cursor.fetchall()[0][0])  # to the end: SQLite commits no open statement
        return SessionInfo(session_id, space, room, started_by, now)

    def add(self, session_id: int, rows: Iterable[Utterance]) -> None:
        values = [
            (
                session_id, r.speaker, r.start, r.end, r.label, r.confidence,
                json.dumps(dict(r.probabilities)), json.dumps(dict(r.outputs)),
            )
            for r in rows
        ]  # fmt: skip
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO utterances (session_id, speaker, start_s, end_s, label, confidence, probabilities, outputs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def finish(self, session_id: int, status: str, shed: int = 0) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE sessions SET ended_at = ?, status = ?, shed = ? WHERE id = ? AND status = ?",
                (time.time(), status, shed, session_id, LIVE),
            )

    def beat(self, session_ids: Iterable[int]) -> None:
        """This process still runs these sessions."""
        with self.db.transaction() as tx:
            tx.executemany("UPDATE sessions SET heartbeat = ? WHERE id = ? AND owner = ?", [(time.time(), i, self.owner) for i in session_ids])

    def claim_orphans(self, running: Iterable[int] = ()) -> list[int]:
        """Live sessions whose process is gone, each taken over by this process (one ``UPDATE`` that
        names the owner it replaces: of two processes claiming at once, one gets it); their ids. Those
        this process claimed before and could not close yet (Discord refused the summary) come again.
        ``running``: this process's own sessions in progress."""
        running = set(running)
        with self.db.read() as db:
            rows = db.execute("SELECT id, owner, heartbeat FROM sessions WHERE status = ? ORDER BY id", (LIVE,)).fetchall()
        claimed = []
        for session_id, owner, heartbeat in rows:
            if session_id in running or not self._gone(owner, heartbeat):
                continue
            same_owner, values = ("owner IS NULL", ()) if owner is None else ("owner = ?", (owner,))
            with self.db.transaction() as tx:
                taken = tx.execute(f"UPDATE sessions SET owner = ?, heartbeat = ? WHERE id = ? AND status = ? AND {same_owner}",
                                   (self.owner, time.time(), session_id, LIVE, *values)).rowcount  # fmt: skip
            if taken:
                claimed.append(session_id)
        return claimed

    def _gone(self, owner: str | None, heartbeat: float | None) -> bool:
        """Whether the process that ran a live session no longer does."""
        if owner is None or heartbeat is None or owner == self.owner:  # from before owners were kept, or ours and not running
            return True
        host, pid, _, space = (owner.split(":") + ["", "", "", ""])[:4]
        here = pid_space()
        if here and space == here and host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            return True  # its pid is one we can see, and no process has it: it died
        return time.time() - heartbeat > STALE_SECONDS  # elsewhere (or unknown where): only silence tells

    def mark_interrupted(self, session_id: int) -> None:
        """Close a session a crash left open; its end is taken as its last utterance's."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE sessions SET status = ?, ended_at = started_at + COALESCE("
                "(SELECT MAX(end_s) FROM utterances WHERE session_id = ?), 0) WHERE id = ? AND status = ?",
                (INTERRUPTED, session_id, session_id, LIVE),
            )

    def info(self, session_id: int) -> StoredSession | None:
        with self.db.read() as db:
            row = db.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _stored(row) if row else None

    def latest(self, space: str, limit: int = 10) -> list[StoredSession]:
        """The latest sessions of a space, newest first."""
        with self.db.read() as db:
            rows = db.execute(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE space = ? ORDER BY id DESC LIMIT ?", (space, limit)
            ).fetchall()
        return [_stored(row) for row in rows]

    def utterances(self, session_id: int) -> list[Utterance]:
        with self.db.read() as db:
            rows = db.execute(
                "SELECT speaker, start_s, end_s, label, confidence, probabilities, outputs FROM utterances "
                "WHERE session_id = ? ORDER BY start_s, id",
                (session_id,),
            ).fetchall()
        return [Utterance(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6])) for r in rows]

    def speakers(self, session_id: int) -> set[str]:
        """Who spoke (and was analysed) in a session."""
        with self.db.read() as db:
            return {r[0] for r in db.execute("SELECT DISTINCT speaker FROM utterances WHERE session_id = ?", (session_id,))}

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

    def set_consent(self, space: str, speaker: str, consents: bool, to: str = "analysis") -> None:
        """Remember (or revoke) a speaker's opt-in, in one space, to live analysis or (``to="transcripts"``)
        to having their words written down: two consents, each given and taken back on its own."""
        table = CONSENTS[to]
        with self.db.transaction() as tx:
            if consents:
                tx.execute(
                    f"INSERT INTO {table} (space, speaker, since) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (space, speaker, time.time())
                )
            else:
                tx.execute(f"DELETE FROM {table} WHERE space = ? AND speaker = ?", (space, speaker))

    def consenting(self, space: str, to: str = "analysis") -> set[str]:
        """Who opted in, in one space, to live analysis or to transcripts."""
        with self.db.read() as db:
            return {r[0] for r in db.execute(f"SELECT speaker FROM {CONSENTS[to]} WHERE space = ?", (space,))}

    def agrees(self, space: str, speaker: str, to: str = "analysis") -> bool:
        """Whether one speaker opted in, in one space, to live analysis or to transcripts."""
        with self.db.read() as db:
            return db.execute(f"SELECT 1 FROM {CONSENTS[to]} WHERE space = ? AND speaker = ?", (space, speaker)).fetchone() is not None

    def delete_older_than(self, cutoff: float) -> int:
        """Sessions that ended before ``cutoff``, with their utterances (``discord.retention_days``);
        returns the utterances deleted. Running sessions are kept whole."""
        with self.db.transaction() as tx:
            return self.delete_expired(tx, cutoff)["utterances"]

    def delete_expired(self, tx: Connection, cutoff: float) -> dict[str, int]:
        """Inside the caller's transaction: sessions that ended before ``cutoff`` and their utterances."""
        finished = f"SELECT id FROM sessions WHERE status != '{LIVE}' AND COALESCE(ended_at, started_at) < ?"
        utterances = tx.execute(f"DELETE FROM utterances WHERE session_id IN ({finished})", (cutoff,)).rowcount
        tx.execute(f"DELETE FROM sessions WHERE id IN ({finished})", (cutoff,))
        return {"utterances": utterances}

    def delete_user_data(self, tx: Connection, speaker: str) -> dict[str, int]:
        """Inside the caller's transaction: the speaker's utterances and opt-ins go, and the sessions they
        started no longer name them."""
        utterances = tx.execute("DELETE FROM utterances WHERE speaker = ?", (speaker,)).rowcount
        for table in CONSENTS.values():
            tx.execute(f"DELETE FROM {table} WHERE speaker = ?", (speaker,))
        started = tx.execute("UPDATE sessions SET started_by = ? WHERE started_by = ?", (FORGOTTEN, speaker)).rowcount
        return {"utterances": utterances, "sessions_started": started}

    def close(self) -> None:
        if self._owns:
            self.db.close()


def _stored(row: tuple) -> StoredSession:
    started_at, ended_at = row[4], row[6]
    info = SessionInfo(row[0], row[1], row[2], row[3], started_at)
    return StoredSession(info, row[5], (ended_at or time.time()) - started_at, row[7], row[8])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process of that number: alive, not ours to judge
        return True
    return True
