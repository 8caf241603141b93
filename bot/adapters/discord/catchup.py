"""Voice notes posted while the bot was away (a restart, a crash, a gateway outage) are answered when it
comes back: on start and after a resumed gateway session, oldest first, each once.

Where to look is what the bot answered before (each answered message is stored, so the newest one per
channel marks where the bot left off) and the channels servers enabled; how far back is bounded by
``discord.catch_up_hours`` and how many notes per channel by ``discord.catch_up_max``. A message the
bot already answered (or is answering) is never answered again, also when the live message event and
the catch-up meet the same message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import discord
from discord.ext import commands

from sera.adapters.discord.notes import VoiceNotes
from sera.adapters.discord.store import Store
from sera.config import DiscordOptions

log = logging.getLogger(__name__)

SCAN_PER_NOTE = 20  # messages read per note answered at most: a busy channel's chatter between notes


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

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        self.start()

    def start(self) -> None:
        """One catch-up at a time, in the background: the gateway's events are handled meanwhile."""
        if self.options.catch_up_hours <= 0 or self.options.catch_up_max <= 0:
            return
        if self.running is None or self.running.done():
            self.running = asyncio.create_task(self.run())

    async def run(self) -> dict[int, int]:
        """Answer what was missed; returns the notes answered per channel (for the log and tests)."""
        window = timedelta(hours=self.options.catch_up_hours)
        floor = discord.utils.time_snowflake(discord.utils.utcnow() - window)
        await asyncio.to_thread(self.store.forget_answered_before, time.time() - 2 * window.total_seconds())
        answered: dict[int, int] = {}
        for channel_id, guild_id, last in await asyncio.to_thread(self.store.catch_up_channels):
            channel = await self._channel(channel_id, guild_id)
            if channel is None:
                continue
            count = 0
            try:
                after = discord.Object(id=max(last or 0, floor))
                scan = self.options.catch_up_max * SCAN_PER_NOTE
                async for message in channel.history(after=after, limit=scan, oldest_first=True):
                    if self.bot.is_closed() or count >= self.options.catch_up_max:
                        break
                    if await self.notes.handle(message):
                        count += 1
            except discord.HTTPException as error:
                log.warning("could not read channel %s to catch up: %s", channel_id, error)
            if count:
                answered[channel_id] = count
                log.info("caught up with %d voice notes in channel %s", count, channel_id, extra={"guild": guild_id, "event": "catch_up"})
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
            log.info("direct-message channel %s not reachable to catch up: %s", channel_id, error)
            return None


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(CatchUp(bot, bot.get_cog("VoiceNotes"), bot.store, bot.config.discord))
