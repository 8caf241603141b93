"""Study-group voice channels: ``/listen`` joins, analyses those who opted in, and summarises at the end.

Consent comes first: the notice posted on ``/listen start`` says who started it, what is analysed and
that nothing is recorded, with buttons to opt in or out (remembered per server; ``/listen optout``
works too). Where the server has transcripts on, a third button also agrees to having one's words
written down (a consent of its own: ``/privacy transcripts``); only those members' utterances carry
their words, and the summary's meeting notes show them. Audio of anyone who has not opted in is
dropped in the receive sink before it is even decrypted. A session ends with ``/listen stop``, when the channel empties, after
``live.max_session_minutes``, or when the voice connection drops (then it is marked interrupted);
each way ends in the same summary. Sessions a crash left open are summarised when the bot is back.

Experimental until tried on a real server: the cog is only loaded when ``live.enabled`` is true.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands, tasks, voice_recv

from sera.adapters.discord.people import where, who
from sera.config import LiveOptions
from sera.adapters.discord.history import member_names, stored_summary, summary_message
from sera.adapters.discord.receive import SeraSink
from sera.adapters.discord.store import Store
from sera.errors import SeraError
from sera.live import LiveSession
from sera.pipeline import Pipeline
from sera.sessions import ENDED, INTERRUPTED, STALE_SECONDS, SessionStore, StoredSession
from sera.summary import SessionSummary, Utterance
from sera.emotions import emoji


log = logging.getLogger(__name__)

OPT_IN_ID = "sera:listen:optin"
OPT_OUT_ID = "sera:listen:optout"
TRANSCRIBE_ID = "sera:listen:transcribe"
CONNECT_TIMEOUT_SECONDS = 20.0
TRANSCRIPTS_NOTICE = (
    "\n\n**Transcripts are on in this server:** members who agree (the last button, or `/privacy transcripts:True`) "
    "also have their words written down, kept with each utterance for the meeting notes. Nobody else's words are."
)


@dataclass
class Transcribing:
    """Whose words a session writes down: members who agreed, while the server has transcripts on; both
    can change mid-session (``/privacy transcripts``, ``/sera transcripts``) and count from the next utterance."""

    on: bool
    agreed: set[str]

    def __call__(self, speaker: str) -> bool:
        return self.on and speaker in self.agreed


def notice(starter: discord.abc.User, channel: discord.abc.GuildChannel, minutes: float, transcripts: bool = False) -> discord.Embed:
    embed = discord.Embed(
        title=f"🎧 sera is listening in {channel.mention}",
        description=(
            f"{starter.mention} started a session.\n\n"
            "**What is analysed:** how the voices of members who **opted in** sound (emotion, pitch, "
            "loudness), utterance by utterance, and who talks how much.\n"
            "**Nothing is recorded:** audio is analysed in memory and thrown away; only the results are kept.\n"
            "**Everyone else is ignored:** audio of members who did not opt in is dropped unheard.\n"
            "**Who sees the results:** the summary is posted here; the per-utterance history "
            "(`/sessions show|export`) only to those who spoke, who started it, and members with Manage Server.\n\n"
            "Opt in or out below (remembered in this server; `/listen optout` works too). "
            f"The session ends with `/listen stop`, when the channel empties, or after {minutes:.0f} minutes."
            + (TRANSCRIPTS_NOTICE if transcripts else "")
        ),
        color=0x5865F2,
    )
    embed.set_footer(text="Experimental. Emotion from voice is a hint, not a judgement about anyone.")
    return embed


class ConsentView(discord.ui.View):
    """The opt-in/opt-out buttons, and where the server has transcripts on, one that also agrees to them;
    persistent (fixed custom ids), so they keep working after a restart."""

    def __init__(self, cog: Listening, transcripts: bool = True) -> None:
        super().__init__(timeout=None)
        self.cog = cog
        if not transcripts:
            self.remove_item(self.transcribe)

    @discord.ui.button(label="Analyse me", style=discord.ButtonStyle.success, custom_id=OPT_IN_ID)
    async def opt_in(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.cog.set_consent(interaction, True)

    @discord.ui.button(label="Don't analyse me", style=discord.ButtonStyle.secondary, custom_id=OPT_OUT_ID)
    async def opt_out(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.cog.set_consent(interaction, False)

    @discord.ui.button(label="Analyse me and write down what I say", style=discord.ButtonStyle.primary, custom_id=TRANSCRIBE_ID)
    async def transcribe(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.cog.set_consent(interaction, True, transcripts=True)


@dataclass
class Active:
    """A session in progress in one guild."""

    live: LiveSession
    voice: voice_recv.VoiceRecvClient
    channel: discord.abc.Messageable  # where the notice, feedback and summary go
    guild: discord.Guild
    consenting: set[str]
    transcribing: Transcribing
    loop: asyncio.AbstractEventLoop  # receive and worker threads hand results back to it
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    moods: dict[str, tuple[str, float]] = field(default_factory=dict)
    feedback: discord.Message | None = None
    last_feedback: float = 0.0
    ending: bool = False


class Listening(commands.Cog):
    listen = app_commands.Group(name="listen", description="Listen to this server's voice channel", guild_only=True)

    def __init__(self, bot: commands.Bot, pipeline: Pipeline, sessions: SessionStore, store: Store, options: LiveOptions) -> None:
        self.bot = bot
        self.pipeline = pipeline
        self.sessions = sessions
        self.store = store
        self.options = options
        self.active: dict[int, Active] = {}
        self._starting: set[int] = set()  # guilds between "/listen start" and the session being up
        self._tasks: set[asyncio.Future] = set()  # work scheduled from other threads, kept until done
        self.view = ConsentView(self)
        # Live analysis has threads of its own: voice notes never queue behind a session's ticks.
        self.workers = ThreadPoolExecutor(options.workers, thread_name_prefix="sera-live")
        self.clock: Callable[[], float] = time.monotonic  # the sessions' clock (tests drive their own)

    async def cog_load(self) -> None:
        self.bot.add_view(self.view)
        self.orphans.start()

    async def cog_unload(self) -> None:
        self.orphans.cancel()
        self.workers.shutdown(wait=False, cancel_futures=True)

    @tasks.loop(seconds=STALE_SECONDS)
    async def orphans(self) -> None:
        """Once ready, then as often as a session can go stale: sessions cut short by a crash of this
        process or of another (on this machine or elsewhere) are summarised, each by one process."""
        try:
            await self.summarize_orphans()
        except SeraError as error:
            log.error("could not look for sessions cut short: %s", error)

    @orphans.before_loop
    async def _ready(self) -> None:
        await self.bot.wait_until_ready()

    # -- starting ------------------------------------------------------------------------------------------

    async def connect(self, channel: discord.VoiceChannel | discord.StageChannel) -> voice_recv.VoiceRecvClient:
        """Join with the receiving voice client (the seam the tests replace: there is no Discord here)."""
        return await channel.connect(cls=voice_recv.VoiceRecvClient, timeout=CONNECT_TIMEOUT_SECONDS, self_deaf=False)

    @listen.command(name="start", description="Join your voice channel and analyse members who opt in")
    async def start(self, interaction: discord.Interaction) -> None:
        guild = interaction.guild
        voice = getattr(interaction.user, "voice", None)
        channel = voice.channel if voice else None
        if guild is None or channel is None:
            await interaction.response.send_message("Join a voice channel first, then run `/listen start`.", ephemeral=True)
            return
        if guild.id in self.active or guild.id in self._starting:
            running = self.active[guild.id].voice.channel.mention if guild.id in self.active else "this server"
            await interaction.response.send_message(f"I'm already listening in {running}.", ephemeral=True)
            return
        if len(self.active) + len(self._starting) >= self.options.max_sessions:
            log.warning("refused a session in guild %s: %d sessions running", guild.id, len(self.active))
            await interaction.response.send_message(
                "I'm listening in as many voice channels as I can right now. Please try again later.", ephemeral=True
            )
            return
        if not channel.permissions_for(guild.me).connect:
            await interaction.response.send_message(f"I need the **Connect** permission in {channel.mention}.", ephemeral=True)
            return
        self._starting.add(guild.id)
        try:
            await self._start(interaction, guild, channel)
        finally:
            self._starting.discard(guild.id)

    async def _start(self, interaction: discord.Interaction, guild: discord.Guild, channel: discord.abc.GuildChannel) -> None:
        await interaction.response.defer(thinking=True)
        space = str(guild.id)
        consenting = await asyncio.to_thread(self.sessions.consenting, space)
        settings = await asyncio.to_thread(self.store.settings, guild.id)
        transcribing = Transcribing(settings.transcripts, await asyncio.to_thread(self.sessions.consenting, space, "transcripts"))
        info = await asyncio.to_thread(self.sessions.start, space, str(channel.id), str(interaction.user.id), str(interaction.channel_id))
        loop = asyncio.get_running_loop()
        live = await asyncio.to_thread(  # plugins hear session_started here, off the loop
            LiveSession, self.pipeline, self.sessions, info, self.options, consents=consenting.__contains__,
            skip=settings.disabled_plugins, on_results=self._results_callback(loop, guild.id), clock=self.clock,
            baselines=self.bot.baselines, transcribes=transcribing,
        )  # fmt: skip
        try:
            voice_client = await self.connect(channel)
            voice_client.listen(
                SeraSink(live, lambda: voice_client._connection.dave_session),
                after=lambda error: self._receive_stopped(loop, guild.id, error),
            )
        except (asyncio.TimeoutError, discord.ClientException, RuntimeError, OSError) as error:
            log.warning("could not join voice channel %s in guild %s: %r", channel.id, guild.id, error)
            await asyncio.to_thread(live.finish, INTERRUPTED)
            await interaction.followup.send(
                f"I couldn't join {channel.mention}. Check that I can see and connect to it, then try again."
            )
            return
        active = Active(live, voice_client, interaction.channel, guild, consenting, transcribing, loop)
        self.active[guild.id] = active
        active.task = asyncio.create_task(self._run(guild.id, active))
        log.info("session %d: listening in channel %s of guild %s", info.id, channel.id, guild.id)
        transcripts = transcribing.on and self.pipeline.transcribes
        await interaction.followup.send(embed=notice(interaction.user, channel, self.options.max_session_minutes, transcripts),
                                        view=ConsentView(self, transcripts))  # fmt: skip

    async def _run(self, guild_id: int, active: Active) -> None:
        await active.live.run(active.stopped, self.workers)
        if not active.stopped.is_set():  # the time limit
            await self.end(guild_id, ENDED, "the session reached its time limit")

    def _receive_stopped(self, loop: asyncio.AbstractEventLoop, guild_id: int, error: Exception | None) -> None:
        """The receive thread stopped (called on it): end the session as interrupted unless we stopped it."""
        if error is not None:
            log.error("voice receive failed in guild %s: %s", guild_id, error)
            loop.call_soon_threadsafe(lambda: self._schedule(self.end(guild_id, INTERRUPTED, "voice receive failed")))

    # -- during --------------------------------------------------------------------------------------------

    def _results_callback(self, loop: asyncio.AbstractEventLoop, guild_id: int) -> Callable[[list[Utterance]], None]:
        """Called on a worker thread with each batch of stored utterances; hands them to the loop."""

        def arrived(rows: list[Utterance]) -> None:
            if not loop.is_closed():  # the coroutine is made on the loop's thread, where it will run
                loop.call_soon_threadsafe(lambda: self._schedule(self._feedback(guild_id, rows)))

        return arrived

    def _schedule(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _feedback(self, guild_id: int, rows: list[Utterance]) -> None:
        active = self.active.get(guild_id)
        if active is None or active.ending:
            return
        for row in rows:
            if row.label is not None:
                active.moods[row.speaker] = (row.label, row.confidence or 0.0)
        settings = await asyncio.to_thread(self.store.settings, guild_id)
        now = time.monotonic()
        if not settings.live_feedback or not active.moods or now - active.last_feedback < self.options.feedback_seconds:
            return
        active.last_feedback = now
        text = f"**Live mood** (updated at most every {self.options.feedback_seconds:.0f} s)\n" + "\n".join(
            f"<@{speaker}>: {emoji(label)} {label} {confidence:.0%}" for speaker, (label, confidence) in active.moods.items()
        )
        try:
            if active.feedback is None:
                active.feedback = await active.channel.send(text, allowed_mentions=discord.AllowedMentions.none())
            else:
                await active.feedback.edit(content=text)
        except discord.HTTPException as error:
            log.warning("could not post live feedback in guild %s: %s", guild_id, error)

    @commands.Cog.listener()
    async def on_voice_state_update(self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState) -> None:
        active = self.active.get(member.guild.id)
        if active is None:
            return
        if member.id == member.guild.me.id:
            if after.channel is None:
                await self.end(member.guild.id, INTERRUPTED, "I was disconnected from the voice channel")
            return
        channel = active.voice.channel
        if before.channel is not None and before.channel.id == channel.id and not any(not m.bot for m in channel.members):
            await self.end(member.guild.id, ENDED, "everyone left the voice channel")

    # -- ending --------------------------------------------------------------------------------------------

    @listen.command(name="stop", description="Stop listening and post the session summary")
    async def stop(self, interaction: discord.Interaction) -> None:
        if interaction.guild_id not in self.active:
            await interaction.response.send_message("I'm not listening in this server.", ephemeral=True)
            return
        await interaction.response.send_message(f"Stopping; {interaction.user.mention} ended the session. Summary coming up.")
        await self.end(interaction.guild_id, ENDED, None)

    async def end(self, guild_id: int, status: str, reason: str | None) -> None:
        """Stop receiving, analyse what is left, close the session and post its summary; runs once."""
        active = self.active.get(guild_id)
        if active is None or active.ending:
            return
        active.ending = True
        active.stopped.set()
        try:
            if active.task is not None and active.task is not asyncio.current_task():
                await active.task
            active.voice.stop_listening()
            if active.voice.is_connected():
                await active.voice.disconnect(force=True)
        except Exception:
            log.exception("leaving the voice channel in guild %s failed", guild_id)
        finally:
            self.active.pop(guild_id, None)
        names = member_names(active.guild, active.live.tracks)
        try:
            summary = await asyncio.to_thread(active.live.finish, status, names)
        except Exception:
            # The session may still be "live" in the store: then the next start posts it again (at
            # least once, never lost). Now: a summary of what was stored, or a word that it will follow.
            log.exception("finishing session %d failed", active.live.info.id)
            known = StoredSession(active.live.info, status, active.live.elapsed(), active.live.shed, None)
            try:
                summary = await asyncio.to_thread(stored_summary, self.sessions, known, active.guild)
            except SeraError:
                await self._post(active.channel, {"content": f"Session #{active.live.info.id} ended, but its summary "
                                                  "could not be built now; it will be posted when I'm back."})  # fmt: skip
                return
        log.info("session %d %s (%s): %d utterances, %d frames shed", summary.session.id, status, reason or "stopped",
                 len(summary.timeline), summary.shed)  # fmt: skip
        await self.post_summary(active.channel, summary, reason)

    async def post_summary(self, channel: discord.abc.Messageable, summary: SessionSummary, reason: str | None) -> bool:
        """Post a session's summary; False when Discord refused it (it is logged)."""
        return await self._post(channel, await summary_message(self.pipeline, summary, reason), summary.session.id)

    async def _post(self, channel: discord.abc.Messageable, kwargs: dict[str, Any], session_id: int | None = None) -> bool:
        try:
            await channel.send(**kwargs, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as error:
            log.warning("could not post in %s (session %s): %s", where(getattr(channel, "id", None)), session_id, error)
            return False
        return True

    async def summarize_orphans(self) -> None:
        """Sessions a crash left open: post each summary where the session began, then mark it interrupted.

        In that order, so that a crash in between posts a summary twice rather than never. A summary that
        Discord refuses is tried again at the next start; one whose channel is gone is logged and closed."""
        running = [a.live.info.id for a in self.active.values()]
        for session_id in await asyncio.to_thread(self.sessions.claim_orphans, running):
            known = await asyncio.to_thread(self.sessions.info, session_id)
            channel = self.bot.get_channel(int(known.report_to)) if known.report_to else None
            if channel is None:
                log.warning("session %d was cut short, and its channel is gone: no summary posted", session_id)
            else:
                summary = await asyncio.to_thread(stored_summary, self.sessions, known, self.bot.get_guild(int(known.info.space)), True)
                if not await self.post_summary(channel, summary, "sera restarted during this session"):
                    continue
            await asyncio.to_thread(self.sessions.mark_interrupted, session_id)

    # -- consent -------------------------------------------------------------------------------------------

    async def set_consent(self, interaction: discord.Interaction, consents: bool, transcripts: bool = False) -> None:
        """Opt in to live analysis (with ``transcripts``, to having one's words written down too) or out of it."""
        if interaction.guild_id is None:
            await interaction.response.send_message("Consent is per server; use this in a server.", ephemeral=True)
            return
        speaker = str(interaction.user.id)
        try:
            await asyncio.to_thread(self.sessions.set_consent, str(interaction.guild_id), speaker, consents)
            if transcripts:
                await asyncio.to_thread(self.sessions.set_consent, str(interaction.guild_id), speaker, True, "transcripts")
        except SeraError as error:  # nothing was stored: say so, rather than "you're out" that a restart undoes
            await interaction.response.send_message(f"Nothing was changed: {error}.", ephemeral=True)
            return
        if transcripts:
            self.transcripts_changed(interaction.guild_id, speaker, True)
        active = self.active.get(interaction.guild_id)
        if active is not None and consents:
            active.consenting.add(speaker)
        elif active is not None:
            active.consenting.discard(speaker)
        log.info("%s opted %s in guild %s", who(speaker), "in" if consents else "out", interaction.guild_id)
        text = (
            "You're in: when sera listens in this server, how your voice sounds is analysed (never recorded). "
            "`/listen optout` undoes it."
            if consents
            else "You're out: sera ignores your voice in this server from now on."
        )
        if transcripts:
            text += " What you say is written down too, for the meeting notes; `/privacy transcripts:False` stops that."
        await interaction.response.send_message(text, ephemeral=True)

    @listen.command(name="optin", description="Let sera analyse your voice when it listens in this server")
    async def optin(self, interaction: discord.Interaction) -> None:
        await self.set_consent(interaction, True)

    @listen.command(name="optout", description="Stop sera analysing your voice in this server")
    async def optout(self, interaction: discord.Interaction) -> None:
        await self.set_consent(interaction, False)

    def transcripts_changed(self, guild_id: int, speaker: str, agrees: bool) -> None:
        """A member agreed to transcripts in a server, or no longer does: a session running there follows."""
        active = self.active.get(guild_id)
        if active is not None:
            (active.transcribing.agreed.add if agrees else active.transcribing.agreed.discard)(speaker)

    def transcripts_switched(self, guild_id: int, on: bool) -> None:
        """The server's admins turned transcripts on or off: a session running there follows."""
        active = self.active.get(guild_id)
        if active is not None:
            active.transcribing.on = on

    async def forget_speaker(self, speaker: str) -> None:
        """``/forget`` while sessions run: the speaker is no longer heard, their queued audio and live mood
        go, and nothing more of theirs is stored (the stores then delete what was)."""
        for active in list(self.active.values()):
            active.consenting.discard(speaker)
            active.transcribing.agreed.discard(speaker)
            active.moods.pop(speaker, None)
            await asyncio.to_thread(active.live.forget, speaker)

    async def baseline_changed(self, speaker: str) -> None:
        """``/emotion baseline clear`` or ``learn`` while sessions run: they take effect from the next utterance."""
        for active in list(self.active.values()):
            await asyncio.to_thread(active.live.baseline_changed, speaker)

    async def close(self) -> None:
        """Bot shutdown: every running session ends (and is summarised) before Discord closes."""
        for guild_id in list(self.active):
            await self.end(guild_id, INTERRUPTED, "sera is shutting down")


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Listening(bot, bot.pipeline, bot.sessions, bot.store, bot.config.live))
    await bot.load_extension("sera.adapters.discord.history")
