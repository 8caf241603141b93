"""``discord.retention_days``: analyses and voice-channel utterances older than that, and baselines not
updated for that long, are deleted on start and then once a day, in every store that keeps them;
``/privacy`` says so."""

from __future__ import annotations

import asyncio
import logging
import time

from discord.ext import commands, tasks

from sera.adapters.discord.store import Store
from sera.baseline_store import BaselineStore
from sera.sessions import SessionStore

log = logging.getLogger(__name__)

DAY_SECONDS = 24 * 3600


class Retention(commands.Cog):
    def __init__(self, store: Store, sessions: SessionStore, baselines: BaselineStore, days: float) -> None:
        self.store = store
        self.sessions = sessions
        self.baselines = baselines
        self.days = days

    async def cog_load(self) -> None:
        self.sweep.start()

    async def cog_unload(self) -> None:
        self.sweep.cancel()

    @tasks.loop(seconds=DAY_SECONDS)
    async def sweep(self) -> dict[str, int]:
        """Runs at once when the cog loads, then every day."""
        cutoff = time.time() - self.days * DAY_SECONDS
        deleted = {
            "analyses": await asyncio.to_thread(self.store.delete_older_than, cutoff),
            "utterances": await asyncio.to_thread(self.sessions.delete_older_than, cutoff),
            "baselines": await asyncio.to_thread(self.baselines.delete_older_than, cutoff),
        }
        log.info("retention (%g days): deleted %s", self.days, ", ".join(f"{n} {kind}" for kind, n in deleted.items()),
                 extra={"event": "retention"})  # fmt: skip
        return deleted


async def setup(bot: commands.Bot) -> None:
    if bot.config.discord.retention_days > 0:
        await bot.add_cog(Retention(bot.store, bot.sessions, bot.baselines, bot.config.discord.retention_days))
