"""A faithful, offline stand-in for the parts of Discord sera touches; reusable by plugin authors.

Attachments are real ``discord.Attachment`` objects built from the gateway's JSON payload (so
``is_voice_message()``, ``size``, ``duration`` and ``read()`` behave as in production); ``read()``
fetches from an in-memory CDN instead of Discord's. Messages and interactions are small fakes with the
same method signatures as discord.py's, recording every reply, reaction, deferral and follow-up.
Application commands are run by ``invoke``, through their checks and error handlers, as discord.py's
``CommandTree`` runs them. It ships in the package (``sera.adapters.discord.testing``) for plugin
authors' own tests; nothing in the running bot imports it.

    harness = Harness(tmp_path)            # a real SeraBot, Pipeline and SQLite store
    await harness.start()
    note = harness.attachment(ogg_bytes)
    message = harness.message(note, guild=None)
    await harness.cog.on_message(message)
    message.replies[0]["embed"].title
"""

from __future__ import annotations

import base64
import datetime
import inspect
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from sera.config import Config, DiscordOptions
from sera.adapters.discord.app import EXTENSIONS, SeraBot
from sera.adapters.discord.notes import VoiceNotes
from sera.adapters.discord.privacy import Privacy
from sera.adapters.discord.settings import ServerSettings
from sera.adapters.discord.store import Store
from sera.pipeline import Pipeline

_increment = itertools.count()


def snowflake(at: datetime.datetime | None = None) -> int:
    """A Discord id: the time it was made (now, or ``at``: a message posted while the bot was down) in
    the high bits, so ids sort by time as Discord's do, and a counter in the low 22 bits."""
    return discord.utils.time_snowflake(at or discord.utils.utcnow()) + next(_increment) % (1 << 22)


