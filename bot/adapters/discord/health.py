"""How a running bot is doing, for its operator: a small JSON status file, rewritten every
``STATUS_SECONDS``, that ``sera status`` reads (and a service manager or monitor can too). A file, not a
port: nothing new listens on the network, and a bot that stalls shows as a stale file."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from discord.ext import commands, tasks

log = logging.getLogger(__name__)

STATUS_SECONDS = 30.0
STALE_SECONDS = 3 * STATUS_SECONDS  # older than this, the bot is down or its event loop is stuck


class Health(commands.Cog):
    def __init__(self, bot: commands.Bot, path: Path) -> None:
        self.bot = bot
        self.path = path
        self.started = time.time()

    async def cog_load(self) -> None:
        self.beat.start()

    async def cog_unload(self) -> None:
        self.beat.cancel()

    @tasks.loop(seconds=STATUS_SECONDS)
    async def beat(self) -> None:
        try:
            write_status(self.path, self.status())
        except OSError as error:
            log.warning("could not write the status file %s: %s", self.path, error)

    def status(self) -> dict[str, Any]:
        notes = self.bot.get_cog("VoiceNotes")
        listening = self.bot.get_cog("Listening")
        latency = self.bot.latency
        return {
            "pid": os.getpid(),
            "started_at": self.started,
            "updated_at": time.time(),
            "guilds": len(self.bot.guilds),
            "latency_ms": round(latency * 1000, 1) if math.isfinite(latency) else None,  # nan/inf before the first heartbeat
            "notes": dict(notes.counts) if notes else {},
            "queue": {"busy": notes.slots.used, "size": notes.slots.size} if notes else {},
            "sessions": len(listening.active) if listening else 0,
            "plugins_stopped": [i.name for i in self.bot.pipeline.plugins.failures()],
        }


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Written whole, then renamed over the old file: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(status, indent=2) + "\n")
    os.replace(partial, path)


def read_status(path: Path, now: float | None = None) -> tuple[dict[str, Any], bool]:
    """The last status and whether it is fresh; OSError or ValueError when there is none to read."""
    status = json.loads(path.read_text())
    age = (now or time.time()) - float(status["updated_at"])
    return status, age <= STALE_SECONDS


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Health(bot, bot.config.status_path()))
