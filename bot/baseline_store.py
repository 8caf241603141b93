"""Personal baselines in the database, and who lets their own voice keep theirs current.

A baseline is a few kilobytes of statistics (``sera.baseline.Baseline``: a count, a mean embedding,
heard-emotion counts), never audio, kept per speaker and embedding space. It grows from what the user
enrols (``/emotion baseline add``) and, only where they turned it on (``/emotion baseline learn``),
from their own voice notes and live utterances. ``/forget`` deletes both; retention deletes baselines
not updated within ``discord.retention_days``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from sera.baseline import Baseline, Observation, spread
from sera.database import Connection, Database, Migration, connect
from sera.errors import SeraError

COMPONENT = "baselines"
MIGRATIONS = (
    Migration(1, "personal baselines, and who lets their voice notes and utterances update theirs", """
CREATE TABLE IF NOT EXISTS baselines (
    speaker TEXT NOT NULL,
    space TEXT NOT NULL,
    clips INTEGER NOT NULL,
    stats {blob} NOT NULL,
    updated {real} NOT NULL,
    PRIMARY KEY (speaker, space)
);
CREATE TABLE IF NOT EXISTS baseline_learning (
    speaker TEXT PRIMARY KEY,
    since {real} NOT NULL
)"""),
)  # fmt: skip


class AlreadyAdded(SeraError):
    """The same recording, enrolled twice: it would count one voice sample as many."""


class BaselineStore:
    """Baselines on the process's shared ``Database``; a speaker is a user id as text."""

    def __init__(self, db: Database | Path | str) -> None:
        self._owns = not isinstance(db, Database)
        self.db = connect(db) if self._owns else db
        self.db.migrate(COMPONENT, MIGRATIONS)
        self.db.holds_user_data(self)

    def get(self, speaker: str, space: str) -> Baseline | None:
        with self.db.read() as db:
            row = db.execute("SELECT stats FROM baselines WHERE speaker = ? AND space = ?", (speaker, space)).fetchone()
        return Baseline.from_bytes(space, bytes(row[0])) if row else None

    def add(self, speaker: str, observations: Sequence[Observation], source: str | None = None) -> Baseline | None:
        """The speaker's baseline with one recording's ``observations`` added (at most
        ``CLIPS_PER_RECORDING`` of them, spread over it), as one transaction (the row read under a lock,
        so two processes adding at once lose nothing); None when there is nothing to add. ``source``
        (the recording's sha256): a recording enrolled before is refused (``AlreadyAdded``)."""
        if not observations:
            return None
        observations = spread(observations)
        space = observations[0].space
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO baselines (speaker, space, clips, stats, updated) VALUES (?, ?, 0, ?, ?) ON CONFLICT DO NOTHING",
                       (speaker, space, Baseline.empty(observations[0]).to_bytes(), time.time()))  # fmt: skip
            row = tx.execute(f"SELECT stats FROM baselines WHERE speaker = ? AND space = ?{self.db.for_update}", (speaker, space)).fetchone()
            current = Baseline.from_bytes(space, bytes(row[0]))
            if source and source in current.sources:
                raise AlreadyAdded("you added this recording to your baseline before; nothing was added")
            updated = current.add(observations, source)
            tx.execute("UPDATE baselines SET clips = ?, stats = ?, updated = ? WHERE speaker = ? AND space = ?",
                       (updated.count, updated.to_bytes(), time.time(), speaker, space))  # fmt: skip
        return updated

    def clear(self, speaker: str) -> int:
        """The speaker's baselines, deleted (their choice to learn from their voice is kept)."""
        with self.db.transaction() as tx:
            return tx.execute("DELETE FROM baselines WHERE speaker = ?", (speaker,)).rowcount

    def learning(self, speaker: str) -> bool:
        """Whether the speaker's own voice notes and live utterances keep their baseline current."""
        with self.db.read() as db:
            return db.execute("SELECT 1 FROM baseline_learning WHERE speaker = ?", (speaker,)).fetchone() is not None

    def set_learning(self, speaker: str, on: bool) -> None:
        with self.db.transaction() as tx:
            if on:
                tx.execute("INSERT INTO baseline_learning (speaker, since) VALUES (?, ?) ON CONFLICT DO NOTHING", (speaker, time.time()))
            else:
                tx.execute("DELETE FROM baseline_learning WHERE speaker = ?", (speaker,))

    def delete_older_than(self, cutoff: float) -> int:
        """Baselines not updated since ``cutoff`` (``discord.retention_days``)."""
        with self.db.transaction() as tx:
            return self.delete_expired(tx, cutoff)["baselines"]

    def delete_expired(self, tx: Connection, cutoff: float) -> dict[str, int]:
        """Inside the caller's transaction: baselines not updated since ``cutoff``."""
        return {"baselines": tx.execute("DELETE FROM baselines WHERE updated < ?", (cutoff,)).rowcount}

    def delete_user_data(self, tx: Connection, speaker: str) -> dict[str, int]:
        """Inside the caller's transaction: the speaker's baselines and their choice to learn."""
        deleted = tx.execute("DELETE FROM baselines WHERE speaker = ?", (speaker,)).rowcount
        tx.execute("DELETE FROM baseline_learning WHERE speaker = ?", (speaker,))
        return {"baselines": deleted}

    def close(self) -> None:
        if self._owns:
            self.db.close()
