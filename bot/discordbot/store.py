"""What the bot keeps: guild settings and one row per analysed note, in SQLite (WAL).

Each row is committed as soon as it is written, so a crash loses nothing already analysed. No audio is
ever stored: a row holds who asked, where, when, and what the analysis said.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.database import open_database
from bot.errors import SeraError
from bot.plugin import Report

SCHEMA = """
CREATE TABLE IF NOT EXISTS guild_settings (
    guild_id INTEGER PRIMARY KEY,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS analyses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    user_id INTEGER NOT NULL,
    guild_id INTEGER,
    channel_id INTEGER,
    message_id INTEGER,
    duration_s REAL NOT NULL,
    speech_s REAL NOT NULL,
    label TEXT,
    confidence REAL,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS analyses_user ON analyses (user_id);
"""


@dataclass(frozen=True)
class GuildSettings:
    """Per-guild choices made by its admins with ``/sera`` commands."""

    channels: frozenset[int] = frozenset()  # where voice notes are analysed without being asked
    reply: bool = True  # answer with an embed
    reaction: bool = True  # put the emotion's emoji on the note
    chart: bool = False  # attach a PNG chart
    ephemeral: bool = False  # slash-command answers visible only to the caller
    live_feedback: bool = False  # while listening in voice, keep a "live mood" message up to date
    disabled_plugins: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> str:
        values = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in self.__dict__.items()}
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> GuildSettings:
        values = json.loads(text)
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("channels", "disabled_plugins"):
            if key in known:
                known[key] = frozenset(known[key])
        return cls(**known)


class Store:
    """One connection shared by the bot's threads, serialised by a lock (SQLite calls take microseconds)."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, SCHEMA)
        self.path = path
        self._lock = threading.Lock()

    def settings(self, guild_id: int) -> GuildSettings:
        with self._lock:
            return self._load(guild_id)

    def update_settings(self, guild_id: int, edit: Callable[[GuildSettings], GuildSettings]) -> GuildSettings:
        """Apply ``edit`` to the guild's settings and save them, as one step under the lock."""
        with self._lock:
            updated = edit(self._load(guild_id))
            self._db.execute(
                "INSERT INTO guild_settings (guild_id, settings) VALUES (?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings",
                (guild_id, updated.to_json()),
            )
        return updated

    def _load(self, guild_id: int) -> GuildSettings:
        row = self._db.execute("SELECT settings FROM guild_settings WHERE guild_id = ?", (guild_id,)).fetchone()
        return GuildSettings.from_json(row[0]) if row else GuildSettings()

    def record(self, report: Report, user_id: int, guild_id: int | None, channel_id: int | None, message_id: int | None) -> int:
        emotion = report.emotion()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO analyses (created, user_id, guild_id, channel_id, message_id, duration_s, speech_s,"
                " label, confidence, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(), user_id, guild_id, channel_id, message_id, report.duration, report.speech_seconds,
                    emotion.label if emotion else None, emotion.confidence if emotion else None,
                    json.dumps(report.to_dict()),
                ),
            )  # fmt: skip
        return int(cursor.lastrowid)

    def analyses_of(self, user_id: int) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM analyses WHERE user_id = ?", (user_id,)).fetchone()[0]

    def forget(self, user_id: int) -> int:
        """Delete everything stored about a user; returns how many rows went."""
        with self._lock:
            return self._db.execute("DELETE FROM analyses WHERE user_id = ?", (user_id,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
