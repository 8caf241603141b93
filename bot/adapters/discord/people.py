"""How the operator's log names people and their channels: never by a Discord id, by a pseudonym.

A log line outlives a ``/forget``: lines kept by journald, Loki or a file would otherwise still say which
user sent which note when, long after their data is gone. Each process names a user by a keyed hash of
their id under a key of its own, drawn at start and never stored: within a run the operator can follow
one user's notes through the log; across runs, and once the process is gone, nobody can tell who it was.
"""

from __future__ import annotations

import hashlib
import secrets

_KEY = secrets.token_bytes(16)


def who(user_id: int | str | None) -> str:
    """``user 1a2b3c4d``: the same user, the same name, for the life of this process only."""
    if user_id is None:
        return "user ?"
    return "user " + hashlib.blake2s(str(user_id).encode(), key=_KEY, digest_size=4).hexdigest()


def where(channel_id: int | str | None) -> str:
    """``channel 5e6f7a8b``: a direct-message channel's id names the user on the other end, so no channel
    id is logged in clear; the same channel, the same name, for the life of this process only."""
    if channel_id is None:
        return "channel ?"
    return "channel " + hashlib.blake2s(str(channel_id).encode(), key=_KEY, digest_size=4, person=b"channel").hexdigest()
