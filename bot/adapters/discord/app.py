"""``sera run``: the Discord bot process, its start-up checks and its graceful shutdown."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from sera.audio import confine_process
from sera.config import Config
from sera.adapters.discord.failures import answer_failure
from sera.adapters.discord.notes import VoiceNotes
from sera.adapters.discord.store import Store
from sera.adapters.discord.telemetry import Telemetry
from sera.baseline_store import BaselineStore
from sera.errors import SeraError
from sera.pipeline import Pipeline
from sera.sessions import SessionStore

log = logging.getLogger(__name__)


def intents(message_content: bool) -> discord.Intents:
    """Default intents; message content (privileged) only when the operator enabled it in the portal."""
    chosen = discord.Intents.default()
    chosen.message_content = message_content
    return chosen


EXTENSIONS = ("sera.adapters.discord.notes", "sera.adapters.discord.catchup", "sera.adapters.discord.settings",
              "sera.adapters.discord.privacy", "sera.adapters.discord.health", "sera.adapters.discord.retention")  # fmt: skip
LIVE_EXTENSION = "sera.adapters.discord.listen"


def shards(config: Config) -> tuple[int | None, list[int] | None]:
    """``(shard_count, shard_ids)`` for discord.py, checked: Discord wants shards past 2,500 servers,
    and each process of a sharded deployment runs its own share of them (``sera run --shard-ids``)."""
    count, ids = config.discord.shard_count, list(config.discord.shard_ids)
    if ids and not count:
        raise SeraError("discord.shard_ids needs discord.shard_count, the number of shards across every process")
    if wrong := [i for i in ids if not 0 <= i < count]:
        raise SeraError(f"discord.shard_ids {wrong} must be between 0 and discord.shard_count - 1 ({count - 1})")
    if len(set(ids)) != len(ids):
        raise SeraError(f"discord.shard_ids {ids} names a shard twice")
    return count or None, ids or None


class SeraTree(app_commands.CommandTree):
    """The bot's command tree: every slash command and the message menu that fails (a check that
    refused, a database that refused a write, a bug) is answered here, once, for every cog."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await answer_failure(interaction, error)


class SeraBot(commands.AutoShardedBot):
    """One process of the bot: every shard (a small bot has one) or the ones its config names."""

    def __init__(self, config: Config, pipeline: Pipeline, store: Store) -> None:
        count, ids = shards(config)
        super().__init__(command_prefix=commands.when_mentioned, intents=intents(config.discord.message_content),
                         help_command=None, shard_count=count, shard_ids=ids, tree_cls=SeraTree,
                         allowed_mentions=discord.AllowedMentions.none())  # a reply pings nobody unless its code says so  # fmt: skip
        self.config = config
        self.pipeline = pipeline
        self.store = store
        self.sessions = SessionStore(store.db)  # live sessions and consent, on the same connection
        self.baselines = BaselineStore(store.db)  # personal baselines, on the same connection
        self.telemetry = Telemetry()  # what the metrics endpoint serves (the Health cog)
        self.closing = False

    async def load_cogs(self) -> None:
        """Each feature is an extension with its own ``setup(bot)``, as in discord.py's ``ext`` packages;
        live listening (experimental) only where the operator enabled it."""
        for name in EXTENSIONS + ((LIVE_EXTENSION,) if self.config.live.enabled else ()):
            await self.load_extension(name)

    async def setup_hook(self) -> None:
        await self.load_cogs()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.close()))
            except (NotImplementedError, RuntimeError):  # not on this platform, or not the main thread
                pass
        await self.sync_commands()

    async def sync_commands(self) -> None:
        """Send the slash commands to Discord: globally (they can take up to an hour to reach every server),
        to one development server (at once, and only there), or not at all (an unchanged deployment
        restarting need not resend them; Discord rate-limits syncs)."""
        options = self.config.discord
        if not options.sync_commands:
            log.info("application commands not synced (discord.sync_commands: false)")
            return
        if options.dev_guild:
            guild = discord.Object(id=options.dev_guild)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d application commands to server %d only", len(synced), options.dev_guild)
            return
        synced = await self.tree.sync()
        log.info("synced %d application commands globally", len(synced))

    async def on_ready(self) -> None:
        plugins = ", ".join(a.name for a in self.pipeline.plugins.analyzers) or "none"
        log.info("sera is online as %s in %d guilds; analyzers: %s", self.user, len(self.guilds), plugins)

    async def close(self) -> None:
        """Finish (or apologise for) in-flight analyses, then disconnect and close the database."""
        if self.closing:
            return
        self.closing = True
        cog = self.get_cog("VoiceNotes")
        if isinstance(cog, VoiceNotes):
            await cog.drain()
        listening = self.get_cog("Listening")
        if listening is not None:
            await listening.close()
        await super().close()
        self.sessions.close()
        self.store.close()
        self.pipeline.close()
        log.info("sera stopped cleanly")


