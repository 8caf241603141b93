"""Voice notes posted while the bot was away (a restart, a crash, a gateway outage) are answered when it
comes back: whenever the gateway starts a new session (``on_ready``), oldest first, each once. A
resumed session needs none: Discord replays the events it missed.

Where to look is every channel the bot answered or read in lately (each keeps a scan mark: how far the
bot has read it) and the channels servers enabled (with when each was enabled and disabled); how far
back is bounded by ``discord.catch_up_hours``, the channel's enabling and its mark, and how many notes
per channel by ``discord.catch_up_max``. A mark older than ``MARK_WINDOWS`` catch-up windows is dropped
(nothing behind it could be answered), and at most ``MAX_CHANNELS`` channels, the most recently active
first, are read per catch-up: the requests a start makes do not grow with every user who ever wrote.
A message the bot already answered (or is answering) is never answered again, also when the live
message event and the catch-up meet the same message. A backlog is not held to the per-user rate of
live notes: it is answered one note at a time, waiting for a free slot rather than refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone

import discord
from discord.ext import commands

from sera.adapters.discord.notes import Deferred, VoiceNotes
from sera.adapters.discord.people import where
from sera.adapters.discord.store import CatchUpChannel, Store
from sera.config import DiscordOptions

log = logging.getLogger(__name__)

SCAN_PER_NOTE = 20  # messages read per note answered at most: a busy channel's chatter between notes
MARK_WINDOWS = 2  # scan marks older than this many catch_up_hours are pruned, and their channels not read
MAX_CHANNELS = 100  # channels read per catch-up (a direct message costs two requests: fetch, history)


class CatchUp(commands.Cog):
    def __init__(self, bot: commands.Bot, notes: VoiceNotes, store: Store, options: DiscordOptions) -> None:
        self.bot = bot
        self.notes = notes
        self.store = store
        self.options = options
        self.running: asyncio.Task[dict[int, int]] | None = None

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        self.start()

    def start(self) -> None:
        """One catch-up at a time, in the background: the gateway's events are handled meanwhile."""
        if self.options.catch_up_hours <= 0 or self.options.catch_up_max <= 0:
            return
        if self.running is None or self.running.done():
            self.running = asyncio.create_task(self.run())

    async def run(self) -> dict[int, int]:
        """Answer what was missed; returns the notes answered per channel (for the log and tests).

        Each channel is read from where its last reading got to (a scan mark, kept whether or not it held
        a note, so a quiet channel is not read again at every resume), never further back than
        ``catch_up_hours`` nor, in a server, than when the channel was enabled; and a note is answered
        only if it was posted while its channel was enabled: one posted before an admin enabled it, or
        while it was off, was never meant for the bot."""
        window = timedelta(hours=self.options.catch_up_hours)
        since = discord.utils.utcnow() - window
        await asyncio.to_thread(self.store.forget_answered_before, time.time() - MARK_WINDOWS * window.total_seconds())
        await asyncio.to_thread(self.store.forget_scan_marks_before, discord.utils.time_snowflake(since - (MARK_WINDOWS - 1) * window))
        channels = sorted(await asyncio.to_thread(self.store.catch_up_channels), key=lambda mark: mark.after or 0, reverse=True)
        if len(channels) > MAX_CHANNELS:
            log.warning("catch-up reads the %d most recently active of %d channels", MAX_CHANNELS, len(channels), extra={"event": "catch_up"})
        answered: dict[int, int] = {}
        for mark in sorted(channels[:MAX_CHANNELS], key=lambda mark: mark.channel_id):
            first = start_of(mark, since.timestamp())
            channel = await self._channel(mark.channel_id, mark.guild_id) if first is not None else None
            if channel is None:
                continue
            count, last = 0, None
            try:
                after = discord.Object(id=max(mark.after or 0, discord.utils.time_snowflake(datetime.fromtimestamp(first, timezone.utc))))
                async for message in channel.history(after=after, limit=self.options.catch_up_max * SCAN_PER_NOTE, oldest_first=True):
                    if self.bot.is_closed() or count >= self.options.catch_up_max:
                        break
                    if mark.enabled_at(discord.utils.snowflake_time(message.id).timestamp()) and await self.notes.handle(message, catching_up=True):
                        count += 1
                    last = message.id
            except Deferred:
                log.info("catch-up of %s stopped for shutdown; the next one goes on from there", where(mark.channel_id))
            except discord.HTTPException as error:
                log.warning("could not read %s to catch up: %s", where(mark.channel_id), error)
            if last is not None:
                await asyncio.to_thread(self.store.scanned, mark.channel_id, mark.guild_id, last)
            if count:
                answered[mark.channel_id] = count
                log.info("caught up with %d voice notes in %s", count, where(mark.channel_id), extra={"guild": mark.guild_id, "event": "catch_up"})
        return answered

    async def _channel(self, channel_id: int, guild_id: int | None) -> discord.abc.Messageable | None:
        """The channel, if it is this process's to answer in: its server on one of our shards, or a
        direct message (Discord sends those to shard 0), fetched when not cached after a restart."""
        channel = self.bot.get_channel(channel_id)
        if channel is not None or guild_id is not None:
            return channel
        if 0 not in (getattr(self.bot, "shard_ids", None) or [0]):
            return None
        try:
            return await self.bot.fetch_channel(channel_id)
        except discord.HTTPException as error:
            log.info("direct-message %s not reachable to catch up: %s", where(channel_id), error)
            return None


def start_of(mark: CatchUpChannel, floor: float) -> float | None:
    """The earliest time (Unix) worth reading back to in a channel: the age floor, or in a server's
    channel the start of its earliest enabled stretch that reaches past the floor; None when no such
    stretch does (a channel enabled only long ago)."""
    if mark.guild_id is None:
        return floor
    open_since = [start for start, end in mark.windows if end is None or end > floor]
    return max(floor, min(open_since)) if open_since else None


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(CatchUp(bot, bot.get_cog("VoiceNotes"), bot.store, bot.config.discord))
