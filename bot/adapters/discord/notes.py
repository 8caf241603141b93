"""Voice notes in, emotion feedback out: the cog that hears notes and answers them.

Every path (a voice note in an enabled channel or a DM, ``/emotion analyse``, the "Analyse emotion"
message menu) goes through ``analyze``, which applies the limits before downloading anything, runs the
core pipeline off the event loop and stores the result under the voice's author. Failures become one
friendly sentence for the user and one log line for the operator; slash-command failures are answered
ephemerally. Rendering is a plugin's work too, so it runs off the loop and a failing reporter costs the
user the chart or the embed, never the answer.

A person's own notes can always be analysed. Someone else's note only in a channel an admin enabled for
analysis, only if its author has not declined (``/privacy analysis_by_others:False``), and the answer
is shown to the caller alone. A note's words are written down (the transcript plugin) only in a server
whose admins turned transcripts on, and only where the voice's author agreed to them there.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

import discord
from discord import app_commands
from discord.ext import commands

from sera.adapters.discord.people import where, who
from sera.config import DiscordOptions
from sera.adapters.discord.limits import InFlight, RateLimiter, Slots
from sera.adapters.discord.store import GuildSettings, Origin, Store
from sera.baseline import Baseline
from sera.baseline_store import BaselineStore
from sera.errors import AudioError, SeraError
from sera.pipeline import Pipeline
from sera.plugin import EmotionAnalyzer, Report
from sera.emotions import emoji


log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".ogg", ".oga", ".opus", ".mp3", ".wav", ".m4a", ".aac", ".webm", ".flac", ".mp4"}
MAX_NOTES_PER_MESSAGE = 3
SHUTDOWN_GRACE_SECONDS = 20.0
SLOT_WAIT_SECONDS = 0.5  # how often a caught-up note looks for a free slot
MAX_EMBEDS = 10  # Discord's limit per message
MAX_CONTENT = 2000  # characters of text per message


class Deferred(Exception):
    """A note the catch-up leaves for the next one (the bot is stopping): not answered, not marked."""


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
    baseline: Baseline | None = None  # an enrolment's: the caller's baseline with the note added


class VoiceNotes(commands.Cog):
    emotion = app_commands.Group(name="emotion", description="Hear the emotion in a voice note")
    baseline = app_commands.Group(name="baseline", description="Your personal baseline: how your ordinary voice sounds", parent=emotion)

    def __init__(self, bot: commands.Bot, pipeline: Pipeline, store: Store, baselines: BaselineStore, options: DiscordOptions) -> None:
        self.bot = bot
        self.pipeline = pipeline
        self.store = store
        self.baselines = baselines
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

    # -- the one road every note takes ---------------------------------------------------------------

    async def analyze(self, attachment: discord.Attachment, origin: Origin, settings: GuildSettings, catching_up: bool = False) -> Outcome:
        outcome = await self._admit(attachment, origin, lambda: self._analyze(attachment, origin, settings), catching_up)
        self.counts["answered" if outcome.report else "not answered"] += 1  # for the operator (sera status)
        if outcome.kind:
            self.failures[outcome.kind] += 1
        event = f"note_{outcome.kind or 'answered'}"
        log.info("voice note from %s: %s", who(origin.requested_by), event, extra={"guild": origin.guild_id, "event": event})
        return outcome

    async def _admit(
        self, attachment: discord.Attachment, origin: Origin, work: Callable[[], Awaitable[Outcome]], catching_up: bool = False
    ) -> Outcome:
        """The limits, before anything is downloaded; then ``work`` (the analysis, or an enrolment).

        A backlog the catch-up answers (one note at a time) is no flood: it skips the per-user limits,
        and waits for a free slot where a live note would be told to retry, so nothing is dropped; at
        shutdown it is left (``Deferred``) for the next catch-up."""
        limits = self.pipeline.limits
        user_id = origin.requested_by
        if attachment.size > limits.max_bytes:
            return Outcome(error=f"That file is {attachment.size / 1e6:.1f} MB; I can listen to files up to "
                                 f"{limits.max_bytes / 1e6:.0f} MB.", kind="too_large")  # fmt: skip
        if attachment.duration is not None and attachment.duration > limits.max_seconds:
            return Outcome(error=f"That note is {attachment.duration:.0f} s long; I can listen to up to "
                                 f"{limits.max_seconds:.0f} s.", kind="too_long")  # fmt: skip
        if catching_up:
            while not self.slots.take():
                if self._closing():
                    raise Deferred
                await asyncio.sleep(SLOT_WAIT_SECONDS)
            try:
                return await work()
            finally:
                self.slots.give()
        if not self.in_flight.take(user_id):
            return Outcome(error=f"I'm still listening to your last {self.in_flight.per_user} notes; "
                                 "send this one again when they're answered.", kind="user_busy")  # fmt: skip
        try:
            wait = self.rate.retry_after(user_id)
            if wait:
                return Outcome(error=f"You're sending notes faster than I can listen 🙂 Try again in {wait:.0f} s.", kind="rate_limited")
            if not self.slots.take():
                log.warning("analysis queue full (%d); refusing a note from %s", self.slots.size, who(user_id))
                return Outcome(error="I'm busy with a lot of notes right now. Please try again in a minute.", kind="queue_full")
            try:
                return await work()
            finally:
                self.slots.give()
        finally:
            self.in_flight.give(user_id)

    async def _analyze(self, attachment: discord.Attachment, origin: Origin, settings: GuildSettings, enrol: bool = False) -> Outcome:
        """Download, analyse (against the voice's author's baseline, where they have one), store; with
        ``enrol``, the note's speech is added to the caller's baseline instead, and nothing else is stored."""
        speaker = str(origin.author_id)
        info = self.pipeline.baseline_info
        try:
            # A member's baseline serves their own requests only: another member's answer neither uses it
            # nor says that there is one.
            own = origin.requested_by == origin.author_id
            baseline = await asyncio.to_thread(self.baselines.get, speaker, info.space) if info and own and not enrol else None
            transcribe = not enrol and await self._transcribes(origin, settings)
            data = await attachment.read()
            work = asyncio.ensure_future(
                self.pipeline.analyze_async(data, attachment.filename, settings.disabled_plugins, baseline, transcribe)
            )
            self._work.add(work)
            work.add_done_callback(self._work.discard)
            with self.bot.telemetry.analysis.time():
                report = await work
        except AudioError as error:
            log.info("a note from %s: %s", who(origin.requested_by), error)
            return Outcome(error=f"😕 I couldn't use this audio: {error}.", kind="bad_audio")
        except asyncio.CancelledError:
            if self.bot.is_closed() or self._closing():
                return Outcome(error="I'm restarting and couldn't finish this one. Please send it again in a minute.", kind="shutdown")
            raise
        except discord.HTTPException as error:
            log.warning("could not download a note for %s: %s", who(origin.requested_by), error)
            return Outcome(error="I couldn't fetch that file from Discord. Please try again.", kind="download")
        except SeraError as error:
            log.warning("a note from %s failed: %s", who(origin.requested_by), error)
            return Outcome(error=f"😕 {error}", kind="refused")
        except Exception:
            log.exception("analysing a note for %s failed", who(origin.requested_by))
            return Outcome(error="Something went wrong on my side; the operator has been told.", kind="internal")
        if enrol:
            try:
                added = await asyncio.to_thread(self.baselines.add, speaker, report.observations(), hashlib.sha256(data).hexdigest())
            except SeraError as error:  # the same recording again, or the database refused
                return Outcome(error=f"😕 {str(error)[:1].upper()}{str(error)[1:]}.", kind="refused")
            return Outcome(report=report, baseline=added)
        try:
            await asyncio.to_thread(self.store.record, report, origin)
            if origin.requested_by == origin.author_id and await asyncio.to_thread(self.baselines.learning, speaker):
                await asyncio.to_thread(self.baselines.add, speaker, report.observations())  # their own voice keeps it current
        except SeraError as error:  # the analysis is done: the user still gets it, the operator is told
            log.error("could not store the analysis of a note of %s: %s", who(origin.author_id), error)
        return Outcome(report=report)

    async def _transcribes(self, origin: Origin, settings: GuildSettings) -> bool:
        """Whether the note's words are written down: in a server that has transcripts on, where the voice's
        author agreed to them (whoever asked for the analysis)."""
        if origin.guild_id is None or not settings.transcripts:
            return False
        return await asyncio.to_thread(self.bot.sessions.agrees, str(origin.guild_id), str(origin.author_id), "transcripts")

    def _closing(self) -> bool:
        return getattr(self.bot, "closing", False)

    async def render(self, outcome: Outcome, settings: GuildSettings) -> dict:
        """``send``/``reply`` keyword arguments for an outcome, made by the reporters the config names
        (``discord.reply_reporters``), drawn off the event loop. Built-ins have no privilege here: a
        third-party reporter named there shapes the reply as the embed and the chart do.

        A reporter that fails (or hangs) is logged and left out: without an embed or text the answer is
        its headline in words; without the chart it has no chart."""
        if outcome.error:
            return {"content": outcome.error}
        report = outcome.report
        reply = Reply(images=settings.chart and report.emotion() is not None)
        for name in self.options.reply_reporters:
            try:
                reply.add(await asyncio.to_thread(self.pipeline.plugins.render, name, report))
            except SeraError as error:
                log.warning("no %s for a note: %s", name, error)
        if not reply.embeds and not reply.text:
            emotion = report.emotion()
            reply.text.append(f"{emoji(emotion.label)} {emotion.headline()}" if emotion else "Speech analysed.")
        return reply.kwargs()

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

    async def handle(self, message: discord.Message, catching_up: bool = False) -> bool:
        """Answer a message's voice notes, live or caught up after a restart (``catchup``); whether it
        was answered now. A message is answered once: the one being answered is remembered here, the
        ones answered before in the database. Raises ``Deferred`` when a caught-up note must wait for
        the next catch-up (the bot is shutting down)."""
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
                    arrived = time.perf_counter()
                    outcome = await self.analyze(note, origin, settings, catching_up)
                    await self._answer_message(message, outcome, settings)
                    self.bot.telemetry.note_latency.observe(time.perf_counter() - arrived)
                except Deferred:
                    raise
                except Exception:  # one note's failure never costs the others their answer
                    log.exception("answering a note of message %s failed", message.id)
            try:
                await asyncio.to_thread(self.store.mark_answered, message.id, message.channel.id, guild_id, message.author.id)
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
            log.warning("could not answer a message in %s: %s", where(message.channel.id), error)

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
        arrived = time.perf_counter()
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
            self.bot.telemetry.note_latency.observe(time.perf_counter() - arrived)
        except discord.HTTPException as error:
            log.warning("could not answer interaction %s: %s", interaction.id, error)


    # -- the personal baseline ------------------------------------------------------------------------

    @baseline.command(name="add", description="Add a recording of you reading ordinary sentences to your baseline (a minute: ~10 clips)")
    @app_commands.describe(file="A voice note or audio file of you speaking as you usually do")
    async def baseline_add(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        self._track()
        info = self.pipeline.baseline_info
        if info is None or not is_audio(file):
            text = "The emotion analyzer in use keeps no baseline." if info is None else "I can only listen to audio files and voice notes."
            await interaction.response.send_message(text, ephemeral=True)
            return
        await interaction.response.defer(thinking=True, ephemeral=True)
        origin = Origin(interaction.user.id, interaction.user.id, interaction.guild_id, interaction.channel_id, None)
        outcome = await self._admit(file, origin, lambda: self._analyze(file, origin, GuildSettings(), enrol=True))
        if outcome.error:
            text = outcome.error
        elif outcome.baseline is None:
            text = "🔇 I heard no speech in that recording, so nothing was added."
        else:
            text = baseline_words(outcome.baseline.count, info.min_clips, await asyncio.to_thread(self.baselines.learning, str(interaction.user.id)))
        await interaction.followup.send(text, ephemeral=True)

    @baseline.command(name="learn", description="Let your own voice notes (and voice-channel speech) keep your baseline current")
    @app_commands.describe(enabled="Add what I hear of your own voice to your baseline from now on")
    async def baseline_learn(self, interaction: discord.Interaction, enabled: bool) -> None:
        await asyncio.to_thread(self.baselines.set_learning, str(interaction.user.id), enabled)  # a refusal: the tree's on_error answers
        await self._baseline_changed(interaction.user.id)
        text = ("From now on, your own voice notes and your speech in voice sessions you opted into add to your baseline "
                "(numbers only, never audio). `/emotion baseline learn enabled:False` stops it." if enabled
                else "Your voice notes no longer change your baseline.")  # fmt: skip
        await interaction.response.send_message(text, ephemeral=True)

    @baseline.command(name="show", description="What your baseline rests on")
    async def baseline_show(self, interaction: discord.Interaction) -> None:
        info = self.pipeline.baseline_info
        speaker = str(interaction.user.id)
        baseline = await asyncio.to_thread(self.baselines.get, speaker, info.space) if info else None
        learning = await asyncio.to_thread(self.baselines.learning, speaker)
        if info is None:
            text = "The emotion analyzer in use keeps no baseline."
        elif baseline is None:
            text = "You have no baseline yet. `/emotion baseline add` a few recordings of your ordinary voice" + (
                f" (I use it from {info.min_clips} clips on)." if info.min_clips else " (the model in use does not use baselines yet; it is kept for one that does).")  # fmt: skip
        else:
            text = baseline_words(baseline.count, info.min_clips, learning) + heard_mix(baseline, self._labels())
        await interaction.response.send_message(text, ephemeral=True)

    @baseline.command(name="clear", description="Delete your baseline")
    async def baseline_clear(self, interaction: discord.Interaction) -> None:
        deleted = await asyncio.to_thread(self.baselines.clear, str(interaction.user.id))
        await self._baseline_changed(interaction.user.id)
        text = "Your baseline is deleted." if deleted else "You had no baseline."
        await interaction.response.send_message(text, ephemeral=True)

    def _labels(self) -> tuple[str, ...]:
        """The emotions of the analyzer whose baselines these are, in its output order."""
        return next((a.labels for a in self.pipeline.plugins.analyzers if isinstance(a, EmotionAnalyzer) and a.baseline_info), ())

    async def _baseline_changed(self, user_id: int) -> None:
        """Voice sessions running now hear of it at once, not when they end."""
        listening = self.bot.get_cog("Listening")
        if listening is not None:
            await listening.baseline_changed(str(user_id))


@dataclass
class Reply:
    """A Discord reply assembled from reporters' renderings: a dict is an embed (Discord's embed JSON),
    text is the message's text, PNG bytes are an attachment (only where ``images`` are wanted)."""

    images: bool
    embeds: list[discord.Embed] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    files: list[discord.File] = field(default_factory=list)

    def add(self, rendered: object) -> None:
        if isinstance(rendered, dict) and len(self.embeds) < MAX_EMBEDS:
            self.embeds.append(discord.Embed.from_dict(rendered))
        elif isinstance(rendered, str) and rendered.strip():
            self.text.append(rendered)
        elif isinstance(rendered, bytes) and rendered and self.images:
            self.files.append(discord.File(io.BytesIO(rendered), filename=f"emotion{len(self.files) or ''}.png"))

    def kwargs(self) -> dict:
        out: dict = {}
        if len(self.embeds) == 1:
            out["embed"] = self.embeds[0]
        elif self.embeds:
            out["embeds"] = self.embeds
        if self.text:
            out["content"] = "\n".join(self.text)[:MAX_CONTENT]
        if len(self.files) == 1:
            out["file"] = self.files[0]
        elif self.files:
            out["files"] = self.files
        return out


def heard_mix(baseline: Baseline, labels: Sequence[str]) -> str:
    """What the model heard in a baseline's clips, most first: a baseline of one emotion is worth knowing."""
    shares = sorted(zip(baseline.heard_share, labels), reverse=True)
    heard = ", ".join(f"{label} {share:.0%}" for share, label in shares if share >= 0.005)
    return f" In its clips I heard: {heard}." if heard else ""


def baseline_words(clips: int, needed: int, learning: bool) -> str:
    """What a baseline rests on, and whether it is in use, in words."""
    state = "I use it from now on: your notes are judged against how you usually sound." if clips >= needed > 0 else (
        f"I start using it at {needed} clips (each sentence is one: a minute of ordinary speech is about ten)." if needed
        else "The model in use does not use baselines yet.")  # fmt: skip
    learns = " Your own voice notes keep it current (`/emotion baseline learn`)." if learning else ""
    return f"Your baseline rests on {clips} clip{'s' if clips != 1 else ''} (numbers only, never audio). {state}{learns}"


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(VoiceNotes(bot, bot.pipeline, bot.store, bot.baselines, bot.config.discord))
