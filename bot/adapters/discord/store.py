"""What the bot keeps: guild settings, one row per analysed note, and who declined analysis by others.

Each row is committed as soon as it is written (``Database.transaction``), so a crash loses nothing
already analysed. No audio is ever stored: a row holds whose voice it was, who asked, where, when, and
what the analysis said.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sera.database import Connection, Database, Migration, connect
from sera.plugin import Report


def _add_requested_by(db: Database, tx: Connection) -> None:
    """A file from before ``requested_by`` (whose request an analysis was, when not the voice's author's)."""
    existing = db.columns(tx, "analyses")
    if existing and "requested_by" not in existing:
        tx.execute("ALTER TABLE analyses ADD COLUMN requested_by {bigint}".format(**db.types))


def _windows_and_marks_so_far(db: Database, tx: Connection) -> None:
    """Channels enabled before windows were kept count as enabled from now on (notes posted before are
    not known to have been posted while enabled, so the catch-up leaves them); each channel's newest
    answered message is where its scanning has got to."""
    now = time.time()
    for guild_id, settings in tx.execute("SELECT guild_id, settings FROM guild_settings").fetchall():
        for channel in GuildSettings.from_json(settings).channels:
            tx.execute("INSERT INTO channel_windows (channel_id, guild_id, enabled_at) VALUES (?, ?, ?)", (channel, guild_id, now))
    tx.execute("INSERT INTO scan_marks (channel_id, guild_id, message_id) SELECT channel_id, MAX(guild_id), MAX(message_id) "
               "FROM answered_messages GROUP BY channel_id")  # fmt: skip


COMPONENT = "discord"
PENDING_FORGETS_SCHEMA = 3  # the migration that made the pending_forgets table
WINDOWS_KEPT = 20  # a channel's enabled stretches kept for the catch-up, the open one included
WINDOWS_REACH_SECONDS = 15 * 86400  # a stretch closed longer ago than any catch-up reaches (catch_up_hours <= 14 days) goes
MIGRATIONS = (
    Migration(1, "guild settings, analyses, opt-outs of analysis by others", """
