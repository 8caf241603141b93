"""How a running bot is doing, for its operator.

Always: a small JSON status file, rewritten every ``STATUS_SECONDS``, that ``sera status`` reads; a bot
that stalls shows as a stale file. Where ``discord.metrics_port`` is set: Prometheus metrics over HTTP
on the loopback interface only (``http://127.0.0.1:PORT/metrics``), for a scraper on the same machine
or behind the operator's own proxy; served by aiohttp, which discord.py already runs on, in the
format prometheus_client writes (``telemetry``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from discord.ext import commands, tasks

from sera.adapters.discord.notes import FAILURE_KINDS
from sera.database import private_folder, untrusted

log = logging.getLogger(__name__)

STATUS_SECONDS = 30.0
STALE_SECONDS = 3 * STATUS_SECONDS  # older than this, the bot is down or its event loop is stuck
MAX_STATUS_BYTES = 1 << 20  # a status file is a few hundred bytes
LAG_PROBE_SECONDS = 0.25  # how often the event loop's lateness is sampled
METRICS_HOST = "127.0.0.1"


class LagProbe:
    """How late the event loop wakes a task that asked to sleep: the delay every Discord heartbeat and
    reply would see. Keeps the last sample and the worst since start."""

    def __init__(self) -> None:
        self.last = 0.0
        self.worst = 0.0
        self.samples = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            self.last = max(0.0, loop.time() - start - LAG_PROBE_SECONDS)
            self.worst = max(self.worst, self.last)
            self.samples += 1


class Health(commands.Cog):
    def __init__(self, bot: commands.Bot, path: Path, metrics_port: int = 0) -> None:
        self.bot = bot
        self.path = path
        self.metrics_port = metrics_port
        self.started = time.time()
        self.lag = LagProbe()
        self._probe: asyncio.Task | None = None
        self._server: web.AppRunner | None = None
        bot.telemetry.report(self.status)

    async def cog_load(self) -> None:
        self.beat.start()
        self._probe = asyncio.create_task(self.lag.run())
        if self.metrics_port:
            await self.serve_metrics()

    async def cog_unload(self) -> None:
        self.beat.cancel()
        if self._probe:
            self._probe.cancel()
        if self._server:
            await self._server.cleanup()

    async def serve_metrics(self) -> None:
        """Listen on the loopback interface only; a port already taken is the operator's to fix, and
        costs the metrics, not the bot."""
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, METRICS_HOST, self.metrics_port).start()
        except OSError as error:
            log.error("metrics not served on %s:%d: %s", METRICS_HOST, self.metrics_port, error)
            await runner.cleanup()
            return
        self._server = runner
        log.info("Prometheus metrics on http://%s:%d/metrics", METRICS_HOST, self.metrics_port)

    async def metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.bot.telemetry.exposition)  # reads /proc for the process metrics: off the loop
        return web.Response(body=body, content_type="text/plain", charset="utf-8", headers={"Cache-Control": "no-store"})

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
            "notes_failed": {kind: notes.failures[kind] if notes else 0 for kind in FAILURE_KINDS},
            "queue": {"busy": notes.slots.used, "size": notes.slots.size} if notes else {},
            "sessions": len(listening.active) if listening else 0,
            "plugins_stopped": [i.name for i in self.bot.pipeline.plugins.failures()],
            "loop_lag_ms": {"last": round(self.lag.last * 1000, 1), "worst": round(self.lag.worst * 1000, 1)},
        }


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Written whole to a new private file (created exclusively: a link planted in the folder is never
    followed), then renamed over the old one (which replaces a link, never writes through it): a reader
    never sees half of it, and nobody can make the bot write elsewhere."""
    private_folder(path.parent)
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(status, indent=2) + "\n")
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


def status_files(folder: Path) -> list[Path]:
    """Every process's status file in ``folder`` (``status.json``, ``status-shards-*.json``)."""
    return sorted(folder.glob("status*.json"))


def read_status(path: Path, now: float | None = None) -> tuple[dict[str, Any], bool]:
    """The last status and whether it is fresh; OSError or ValueError when there is none to read, or
    when the file is not one this user's bot wrote (another user's, or writable by everyone: planted)."""
    with open(path, opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW)) as handle:
        if why := untrusted(os.fstat(handle.fileno())):
            raise ValueError(f"not a status file of this user's bot: {why}")
        status = json.loads(handle.read(MAX_STATUS_BYTES))
    age = (now or time.time()) - float(status["updated_at"])
    return status, age <= STALE_SECONDS


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Health(bot, bot.config.status_path(), bot.config.discord.metrics_port))
