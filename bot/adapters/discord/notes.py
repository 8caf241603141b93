"""Voice notes in, emotion feedback out: the cog that hears notes and answers them.

Every path (a voice note in an enabled channel or a DM, ``/emotion analyse``, the "Analyse emotion"
message menu) goes through ``analyze``, which applies the limits before downloading anything, runs the
core pipeline off the event loop and stores the result under the voice's author. Failures become one
friendly sentence for the user and one log line for the operator; slash-command failures are answered
ephemerally. Rendering is a plugin's work too, so it runs off the loop and a failing reporter costs the
user the chart or the embed, never the answer.

A person's own notes can always be analysed. Someone else's note only in a channel an admin enabled for
analysis, only if its author has not declined (``/privacy analysis_by_others:False``), and the answer
is shown to the caller alone.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath

import discord
from discord import app_commands
from discord.ext import commands

from sera.config import DiscordOptions
from sera.adapters.discord.failures import answer_failure
from sera.adapters.discord.limits import InFlight, RateLimiter, Slots
from sera.adapters.discord.store import GuildSettings, Origin, Store
from sera.errors import AudioError, SeraError
from sera.pipeline import Pipeline
from sera.plugin import Report
from sera.emotions import emoji

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".ogg", ".oga", ".opus", ".mp3", ".wav", ".m4a", ".aac", ".webm", ".flac", ".mp4"}
MAX_NOTES_PER_MESSAGE = 3
SHUTDOWN_GRACE_SECONDS = 20.0


def is_audio(attachment: discord.Attachment) -> bool:
    if attachment.is_voice_message():
        return True
    if attachment.content_type and attachment.content_type.split(";")[0].startswith("audio/"):
        return True
    return PurePath(attachment.filename).suffix.lower() in AUDIO_SUFFIXES


# Outcome.kind: why a note got no analysis, in one word, counted for the operator (sera status, /metrics)
FAILURE_KINDS = ("too_large", "too_long", "user_busy", "rate_limited", "queue_full", "bad_audio", "download", "refused",
                 "shutdown", "internal")  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """A report, or the sentence that tells the user why there is none."""

    report: Report | None = None
    error: str | None = None
    kind: str = ""  # one of FAILURE_KINDS when there is no report


class VoiceNotes(commands.Cog):
    emotion = app_commands.Group(name="emotion", description="Hear the emotion in a voice note")

    def __init__(self, bot: commands.Bot, pipeline: Pipeline, store: Store, options: DiscordOptions) -> None:
        self.bot = bot
        self.pipeline = pipeline
        self.store = store
        self.options = options
        self.rate = RateLimiter(options.user_rate_per_minute)
        self.slots = Slots(options.queue_size)
        self.in_flight = InFlight(options.user_in_flight)
        self._handlers: set[asyncio.Task] = set()
        self._work: set[asyncio.Future] = set()
        self._answering: set[int] = set()  # message ids being answered now
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # notes not answered, by Outcome.kind
        self.menu = app_commands.ContextMenu(name="Analyse emotion", callback=self.analyze_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def cog_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """A command that failed (a database refusing a write, a bug) is answered, never left hanging."""
        await answer_failure(interaction, error)

    # -- the one road every note takes ---------------------------------------------------------------

    async def analyze(self, attachment: discord.Attachment, origin: Origin, settings: GuildSettings) -> Outcome:
        outcome = await self._admit(attachment, origin, settings)
        self.counts["answered" if outcome.report else "not answered"] += 1  # for the operator (sera status)
        if outcome.kind:
            self.failures[outcome.kind] += 1
        event = f"note_{outcome.kind or 'answered'}"
        log.info("voice note from user %s: %s", origin.requested_by, event, extra={"guild": origin.guild_id, "event": event})
        return outcome

    async def _admit(self, attachment: discord.Attachment, origin: Origin, settings: GuildSettings) -> Outcome:
        """The limits, before anything is downloaded; then the analysis."""
        limits = self.pipeline.limits
        user_id = origin.requested_by
        if attachment.size > limits.max_bytes:
            return Outcome(error=f"That file is {attachment.size / 1e6:.1f} MB; I can listen to files up to "
                                 f"{limits.max_bytes / 1e6:.0f} MB.", kind="too_large")  # fmt: skip
        if attachment.duration is not None and attachment.duration > limits.max_seconds:
            return Outcome(error=f"That note is {attachment.duration:.0f} s long; I can listen to up to "
                                 f"{limits.max_seconds:.0f} s.", kind="too_long")  # fmt: skip
        if not self.in_flight.take(user_id):
            return Outcome(error=f"I'm still listening to your last {self.in_flight.per_user} notes; "
                                 "send this one again when they're answered.", kind="user_busy")  # fmt: skip
        try:
            wait = self.rate.retry_after(user_id)
            if wait:
                return Outcome(error=f"You're sending notes faster than I can listen 🙂 Try again in {wait:.0f} s.", kind="rate_limited")
            if not self.slots.take():
                log.warning("analysis queue full (%d); refusing a note from user %s", self.slots.size, user_id)
                return Outcome(error="I'm busy with a lot of notes right now. Please try again in a minute.", kind="queue_full")
            try:
                return await self._analyze(attachment, origin, settings)
            finally:
                self.slots.give()
        finally:
            self.in_flight.give(user_id)

    async def _analyze(self, attachment: discord.Attachment, origin: Origin, settings: GuildSettings) -> Outcome:
        try:
            data = await attachment.read()
            work = asyncio.ensure_future(
                self.pipeline.analyze_async(data, attachment.filename, skip=settings.disabled_plugins)
            )
            self._work.add(work)
            work.add_done_callback(self._work.discard)
            report = await work
        except AudioError as error:
            log.info("note %s from user %s: %s", attachment.filename, origin.requested_by, error)
            return Outcome(error=f"😕 I couldn't use this audio: {error}.", kind="bad_audio")
        except asyncio.CancelledError:
            if self.bot.is_closed() or self._closing():
                return Outcome(error="I'm restarting and couldn't finish this one. Please send it again in a minute.", kind="shutdown")
            raise
        except discord.HTTPException as error:
            log.warning("could not download note %s for user %s: %s", attachment.filename, origin.requested_by, error)
            return Outcome(error="I couldn't fetch that file from Discord. Please try again.", kind="download")
        except SeraError as error:
            log.warning("note %s from user %s failed: %s", attachment.filename, origin.requested_by, error)
            return Outcome(error=f"😕 {error}", kind="refused")
        except Exception:
            log.exception("analysing %s for user %s failed", attachment.filename, origin.requested_by)
            return Outcome(error="Something went wrong on my side; the operator has been told.", kind="internal")
        try:
            await asyncio.to_thread(self.store.record, report, origin)
        except SeraError as error:  # the analysis is done: the user still gets it, the operator is told
            log.error("could not store the analysis of %s for user %s: %s", attachment.filename, origin.author_id, error)
        return Outcome(report=report)

    def _closing(self) -> bool:
        return getattr(self.bot, "closing", False)

    async def render(self, outcome: Outcome, settings: GuildSettings) -> dict:
        """``send``/``reply`` keyword arguments for an outcome, drawn off the event loop.

        A reporter that fails (or hangs) is logged and left out: without the embed the answer is its
        headline in words, without the chart it has no chart."""
        if outcome.error:
            return {"content": outcome.error}
        report = outcome.report
        try:
            kwargs: dict = {"embed": discord.Embed.from_dict(await asyncio.to_thread(self.pipeline.plugins.render, "embed", report))}
        except SeraError as error:
            log.error("no embed for %s: %s", report.source, error)
            emotion = report.emotion()
            kwargs = {"content": f"{emoji(emotion.label)} {emotion.headline()}" if emotion else "Speech analysed."}
        if settings.chart and report.emotion():
            try:
                png = await asyncio.to_thread(self.pipeline.plugins.render, "chart", report)
            except SeraError as error:
                log.warning("no chart for %s: %s", report.source, error)
            else:
                if png:
                    kwargs["file"] = discord.File(io.BytesIO(png), filename="emotion.png")
        return kwargs

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def drain(self, timeout: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Let in-flight analyses finish; past ``timeout`` cancel them so their users get an apology."""
        pending = {t for t in self._handlers if t is not asyncio.current_task()}
        if not pending:
            return
        log.info("waiting for %d analyses to finish", len(pending))
        _, late = await asyncio.wait(pending, timeout=timeout)
        if late:
            log.warning("cancelling %d analyses at shutdown", len(late))
            for work in list(self._work):
                work.cancel()
            await asyncio.wait(late, timeout=5.0)

    # -- voice notes in messages ----------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        await self.handle(message)

    async def handle(self, message: discord.Message) -> bool:
        """Answer a message's voice notes, live or caught up after a restart (``catchup``); whether it
        was answered now. A message is answered once: the one being answered is remembered here, the
        ones answered before in the database."""
        if message.author.bot or message.id in self._answering:
            return False
        if self._closing():  # shutting down: not started now, answered by the catch-up after the restart
            return False
        notes = [a for a in message.attachments if is_audio(a)][:MAX_NOTES_PER_MESSAGE]
        if not notes:
            return False
        guild_id = message.guild.id if message.guild else None
        if guild_id is not None:
            settings = await asyncio.to_thread(self.store.settings, guild_id)
            if message.channel.id not in settings.channels:
                return False
        else:
            settings = GuildSettings(chart=self.options.chart)
        self._answering.add(message.id)
        try:
            if await asyncio.to_thread(self.store.was_answered, message.id):
                return False
            self._track()
            origin = Origin(message.author.id, message.author.id, guild_id, message.channel.id, message.id)
            for note in notes:
                try:
                    outcome = await self.analyze(note, origin, settings)
                    await self._answer_message(message, outcome, settings)
                except Exception:  # one note's failure never costs the others their answer
                    log.exception("answering note %s of message %s failed", note.filename, message.id)
            try:
                await asyncio.to_thread(self.store.mark_answered, message.id, message.channel.id, guild_id)
            except SeraError as error:
                log.error("could not note message %s as answered: %s", message.id, error)
            return True
        finally:
            self._answering.discard(message.id)

    async def _answer_message(self, message: discord.Message, outcome: Outcome, settings: GuildSettings) -> None:
        try:
            emotion = outcome.report.emotion() if outcome.report else None
            if emotion and settings.reaction:
                await message.add_reaction(emoji(emotion.label))
            if outcome.error or settings.reply:
                await message.reply(**await self.render(outcome, settings), mention_author=False)
        except discord.HTTPException as error:
            log.warning("could not answer message %s in channel %s: %s", message.id, message.channel.id, error)

    # -- slash command and message menu ---------------------------------------------------------------

    @emotion.command(name="analyse", description="Analyse the emotion in an audio file or voice note")
    @app_commands.describe(file="A voice note or audio file (ogg, mp3, wav, m4a, webm, flac...)")
    async def analyze_file(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        await self._answer_interaction(interaction, file, interaction.user.id)

    async def analyze_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The "Analyse emotion" message menu: works without the message-content intent.

        Someone else's note only where an admin enabled analysis and its author did not decline, and the
        answer then goes to the caller alone."""
        note = next((a for a in message.attachments if is_audio(a)), None)
        author = message.author.id
        if note is not None and author != interaction.user.id:
            refusal = await self._refuse_others_note(interaction, message)
            if refusal:
                await interaction.response.send_message(refusal, ephemeral=True)
                return
        await self._answer_interaction(interaction, note, author, message.id)

    async def _refuse_others_note(self, interaction: discord.Interaction, message: discord.Message) -> str | None:
        """Why the caller may not analyse this note by someone else, or None when they may."""
        if interaction.guild_id is None:
            return "I only analyse your own voice notes here."
        settings = await asyncio.to_thread(self.store.settings, interaction.guild_id)
        if message.channel.id not in settings.channels:
            return ("This is someone else's voice note. I analyse other people's notes only in channels the "
                    "server's admins enabled (`/sera channel`).")  # fmt: skip
        if not await asyncio.to_thread(self.store.analysis_by_others_allowed, message.author.id):
            return "Its author asked not to be analysed by others."
        return None

    async def _answer_interaction(
        self, interaction: discord.Interaction, note: discord.Attachment | None, author_id: int, message_id: int | None = None
    ) -> None:
        self._track()
        if note is None or not is_audio(note):
            await interaction.response.send_message("I can only listen to audio files and voice notes.", ephemeral=True)
            return
        guild_id = interaction.guild_id
        settings = await asyncio.to_thread(self.store.settings, guild_id) if guild_id else GuildSettings(chart=self.options.chart)
        private = settings.ephemeral or author_id != interaction.user.id  # someone else's voice: only the caller sees it
        await interaction.response.defer(thinking=True, ephemeral=private)
        origin = Origin(author_id, interaction.user.id, guild_id, interaction.channel_id, message_id)
        outcome = await self.analyze(note, origin, settings)
        try:
            if outcome.error and not private:
                await interaction.delete_original_response()  # the "thinking" notice was public
            await interaction.followup.send(**await self.render(outcome, settings), ephemeral=private or bool(outcome.error))
        except discord.HTTPException as error:
            log.warning("could not answer interaction %s: %s", interaction.id, error)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(VoiceNotes(bot, bot.pipeline, bot.store, bot.config.discord))
