"""Nothing missed across a restart: voice notes posted while the bot was down are answered when it is
back, oldest first and once each; a shutdown in the middle of a burst loses none of them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import discord
import numpy as np
import pytest

from sera.adapters.discord.testing import FakeChannel, FakeGuild, FakeMessage, FakeUser, Harness
from sera.audio import decode
from sera.pipeline import Pipeline
from tests.conftest import SAMPLE_NOTE, encode, eventually

NOTE = SAMPLE_NOTE.read_bytes()


def enable(harness: Harness, guild: FakeGuild, *channels: FakeChannel, hours_ago: float = 48.0) -> None:
    """An admin's ``/sera channel``, dated ``hours_ago`` (the tests' notes are posted in the past)."""
    harness.store.update_settings(guild.id, lambda s: replace(s, channels=s.channels | {c.id for c in channels}))
    with harness.store.db.transaction() as tx:
        for channel in channels:
            tx.execute("UPDATE channel_windows SET enabled_at = ? WHERE channel_id = ?", (time.time() - hours_ago * 3600, channel.id))


def restart(down: Harness, folder: Path, pipeline: Pipeline) -> Harness:
    """A new bot process on the same database; Discord still has every channel and message."""
    down.close()
    up = Harness(folder, pipeline=pipeline, message_content=True)
    up.channels = down.channels
    asyncio.run(up.start())
    return up


def answered_in(harness: Harness, channel: FakeChannel) -> list[int]:
    """The ids of the messages analysed in ``channel``, in the order they were analysed."""
    with harness.store.db.read() as db:
        return [row[0] for row in db.execute("SELECT message_id FROM analyses WHERE channel_id = ? ORDER BY id", (channel.id,))]


def test_notes_posted_while_the_bot_was_down_are_answered_once_oldest_first(tmp_path: Path, pipeline: Pipeline) -> None:
    guild, room, fresh, closed = FakeGuild(), FakeChannel(), FakeChannel(), FakeChannel()
    alice = FakeUser()
    first = Harness(tmp_path, pipeline=pipeline, message_content=True)
    asyncio.run(first.start())
    enable(first, guild, room, fresh)
    now = discord.utils.utcnow()
    seen = first.message(first.attachment(NOTE), guild=guild, channel=room, author=alice, at=now - timedelta(minutes=10))
    dm_seen = first.message(first.attachment(NOTE), author=alice, at=now - timedelta(minutes=10))
    for message in (seen, dm_seen):
        asyncio.run(first.cog.on_message(message))
    assert len(seen.replies) == len(dm_seen.replies) == 1

    # the bot goes down; people keep posting
    room_missed = [first.message(first.attachment(NOTE), guild=guild, channel=room, at=now - timedelta(minutes=m)) for m in (3, 1)]
    dm_missed = first.message(first.attachment(NOTE), channel=dm_seen.channel, author=alice, at=now - timedelta(minutes=2))
    too_old = first.message(first.attachment(NOTE), guild=guild, channel=fresh, at=now - timedelta(hours=30))
    fresh_missed = first.message(first.attachment(NOTE), guild=guild, channel=fresh, at=now - timedelta(hours=2))
    not_enabled = first.message(first.attachment(NOTE), guild=guild, channel=closed, at=now - timedelta(minutes=5))
    chatter = first.message(guild=guild, channel=room, at=now - timedelta(minutes=2))  # no note: nothing to answer

    second = restart(first, tmp_path, pipeline)
    catch_up = second.bot.get_cog("CatchUp")

    async def on_ready() -> dict[int, int]:
        await second.bot.get_cog("CatchUp").on_ready()
        return await catch_up.running

    assert asyncio.run(on_ready()) == {room.id: 2, dm_seen.channel.id: 1, fresh.id: 1}
    assert answered_in(second, room) == [seen.id, *sorted(m.id for m in room_missed)]  # oldest first, after the last answered
    for message in (*room_missed, dm_missed, fresh_missed):
        assert len(message.replies) == 1 and message.replies[0]["embed"] is not None
    assert len(seen.replies) == len(dm_seen.replies) == 1  # answered before the restart: not again
    assert not too_old.replies and not not_enabled.replies and not chatter.replies

    # a gateway resume runs the catch-up again, and a late live event meets a message already answered
    assert asyncio.run(catch_up.run()) == {}
    asyncio.run(second.cog.on_message(room_missed[0]))
    assert len(room_missed[0].replies) == 1
    second.close()


def test_the_catch_up_is_bounded_per_channel_and_can_be_turned_off(tmp_path: Path, pipeline: Pipeline) -> None:
    guild, room = FakeGuild(), FakeChannel()
    first = Harness(tmp_path, pipeline=pipeline, message_content=True, catch_up_max=2)
    asyncio.run(first.start())
    enable(first, guild, room)
    now = discord.utils.utcnow()
    missed = [first.message(first.attachment(NOTE), guild=guild, channel=room, at=now - timedelta(minutes=m)) for m in (4, 3, 2)]
    off = Harness(tmp_path / "off", pipeline=pipeline, message_content=True, catch_up_hours=0)
    asyncio.run(off.start())
    off.channels = first.channels
    enable(off, guild, room)
    off.bot.get_cog("CatchUp").start()
    assert off.bot.get_cog("CatchUp").running is None  # catch_up_hours: 0 turns it off
    off.close()
    assert asyncio.run(first.bot.get_cog("CatchUp").run()) == {room.id: 2}
    assert [len(m.replies) for m in missed] == [1, 1, 0]  # the oldest two; the next catch-up goes on from there
    assert asyncio.run(first.bot.get_cog("CatchUp").run()) == {room.id: 1}
    assert [len(m.replies) for m in missed] == [1, 1, 1]
    first.close()


def test_a_shutdown_during_a_burst_loses_no_note(tmp_path: Path, pipeline: Pipeline) -> None:
    """SIGTERM while three long notes are being analysed and two more arrive: the three are answered with
    an apology (past the grace), the two are not started; after the restart the catch-up answers exactly
    those two, and none of the five twice."""
    speech = np.tile(decode(SAMPLE_NOTE), 12)  # about two minutes of speech: seconds of work each
    long_note = encode(speech, 16_000, tmp_path / "long.ogg", "-c:a", "libopus").read_bytes()
    alice = FakeUser()
    first = Harness(tmp_path, pipeline=pipeline, message_content=True)
    asyncio.run(first.start())
    dm = FakeChannel()
    in_flight = [first.message(first.attachment(long_note, duration=120.0), channel=dm, author=alice) for _ in range(2)]
    in_flight.append(first.message(first.attachment(long_note, duration=120.0), author=FakeUser()))
    late: list[FakeMessage] = []

    async def burst() -> None:
        handlers = [asyncio.create_task(first.cog.on_message(m)) for m in in_flight]
        await eventually(lambda: first.cog.slots.used == len(in_flight), 10)  # they are being analysed
        first.bot.closing = True  # what SeraBot.close() sets before it drains
        late.extend(first.message(first.attachment(NOTE), channel=dm, author=alice) for _ in range(2))
        await asyncio.gather(*(first.cog.on_message(m) for m in late))
        await first.cog.drain(timeout=0.01)
        await asyncio.gather(*handlers)

    asyncio.run(burst())
    assert all(len(m.replies) == 1 and "I'm restarting" in m.replies[0]["content"] for m in in_flight)
    assert not any(m.replies for m in late)

    second = restart(first, tmp_path, pipeline)
    answered = asyncio.run(second.bot.get_cog("CatchUp").run())
    assert answered == {dm.id: 2}
    assert all(len(m.replies) == 1 and m.replies[0]["embed"] is not None for m in late)
    assert all(len(m.replies) == 1 for m in in_flight)  # the apology was their answer
    second.close()


@pytest.mark.parametrize("key", ["catch_up_hours", "catch_up_max"])
def test_catch_up_settings_are_range_checked(tmp_path: Path, key: str) -> None:
    from sera.config import load
    from sera.errors import ConfigError

    config = tmp_path / "sera.yaml"
    config.write_text(f"discord:\n  {key}: -1\n")
    with pytest.raises(ConfigError, match=f"'discord.{key}' must be"):
        load(str(config))


def test_each_process_runs_its_shards_and_only_shard_0s_catches_up_direct_messages(tmp_path: Path, pipeline: Pipeline) -> None:
    from discord.ext import commands

    from tests.conftest import sera

    first = Harness(tmp_path, pipeline=pipeline, message_content=True)
    asyncio.run(first.start())
    alice = FakeUser()
    now = discord.utils.utcnow()
    answered = first.message(first.attachment(NOTE), author=alice, at=now - timedelta(minutes=5))
    asyncio.run(first.cog.on_message(answered))
    missed = first.message(first.attachment(NOTE), channel=answered.channel, author=alice, at=now - timedelta(minutes=1))
    first.close()
    other = Harness(tmp_path, pipeline=pipeline, message_content=True, shard_count=4, shard_ids=[1, 3])
    other.channels = first.channels
    asyncio.run(other.start())
    assert isinstance(other.bot, commands.AutoShardedBot) and (other.bot.shard_count, other.bot.shard_ids) == (4, [1, 3])
    assert asyncio.run(other.bot.get_cog("CatchUp").run()) == {} and not missed.replies  # direct messages are shard 0's
    other.close()
    zero = Harness(tmp_path, pipeline=pipeline, message_content=True, shard_count=4, shard_ids=[0, 2])
    zero.channels = first.channels
    asyncio.run(zero.start())
    assert asyncio.run(zero.bot.get_cog("CatchUp").run()) == {answered.channel.id: 1} and len(missed.replies) == 1
    zero.close()

    for flags, message in ((["--shard-count", "2", "--shard-ids", "0,2"], "must be between 0 and discord.shard_count - 1 (1)"),
                           (["--shard-ids", "1"], "discord.shard_ids needs discord.shard_count"),
                           (["--shard-count", "2", "--shard-ids", "0,0"], "names a shard twice"),
                           (["--shard-count", "2", "--shard-ids", "zero"], "--shard-ids must be numbers")):  # fmt: skip
        done = sera("run", *flags)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_retention_deletes_old_analyses_and_utterances_and_privacy_says_so(tmp_path: Path, pipeline: Pipeline) -> None:
    from sera.adapters.discord.store import Origin
    from sera.adapters.discord.testing import invoke
    from sera.baseline import Observation
    from sera.plugin import Report
    from sera.sessions import ENDED
    from sera.summary import Utterance

    harness = Harness(tmp_path, pipeline=pipeline, retention_days=30)
    asyncio.run(harness.start())
    report = Report(source="note.ogg", duration=3.0, segments=[(0.5, 2.5)], outputs={})
    old, recent = (harness.store.record(report, Origin(7, 7, None, None, None)) for _ in range(2))
    sessions = harness.bot.sessions
    finished, running = sessions.start("g", "r", "7"), sessions.start("g", "r", "7")
    for info in (finished, running):
        sessions.add(info.id, [Utterance("7", 0.0, 1.0, "calm", 0.9, {"calm": 0.9}, {})])
    sessions.finish(finished.id, ENDED)
    for speaker in ("7", "8"):
        harness.bot.baselines.add(speaker, [Observation("space", np.ones(4, np.float32), 0, 8)])
    forty_days_ago = time.time() - 40 * 24 * 3600
    with harness.store.db.transaction() as tx:
        tx.execute("UPDATE analyses SET created = ? WHERE id = ?", (forty_days_ago, old))
        tx.execute("UPDATE sessions SET started_at = ?, ended_at = ?", (forty_days_ago, forty_days_ago))
        tx.execute("UPDATE baselines SET updated = ? WHERE speaker = '7'", (forty_days_ago,))
    deleted = asyncio.run(harness.bot.get_cog("Retention").sweep())
    assert deleted == {"analyses": 1, "utterances": 1, "baselines": 1}
    assert harness.store.analyses_of(7) == 1 and sessions.info(finished.id) is None and sessions.utterances(running.id)
    assert harness.bot.baselines.get("7", "space") is None and harness.bot.baselines.get("8", "space").count == 1
    asked = harness.interaction()
    asyncio.run(invoke(harness.privacy.privacy, asked))
    assert "deleted after 30 days, and a baseline 30 days after it last changed" in asked.sent()[0]["content"]
    harness.close()
    off = Harness(tmp_path / "off", pipeline=pipeline)
    asyncio.run(off.start())
    assert off.bot.get_cog("Retention") is None and off.bot.get_cog("CatchUp") is not None  # retention: off by default
    off.close()


def test_only_notes_posted_while_the_channel_was_enabled_are_caught_up(tmp_path: Path, pipeline: Pipeline) -> None:
    """A note posted before an admin enabled the channel, or while it was off, was never meant for the
    bot: the catch-up leaves it, also at every later resume."""
    guild, room = FakeGuild(), FakeChannel()
    first = Harness(tmp_path, pipeline=pipeline, message_content=True)
    asyncio.run(first.start())
    now = discord.utils.utcnow()
    before = first.message(first.attachment(NOTE), guild=guild, channel=room, at=now - timedelta(minutes=50))
    enable(first, guild, room, hours_ago=40 / 60)  # enabled 40 minutes ago...
    during = first.message(first.attachment(NOTE), guild=guild, channel=room, at=now - timedelta(minutes=30))
    with first.store.db.transaction() as tx:  # ...off from 20 to 10 minutes ago
        tx.execute("UPDATE channel_windows SET disabled_at = ? WHERE channel_id = ?", (time.time() - 20 * 60, room.id))
        tx.execute("INSERT INTO channel_windows (channel_id, guild_id, enabled_at) VALUES (?, ?, ?)", (room.id, guild.id, time.time() - 10 * 60))
    off = first.message(first.attachment(NOTE), guild=guild, channel=room, at=now - timedelta(minutes=15))
    again = first.message(first.attachment(NOTE), guild=guild, channel=room, at=now - timedelta(minutes=5))
    second = restart(first, tmp_path, pipeline)
    assert asyncio.run(second.bot.get_cog("CatchUp").run()) == {room.id: 2}
    assert [len(m.replies) for m in (before, during, off, again)] == [0, 1, 0, 1]
    assert asyncio.run(second.bot.get_cog("CatchUp").run()) == {}  # a resume: still not
    assert not before.replies and not off.replies
    second.close()


def test_a_backlog_is_answered_whole_and_a_quiet_channel_is_not_read_again(tmp_path: Path, pipeline: Pipeline, monkeypatch) -> None:
    """Eight notes one user posted while the bot was down (more than the six a minute a live user may
    send) are all answered, none refused as "too fast"; and the next catch-up reads only what came after."""
    guild, room, quiet = FakeGuild(), FakeChannel(), FakeChannel()
    alice = FakeUser()
    first = Harness(tmp_path, pipeline=pipeline, message_content=True)
    asyncio.run(first.start())
    enable(first, guild, room, quiet)
    now = discord.utils.utcnow()
    backlog = [first.message(first.attachment(NOTE), guild=guild, channel=room, author=alice, at=now - timedelta(minutes=20 - m))
               for m in range(8)]  # fmt: skip
    chatter = [first.message(guild=guild, channel=quiet, at=now - timedelta(minutes=m)) for m in (9, 8, 7)]
    second = restart(first, tmp_path, pipeline)
    assert asyncio.run(second.bot.get_cog("CatchUp").run()) == {room.id: 8}
    assert all(len(m.replies) == 1 and m.replies[0]["embed"] is not None for m in backlog)
    assert second.cog.failures["rate_limited"] == 0
    read: list[int] = []
    history = FakeChannel.history

    def counting(channel, **kwargs):
        async def reading():
            async for message in history(channel, **kwargs):
                read.append(message.id)
                yield message
        return reading()

    monkeypatch.setattr(FakeChannel, "history", counting)
    assert asyncio.run(second.bot.get_cog("CatchUp").run()) == {}
    assert read == []  # both channels picked up after their last message: nothing read again
    later = second.message(guild=guild, channel=quiet)
    asyncio.run(second.bot.get_cog("CatchUp").run())
    assert read == [later.id] and chatter
    second.close()


def test_a_start_reads_only_recent_channels_and_a_resume_reads_none(tmp_path: Path, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 users who wrote a month ago and 3 who wrote today: a start fetches the 3 direct-message channels
    and prunes the other marks; at most ``MAX_CHANNELS`` are read; a resumed session reads nothing
    (Discord replays what it missed)."""
    harness = Harness(tmp_path, pipeline=pipeline, message_content=True)
    asyncio.run(harness.start())
    now = discord.utils.utcnow()
    recent = [harness.message(harness.attachment(NOTE), author=FakeUser(), at=now - timedelta(minutes=30)) for _ in range(3)]
    for message in recent:
        asyncio.run(harness.cog.on_message(message))
    month_ago = discord.utils.time_snowflake(now - timedelta(days=30))
    for channel_id in range(1000, 1300):
        harness.store.scanned(channel_id, None, month_ago)
    fetched: list[int] = []
    fetch = harness.bot.fetch_channel

    async def counting(channel_id: int) -> object:
        fetched.append(channel_id)
        return await fetch(channel_id)

    harness.bot.fetch_channel = counting
    harness.bot.get_channel = lambda channel_id: None  # after a restart nothing is cached
    cog = harness.bot.get_cog("CatchUp")
    assert "on_resumed" not in [name for name, _ in cog.get_listeners()]
    assert asyncio.run(cog.run()) == {}
    assert sorted(fetched) == sorted(m.channel.id for m in recent)
    with harness.store.db.read() as db:
        assert db.execute("SELECT COUNT(*) FROM scan_marks").fetchone()[0] == 3  # the month-old marks are gone
    fetched.clear()
    monkeypatch.setitem(cog.run.__globals__, "MAX_CHANNELS", 2)  # the module the extension loaded (discord.py loads its own copy)
    asyncio.run(cog.run())
    assert len(fetched) == 2
    harness.close()