def token(config: Config) -> str:
    """The bot token, taken out of the environment: no child process (ffmpeg parses strangers' bytes)
    and no later code that dumps the environment can see it. ``os.environ.pop`` does not clear the
    copy the kernel shows in ``/proc/<pid>/environ``, so the process is then made non-dumpable, which
    shuts that file (and the process's memory and open files) to every other process of its user."""
    value, _ = find_token(config)
    os.environ.pop(config.discord.token_env, None)
    if not confine_process():
        log.warning("could not make the process non-dumpable: same-user processes can read its /proc entries")
    if not value:
        raise SeraError(
            f"no Discord token: set the environment variable {config.discord.token_env} "
            f"(its name is discord.token_env in the config), or give systemd's LoadCredential={config.discord.token_env}:FILE"
        )
    return value


def find_token(config: Config) -> tuple[str, str]:
    """(the token, where it was found) without taking it anywhere: ``sera run`` and ``sera doctor`` look
    in the same places, the environment variable first, then systemd's credential; ("", "") if neither."""
    name = config.discord.token_env
    if value := os.environ.get(name, "").strip():
        return value, f"${name}"
    if value := credential(name):
        return value, f"the systemd credential {name} ($CREDENTIALS_DIRECTORY)"
    return "", ""


def credential(name: str) -> str:
    """A systemd credential (``LoadCredential=NAME:/path``): a file only this service can read, which,
    unlike an environment variable, no process ever inherits. Empty when there is none."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return ""
    try:
        return (Path(folder) / name).read_text().strip()
    except OSError:
        return ""


VOICE_MODULES = ("davey", "discord.ext.voice_recv")  # the [voice] extra


def missing_voice_module() -> str | None:
    """The first module of the [voice] extra that cannot be imported; None when all can."""
    for name in VOICE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return exc.name or name
    return None


def require_voice() -> None:
    """Listening needs the [voice] extra; say so before logging in, not as a traceback from setup_hook."""
    missing = missing_voice_module()
    if missing:
        raise SeraError(f"live.enabled is true, but {missing} is not installed: pip install 'sera-voice[voice]'")


def run(config: Config) -> int:
    os.umask(0o077)  # everything the bot writes (database, status file) is its user's alone
    shards(config)
    if config.live.enabled:
        require_voice()
    secret = token(config)
    store = Store(config.database_path())
    pipeline = Pipeline(config)
    pipeline.start_workers()
    bot = SeraBot(config, pipeline, store)
    with said_plainly(config):
        bot.run(secret, log_handler=None)
    return 0


@contextmanager
def said_plainly(config: Config) -> Iterator[None]:
    """Discord's refusals and an unreachable network as one line for the person (``sera run``, ``sera sync``)."""
    try:
        yield
    except discord.LoginFailure:
        raise SeraError(
            f"Discord refused the token in {config.discord.token_env}: is it the bot token from the "
            "Developer Portal's Bot page, and still current?"
        ) from None
    except (aiohttp.ClientError, OSError) as error:
        raise SeraError(f"cannot reach Discord: {error}") from None
    except discord.PrivilegedIntentsRequired:
        raise SeraError(
            "discord.message_content is true, but the Message Content intent is not enabled for this bot "
            "in the Developer Portal (Bot page, Privileged Gateway Intents)"
        ) from None
