"""``discord.retention_days``: analyses and voice-channel utterances older than that, and baselines not
updated for that long, are deleted on start and then once a day, in every store that keeps people's
data: the stores registered with the database (``Database.holds_user_data``), the same registry
``/forget`` goes through, so a new store cannot escape it; ``/privacy`` says so."""

from __future__ import annotations

import asyncio
import logging
import time

from discord.ext import commands, tasks

from sera.database import Database

log = logging.getLogger(__name__)

DAY_SECONDS = 24 * 3600


class Retention(commands.Cog):
    def __init__(self, db: Database, days: float) -> None:
        self.db = db
        self.days = days

    async def cog_load(self) -> None:
        self.sweep.start()

    async def cog_unload(self) -> None:
        self.sweep.cancel()

    @tasks.loop(seconds=DAY_SECONDS)
    async def sweep(self) -> dict[str, int]:
        """Runs at once when the cog loads, then every day."""
        deleted = await asyncio.to_thread(self.db.expire, time.time() - self.days * DAY_SECONDS)
        log.info("retention (%g days): deleted %s", self.days, ", ".join(f"{n} {kind}" for kind, n in deleted.items()),
                 extra={"event": "retention"})  # fmt: skip
        return deleted


async def setup(bot: commands.Bot) -> None:
    if bot.config.discord.retention_days > 0:
        await bot.add_cog(Retention(bot.store.db, bot.config.discord.retention_days))