class FakeCDN:
    """What ``Attachment.read()`` downloads from; counts downloads so tests can see none happened."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.downloads = 0

    async def get_from_cdn(self, url: str) -> bytes:
        self.downloads += 1
        if url not in self.files:
            raise discord.NotFound(_Response(404), "Unknown attachment")
        return self.files[url]


class _Response:
    def __init__(self, status: int) -> None:
        self.status = status
        self.reason = "Not Found"


@dataclass
class FakeState:
    http: FakeCDN


@dataclass(frozen=True)
class FakeUser:
    id: int = field(default_factory=snowflake)
    name: str = "someone"
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(frozen=True)
class FakeGuild:
    id: int = field(default_factory=snowflake)
    name: str = "study group"


@dataclass(frozen=True)
class FakeChannel:
    id: int = field(default_factory=snowflake)
    messages: list[FakeMessage] = field(default_factory=list, compare=False, repr=False)  # what history() reads

    async def history(self, *, limit: int | None = 100, after: Any = None, oldest_first: bool | None = None) -> AsyncIterator[FakeMessage]:
        """As ``Messageable.history``: newest first, or oldest first after ``after`` (an id or a time)."""
        floor = discord.utils.time_snowflake(after) if isinstance(after, datetime.datetime) else getattr(after, "id", 0)
        chosen = sorted((m for m in self.messages if m.id > floor), key=lambda m: m.id)
        if not (after is not None if oldest_first is None else oldest_first):
            chosen.reverse()
        for message in chosen[:limit]:
            yield message


@dataclass
class FakeMessage:
    author: FakeUser
    channel: FakeChannel
    guild: FakeGuild | None
    attachments: list[discord.Attachment]
    id: int = field(default_factory=snowflake)
    replies: list[dict[str, Any]] = field(default_factory=list)
    reactions: list[str] = field(default_factory=list)

    async def reply(self, content: str | None = None, **kwargs: Any) -> None:
        self.replies.append({"content": content, **kwargs})

    async def add_reaction(self, emoji: str) -> None:
        self.reactions.append(emoji)


@dataclass
class FakeInteraction:
    """Records what the bot does with an interaction, in order, as (kind, kwargs) pairs."""

    user: FakeUser
    guild_id: int | None
    channel_id: int
    permissions: discord.Permissions = field(default_factory=discord.Permissions.none)
    id: int = field(default_factory=snowflake)
    command: app_commands.Command | app_commands.ContextMenu | None = None  # set by ``invoke``, as discord.py sets it
    client: Any = None  # the bot (``Harness.interaction`` sets it), whose tree answers failed commands
    log: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.response = _Response_(self)
        self.followup = _Followup(self)

    async def delete_original_response(self) -> None:
        self.log.append(("delete_original", {}))

    async def edit_original_response(self, **kwargs: Any) -> None:
        if not self.response.is_done():
            raise discord.NotFound(_Response(404), "Unknown Webhook")  # there is no response to edit yet
        self.log.append(("edit_original", kwargs))

    def sent(self) -> list[dict[str, Any]]:
        """Everything shown to the user: messages, follow-ups and edits."""
        return [kw for kind, kw in self.log if kind in {"send_message", "followup", "edit_message", "edit_original"}]


async def invoke(command: app_commands.Command | app_commands.ContextMenu, interaction: FakeInteraction, *args: Any, **kwargs: Any) -> None:
    """Run a slash command or a context menu the way discord.py's ``CommandTree`` does: its checks (the
    cog's and the command's own), then the callback, and any error through the command's error handlers
    and then the tree's ``on_error`` (the bot's one handler). Tests go through the same checks a user
    meets, never around them."""
    interaction.command = command
    try:
        if isinstance(command, app_commands.ContextMenu):
            await command._invoke(interaction, *args)
            return
        skip = 2 if command.binding is not None else 1  # the cog, then the interaction
        names = list(inspect.signature(command.callback).parameters)[skip:]
        values = dict(zip(names, args)) | kwargs
        if not await command._check_can_run(interaction):
            raise app_commands.CheckFailure(f"The check functions for command {command.name!r} failed.")
        await command._do_call(interaction, values)
    except app_commands.AppCommandError as error:
        if isinstance(command, app_commands.Command):
            await command._invoke_error_handlers(interaction, error)
        if interaction.client is None:
            raise
        await interaction.client.tree.on_error(interaction, error)


class _Response_:
    def __init__(self, interaction: FakeInteraction) -> None:
        self._interaction = interaction
        self._done = False

    def is_done(self) -> bool:
        return self._done

    def _respond(self, kind: str, kwargs: dict[str, Any]) -> None:
        if self._done:
            raise discord.InteractionResponded(self._interaction)  # Discord allows one response
        self._done = True
        self._interaction.log.append((kind, kwargs))

    async def send_message(self, content: str | None = None, **kwargs: Any) -> None:
        self._respond("send_message", {"content": content, **kwargs})

    async def defer(self, *, ephemeral: bool = False, thinking: bool = False) -> None:
        self._respond("defer", {"ephemeral": ephemeral, "thinking": thinking})

    async def edit_message(self, **kwargs: Any) -> None:
        self._respond("edit_message", kwargs)


class _Followup:
    def __init__(self, interaction: FakeInteraction) -> None:
        self._interaction = interaction

    async def send(self, content: str | None = None, **kwargs: Any) -> None:
        if not self._interaction.response.is_done():
            raise discord.NotFound(_Response(404), "Unknown Webhook")  # a follow-up needs a response first
        self._interaction.log.append(("followup", {"content": content, **kwargs}))


class Harness:
    """A real SeraBot (never connected), real Pipeline and real SQLite store, with a fake CDN."""

    def __init__(self, folder: Path, config: Config | None = None, pipeline: Pipeline | None = None, **discord_options: Any) -> None:
        base = config or Config()
        self.db_path = folder / "sera.db"  # the status file goes beside it, never into the user's folders
        options = DiscordOptions(**{**base.discord.__dict__, "database": str(self.db_path), **discord_options})
        self.config = Config(**{**base.__dict__, "discord": options})
        self.cdn = FakeCDN()
        self.state = FakeState(self.cdn)
        self.pipeline = pipeline or Pipeline(self.config)
        self.store = Store(self.db_path)
        self.bot = SeraBot(self.config, self.pipeline, self.store)
        self.channels: dict[int, tuple[FakeChannel, bool]] = {}  # every channel a message was posted in (and in a server?)
        self.bot.get_channel = self._cached_channel  # type: ignore[method-assign]
        self.bot.fetch_channel = self._fetch_channel  # type: ignore[method-assign]
        self.cog: VoiceNotes
        self.settings: ServerSettings
        self.privacy: Privacy

    async def start(self) -> VoiceNotes:
        """The bot's own cogs, loaded as the bot loads them (its extensions); a live-listening test adds
        its own offline ``Listening`` (after ``log_in``)."""
        await self.log_in()
        for name in EXTENSIONS:
            await self.bot.load_extension(name)
        self.cog, self.settings, self.privacy = (self.bot.get_cog(name) for name in ("VoiceNotes", "ServerSettings", "Privacy"))
        return self.cog

    async def log_in(self) -> None:
        """What ``Client.login`` sets up before any cog loads: the event loop and the ready event that a
        cog's tasks wait on (there is no gateway here, so it is never set, and they wait as they would)."""
        if self.bot._ready is discord.utils.MISSING:
            await self.bot._async_setup_hook()

    def attachment(
        self, data: bytes, filename: str = "voice-message.ogg", content_type: str | None = "audio/ogg",
        voice: bool = True, size: int | None = None, duration: float | None = None,
    ) -> discord.Attachment:  # fmt: skip
        """A real ``discord.Attachment``; a voice message carries ``duration_secs`` and ``waveform`` as Discord sends them."""
        attachment_id = snowflake()
        url = f"https://cdn.discordapp.com/attachments/1/{attachment_id}/{filename}"
        self.cdn.files[url] = data
        payload: dict[str, Any] = {
            "id": attachment_id, "filename": filename, "size": len(data) if size is None else size,
            "url": url, "proxy_url": url,
        }  # fmt: skip
        if content_type:
            payload["content_type"] = content_type
        if voice:
            payload["duration_secs"] = duration if duration is not None else 5.0
            payload["waveform"] = base64.b64encode(bytes(range(0, 256, 4))).decode()
        return discord.Attachment(data=payload, state=self.state)  # type: ignore[arg-type]

    def message(self, *attachments: discord.Attachment, guild: FakeGuild | None = None, channel: FakeChannel | None = None,
                author: FakeUser | None = None, at: datetime.datetime | None = None) -> FakeMessage:  # fmt: skip
        """A message as Discord delivers it, kept in its channel's history; ``at``: posted then."""
        channel = channel or FakeChannel()
        message = FakeMessage(author or FakeUser(), channel, guild, list(attachments), id=snowflake(at))
        channel.messages.append(message)
        self.channels[channel.id] = (channel, guild is not None)
        return message

    def _cached_channel(self, channel_id: int) -> FakeChannel | None:
        """``Client.get_channel``: a server's channels are in the cache from the start; direct messages
        only once one arrives (so after a restart they must be fetched)."""
        channel, in_guild = self.channels.get(channel_id, (None, False))
        return channel if in_guild else None

    async def _fetch_channel(self, channel_id: int) -> FakeChannel:
        if channel_id not in self.channels:
            raise discord.NotFound(_Response(404), "Unknown Channel")
        return self.channels[channel_id][0]

    def interaction(self, guild: FakeGuild | None = None, channel: FakeChannel | None = None,
                    user: FakeUser | None = None, admin: bool = False) -> FakeInteraction:  # fmt: skip
        permissions = discord.Permissions(manage_guild=True) if admin else discord.Permissions.none()
        return FakeInteraction(user or FakeUser(), guild.id if guild else None, (channel or FakeChannel()).id, permissions, client=self.bot)

    def close(self) -> None:
        self.store.close()
        self.bot.sessions.close()