CREATE TABLE IF NOT EXISTS guild_settings (
    guild_id {bigint} PRIMARY KEY,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS analyses (
    id {id},
    created {real} NOT NULL,
    user_id {bigint} NOT NULL,
    guild_id {bigint},
    channel_id {bigint},
    message_id {bigint},
    duration_s {real} NOT NULL,
    speech_s {real} NOT NULL,
    label TEXT,
    confidence {real},
    result TEXT NOT NULL,
    requested_by {bigint}
);
CREATE INDEX IF NOT EXISTS analyses_user ON analyses (user_id);
CREATE TABLE IF NOT EXISTS analysis_optout (
    user_id {bigint} PRIMARY KEY,
    since {real} NOT NULL
)""", before=_add_requested_by),
    Migration(2, "answered messages, for the catch-up after a restart", """
CREATE TABLE IF NOT EXISTS answered_messages (
    message_id {bigint} PRIMARY KEY,
    channel_id {bigint} NOT NULL,
    guild_id {bigint},
    answered {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS answered_messages_channel ON answered_messages (channel_id, message_id)"""),
    Migration(3, "when channels were enabled, where each catch-up got to, whose notes were answered, forgets to retry", """
ALTER TABLE answered_messages ADD COLUMN author_id {bigint};
CREATE INDEX IF NOT EXISTS answered_messages_author ON answered_messages (author_id);
CREATE TABLE IF NOT EXISTS channel_windows (
    channel_id {bigint} NOT NULL,
    guild_id {bigint} NOT NULL,
    enabled_at {real} NOT NULL,
    disabled_at {real}
);
CREATE INDEX IF NOT EXISTS channel_windows_channel ON channel_windows (channel_id);
CREATE TABLE IF NOT EXISTS scan_marks (
    channel_id {bigint} PRIMARY KEY,
    guild_id {bigint},
    message_id {bigint} NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_forgets (
    user_id TEXT NOT NULL,
    plugin TEXT NOT NULL,
    since {real} NOT NULL,
    PRIMARY KEY (user_id, plugin)
)""", after=_windows_and_marks_so_far),
)  # fmt: skip


@dataclass(frozen=True)
class GuildSettings:
    """Per-guild choices made by its admins with ``/sera`` commands."""

    channels: frozenset[int] = frozenset()  # where voice notes are analysed without being asked
    reply: bool = True  # answer with an embed
    reaction: bool = True  # put the emotion's emoji on the note
    chart: bool = False  # attach a PNG chart
    ephemeral: bool = False  # slash-command answers visible only to the caller
    live_feedback: bool = False  # while listening in voice, keep a "live mood" message up to date
    transcripts: bool = False  # members may agree to have their words written down (the transcript plugin)
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
    """Guild settings and analyses, on the process's shared ``Database``."""

    def __init__(self, db: Database | Path | str) -> None:
        self._owns = not isinstance(db, Database)
        self.db = connect(db) if self._owns else db
        self.db.migrate(COMPONENT, MIGRATIONS)
        self.db.holds_user_data(self)

    def settings(self, guild_id: int) -> GuildSettings:
        with self.db.read() as db:
            return _load(db, guild_id)

    def update_settings(self, guild_id: int, edit: Callable[[GuildSettings], GuildSettings]) -> GuildSettings:
        """Apply ``edit`` to the guild's settings and save them, as one transaction."""
        with self.db.transaction() as tx:
            # the row first, so that two processes editing the same guild's settings take turns on it
            tx.execute("INSERT INTO guild_settings (guild_id, settings) VALUES (?, ?) ON CONFLICT DO NOTHING",
                       (guild_id, GuildSettings().to_json()))  # fmt: skip
            current = _load(tx, guild_id, self.db.for_update)
            updated = edit(current)
            tx.execute(
                "INSERT INTO guild_settings (guild_id, settings) VALUES (?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings",
                (guild_id, updated.to_json()),
            )
            now = time.time()  # when each channel was enabled and disabled: the catch-up answers only what was posted between
            for channel in updated.channels - current.channels:
                # Windows no catch-up reaches back to, and past the latest few, go: toggling cannot grow the table.
                tx.execute("DELETE FROM channel_windows WHERE channel_id = ? AND disabled_at IS NOT NULL AND (disabled_at < ? OR enabled_at "
                           "NOT IN (SELECT enabled_at FROM channel_windows WHERE channel_id = ? ORDER BY enabled_at DESC LIMIT ?))",
                           (channel, now - WINDOWS_REACH_SECONDS, channel, WINDOWS_KEPT - 1))  # fmt: skip
                tx.execute("INSERT INTO channel_windows (channel_id, guild_id, enabled_at) VALUES (?, ?, ?)", (channel, guild_id, now))
            for channel in current.channels - updated.channels:
                tx.execute("UPDATE channel_windows SET disabled_at = ? WHERE channel_id = ? AND disabled_at IS NULL", (now, channel))
        return updated

    def record(self, report: Report, note: Origin) -> int:
        """One analysed note, stored under the voice's author (``note.author_id``)."""
        emotion = report.emotion()
        requested_by = note.requested_by if note.requested_by != note.author_id else None
        with self.db.transaction() as tx:
            cursor = tx.execute(
                "INSERT INTO analyses (created, user_id, requested_by, guild_id, channel_id, message_id, duration_s,"
                " speech_s, label, confidence, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    time.time(), note.author_id, requested_by, note.guild_id, note.channel_id, note.message_id,
                    report.duration, report.speech_seconds, emotion.label if emotion else None,
                    emotion.confidence if emotion else None, json.dumps(report.to_dict()),
                ),
            )  # fmt: skip
            (row_id,) = cursor.fetchall()[0]  # read to the end inside the transaction: SQLite commits no open statement
        return int(row_id)

    def analyses_of(self, user_id: int) -> int:
        """Analyses that name the user: of their voice, or asked for by them."""
        with self.db.read() as db:
            return db.execute(
                "SELECT COUNT(*) FROM analyses WHERE user_id = ? OR requested_by = ?", (user_id, user_id)
            ).fetchone()[0]

    def set_analysis_by_others(self, user_id: int, allowed: bool) -> None:
        """Whether members may analyse this user's voice notes (with the message menu, where enabled)."""
        with self.db.transaction() as tx:
            if allowed:
                tx.execute("DELETE FROM analysis_optout WHERE user_id = ?", (user_id,))
            else:
                tx.execute("INSERT INTO analysis_optout (user_id, since) VALUES (?, ?) ON CONFLICT DO NOTHING", (user_id, time.time()))

    def analysis_by_others_allowed(self, user_id: int) -> bool:
        with self.db.read() as db:
            return db.execute("SELECT 1 FROM analysis_optout WHERE user_id = ?", (user_id,)).fetchone() is None

    def delete_older_than(self, cutoff: float) -> int:
        """Analyses stored before ``cutoff`` (``discord.retention_days``), and the marks of the messages
        answered then; returns the analyses deleted."""
        with self.db.transaction() as tx:
            return self.delete_expired(tx, cutoff)["analyses"]

    def delete_expired(self, tx: Connection, cutoff: float) -> dict[str, int]:
        """Inside the caller's transaction: analyses and answered-message marks from before ``cutoff``."""
        tx.execute("DELETE FROM answered_messages WHERE answered < ?", (cutoff,))
        return {"analyses": tx.execute("DELETE FROM analyses WHERE created < ?", (cutoff,)).rowcount}

    def mark_answered(self, message_id: int, channel_id: int, guild_id: int | None, author_id: int | None = None) -> None:
        """A message whose voice notes were answered (or apologised for): never answered again, and where
        the bot picks up in its channel after a restart."""
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO answered_messages (message_id, channel_id, guild_id, author_id, answered) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT DO NOTHING", (message_id, channel_id, guild_id, author_id, time.time()))  # fmt: skip
            _advance(tx, channel_id, guild_id, message_id)

    def was_answered(self, message_id: int) -> bool:
        with self.db.read() as db:
            return db.execute("SELECT 1 FROM answered_messages WHERE message_id = ?", (message_id,)).fetchone() is not None

    def scanned(self, channel_id: int, guild_id: int | None, message_id: int) -> None:
        """The catch-up has read ``channel_id`` up to ``message_id``: the next one starts after it."""
        with self.db.transaction() as tx:
            _advance(tx, channel_id, guild_id, message_id)

    def catch_up_channels(self) -> list[CatchUpChannel]:
        """Every channel the bot answered or read in, and every channel a server enabled: where its
        reading got to, and (for a server's channel) when it was enabled."""
        with self.db.read() as db:
            marks = {channel: (guild, last) for channel, guild, last in db.execute("SELECT channel_id, guild_id, message_id FROM scan_marks")}
            windows: dict[int, list[tuple[float, float | None]]] = {}
            for channel, guild, start, end in db.execute("SELECT channel_id, guild_id, enabled_at, disabled_at FROM channel_windows"):
                windows.setdefault(channel, []).append((start, end))
                marks.setdefault(channel, (guild, None))
        return [CatchUpChannel(channel, guild, last, tuple(sorted(windows.get(channel, ())))) for channel, (guild, last) in sorted(marks.items())]

    def forget_scan_marks_before(self, message_id: int) -> int:
        """Drop where reading got to in channels quiet since before ``message_id`` (a snowflake: a time):
        the catch-up no longer reads them, so a start costs nothing per long-gone direct message."""
        with self.db.transaction() as tx:
            return tx.execute("DELETE FROM scan_marks WHERE message_id < ?", (message_id,)).rowcount

    def forget_answered_before(self, cutoff: float) -> int:
        """Marks older than any catch-up looks back (where each channel got to is kept apart, in scan marks)."""
        with self.db.transaction() as tx:
            return tx.execute("DELETE FROM answered_messages WHERE answered < ?", (cutoff,)).rowcount

    def forget_later(self, user: str, plugins: list[str]) -> None:
        """Plugins that could not delete ``user``'s data now: ``retry_forgets`` asks them again at the next start."""
        with self.db.transaction() as tx:
            tx.executemany("INSERT INTO pending_forgets (user_id, plugin, since) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                           [(user, plugin, time.time()) for plugin in plugins])  # fmt: skip

    def pending_forgets(self, user: str | None = None) -> dict[str, list[str]]:
        """User -> the plugins whose share of their ``/forget`` is still to delete (``user``'s alone, if given)."""
        return pending_forgets(self.db, user)

    def forgotten_by(self, user: str, plugins: list[str]) -> None:
        with self.db.transaction() as tx:
            tx.executemany("DELETE FROM pending_forgets WHERE user_id = ? AND plugin = ?", [(user, plugin) for plugin in plugins])

    def delete_user_data(self, tx: Connection, user: str) -> dict[str, int]:
        """Inside the caller's transaction: every analysis of the user's voice or asked for by them.

        Their refusal to be analysed by others is kept: deleting it would expose them again."""
        if not user.isdigit():  # a Discord user id; anything else has no analyses here
            return {"analyses": 0}
        deleted = tx.execute("DELETE FROM analyses WHERE user_id = ? OR requested_by = ?", (int(user), int(user))).rowcount
        # Where reading their direct messages got to: the channel id names them, and catch-up would read it again.
        tx.execute("DELETE FROM scan_marks WHERE guild_id IS NULL AND channel_id IN "
                   "(SELECT channel_id FROM answered_messages WHERE author_id = ? AND guild_id IS NULL)", (int(user),))  # fmt: skip
        marks = tx.execute("DELETE FROM answered_messages WHERE author_id = ?", (int(user),)).rowcount
        return {"analyses": deleted, "answered_messages": marks}

    def close(self) -> None:
        if self._owns:
            self.db.close()


@dataclass(frozen=True)
class Origin:
    """Where a note came from and who is involved: the voice's author and who asked for the analysis."""

    author_id: int
    requested_by: int
    guild_id: int | None
    channel_id: int | None
    message_id: int | None


@dataclass(frozen=True)
class CatchUpChannel:
    """A channel the catch-up reads: the message its reading got to (None: never read), and for a server's
    channel the times it was enabled (start, end or None while it still is)."""

    channel_id: int
    guild_id: int | None
    after: int | None
    windows: tuple[tuple[float, float | None], ...] = ()

    def enabled_at(self, when: float) -> bool:
        """Whether a note posted at ``when`` (Unix time) may be answered: always in a direct message; in a
        server's channel only while the channel was enabled."""
        return self.guild_id is None or any(start <= when and (end is None or when < end) for start, end in self.windows)


def pending_forgets(db: Database, user: str | None = None) -> dict[str, list[str]]:
    """The pending deletions in ``db``, read without opening a ``Store`` (which would migrate it: ``sera
    doctor`` only looks)."""
    where, values = ("WHERE user_id = ? ", (user,)) if user is not None else ("", ())
    pending: dict[str, list[str]] = {}
    with db.read() as tx:
        for row_user, plugin in tx.execute(f"SELECT user_id, plugin FROM pending_forgets {where}ORDER BY since", values):
            pending.setdefault(row_user, []).append(plugin)
    return pending


def _advance(tx: Connection, channel_id: int, guild_id: int | None, message_id: int) -> None:
    tx.execute("INSERT INTO scan_marks (channel_id, guild_id, message_id) VALUES (?, ?, ?) ON CONFLICT (channel_id) DO UPDATE "
               "SET message_id = excluded.message_id WHERE scan_marks.message_id < excluded.message_id", (channel_id, guild_id, message_id))  # fmt: skip


def _load(db: Connection, guild_id: int, lock: str = "") -> GuildSettings:
    row = db.execute(f"SELECT settings FROM guild_settings WHERE guild_id = ?{lock}", (guild_id,)).fetchone()
    return GuildSettings.from_json(row[0]) if row else GuildSettings()
