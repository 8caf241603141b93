"""``/privacy`` and ``/forget``: what sera keeps about a person, their say over being analysed by others,
and deleting all of it at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from sera.adapters.discord.people import who
from sera.adapters.discord.store import Store
from sera.errors import SeraError
from sera.pipeline import Pipeline


log = logging.getLogger(__name__)

PRIVACY = (
    "**What sera does with your audio**\n"
    "• It analyses voice notes you send in DMs or in channels a server's admins enabled, and audio you ask it "
    "to analyse with `/emotion analyse` or *Analyse emotion*.\n"
    "• The audio is decoded in memory (never written to disk) and thrown away once analysed. "
    "**No audio is stored.**\n"
    "• Stored per analysis, until you delete it: whose voice it was and who asked, the server, channel and "
    "message ids, the file's name, the time, the note's length and the result (emotion probabilities and the other analyzers' "
    "numbers).\n"
    "• Others can analyse your voice notes only in channels a server's admins enabled, and only they see the "
    "answer; `/privacy analysis_by_others:False` stops that everywhere.\n"
    "• In voice channels (`/listen`), only members who opted in are analysed; everyone else's audio is "
    "dropped unheard. Stored per utterance: who spoke, when, and the analysis; never the audio.\n"
    "• Your personal baseline, if you make one (`/emotion baseline add`): how many recordings it rests on, the average "
    "of the model's numbers for your voice and how often it heard each emotion in them; never audio. Only with "
    "`/emotion baseline learn` do your own voice notes and voice-session speech add to it.\n"
    "• **Transcripts** (what you say, written down) only where a server's admins turned them on (`/sera transcripts`) "
    "**and** you agreed in that server (`/privacy transcripts:True`, or the button when sera starts listening). Then "
    "your voice notes' answers show your words, and in voice channels your words are kept with each utterance for "
    "the session's meeting notes, which those who can see the session's history see. `/privacy transcripts:False` "
    "stops it; `/forget` deletes the words kept.\n"
    "• Server settings (enabled channels, reply style) and your opt-ins are stored per server.\n"
    "• `/forget` deletes everything stored about you, at once and for good, in running sessions too (sessions "
    "you started keep no trace of you); only your choice not to be analysed by others is kept.\n"
    "• Emotion recognition from voice is uncertain; results are a hint, not a judgement about anyone."
)


def privacy(retention_days: float) -> str:
    """``PRIVACY``, with how long analyses are kept where the operator set ``discord.retention_days``."""
    if not retention_days:
        return PRIVACY
    return PRIVACY + (f"\n• Analyses and voice-channel utterances (transcripts included) are deleted after {retention_days:g} days, and a baseline "
                      f"{retention_days:g} days after it last changed, whatever you do.")


class Privacy(commands.Cog):
    def __init__(self, bot: commands.Bot, pipeline: Pipeline, store: Store) -> None:
        self.bot = bot
        self.pipeline = pipeline
        self.store = store

    @app_commands.command(name="privacy", description="What sera processes and stores, and for how long")
    @app_commands.describe(analysis_by_others="Whether other members may analyse your voice notes (where admins enabled it)",
                           transcripts="Whether sera may write down what you say, in this server (where admins turned transcripts on)")  # fmt: skip
    async def privacy(self, interaction: discord.Interaction, analysis_by_others: bool | None = None, transcripts: bool | None = None) -> None:
        if analysis_by_others is None and transcripts is None:
            user = str(interaction.user.id)
            waiting = (await asyncio.to_thread(self.store.pending_forgets, user)).get(user)
            text = privacy(self.bot.config.discord.retention_days) + (
                f"\n• **Still to delete:** what the {', '.join(waiting)} plugin{'s' if len(waiting) > 1 else ''} "
                "kept about you, from your `/forget`; I ask again at each start until it is gone." if waiting else "")  # fmt: skip
            await interaction.response.send_message(text, ephemeral=True)
            return
        answers = []
        if analysis_by_others is not None:
            # a refused write reaches the tree's on_error: "Nothing was changed: <why>."
            await asyncio.to_thread(self.store.set_analysis_by_others, interaction.user.id, analysis_by_others)
            log.info("%s %s analysis by others", who(interaction.user.id), "allowed" if analysis_by_others else "declined")
            answers.append(
                "Others may analyse your voice notes again, in channels where admins enabled it (only they see the answer)."
                if analysis_by_others
                else "Done: nobody else can analyse your voice notes with sera, in any server."
            )
        if transcripts is not None:
            answers.append(await self.set_transcripts(interaction.guild_id, interaction.user.id, transcripts))
        await interaction.response.send_message("\n".join(answers), ephemeral=True)

    async def set_transcripts(self, guild_id: int | None, user_id: int, agrees: bool) -> str:
        """A member agrees (or no longer agrees) to have their words written down in one server; a session
        running there follows from its next utterance. What to tell them."""
        if guild_id is None:
            return "Transcripts are agreed to per server; use this in a server."
        user = str(user_id)
        await asyncio.to_thread(self.bot.sessions.set_consent, str(guild_id), user, agrees, "transcripts")
        listening = self.bot.get_cog("Listening")
        if listening is not None:
            listening.transcripts_changed(guild_id, user, agrees)
        log.info("%s %s transcripts in guild %s", who(user), "agreed to" if agrees else "declined", guild_id)
        if not agrees:
            return "Done: sera no longer writes down what you say in this server. `/forget` deletes the words already kept."
        if not self.pipeline.transcribes:
            return "Noted, but this bot makes no transcripts (its operator has not enabled them): nothing is written down."
        if not (await asyncio.to_thread(self.store.settings, guild_id)).transcripts:
            return "Noted; this server's admins have not turned transcripts on (`/sera transcripts`), so nothing is written down yet."
        return ("You agreed: in this server, sera writes down what you say, in your voice notes' answers and, when it listens "
                "in voice, in the session's meeting notes. `/privacy transcripts:False` stops it.")  # fmt: skip

    @app_commands.command(name="forget", description="Delete everything sera has stored about you")
    async def forget(self, interaction: discord.Interaction) -> None:
        count = await asyncio.to_thread(self.store.analyses_of, interaction.user.id)
        view = ForgetView(interaction.user.id, self.forget_user)
        await interaction.response.send_message(
            f"This deletes all {count} analyses stored about you, your voice-channel utterances and your "
            "opt-ins, and removes you from running sessions. There is no undo.",
            view=view,
            ephemeral=True,
        )

    async def forget_user(self, user_id: int) -> Forgotten:
        """Everything about the user, gone: running sessions first (so nothing new is stored), then every
        store in one transaction, then each plugin's own data. A plugin that could not delete its share
        (it raised, hung or was stopped) is named in the answer and asked again at the next start."""
        user = str(user_id)
        listening = self.bot.get_cog("Listening")
        if listening is not None:
            await listening.forget_speaker(user)
        deleted = await asyncio.to_thread(self.store.db.forget_user, user)
        kept, failed = await asyncio.to_thread(self.pipeline.plugins.forget_user, user)
        deleted.update(kept)
        if failed:
            await asyncio.to_thread(self.store.forget_later, user, failed)
            log.warning("%d plugins could not delete a user's data now (%s); retried at the next start", len(failed), ", ".join(failed))
        log.info("a user deleted their data: %s", {k: v for k, v in deleted.items() if v})
        return Forgotten(deleted, failed)

    @commands.Cog.listener("on_ready")
    async def retry_forgets(self) -> None:
        """At start (and each reconnection): the plugins a ``/forget`` could not reach before, asked again
        (off the loop)."""
        try:
            pending = await asyncio.to_thread(self.store.pending_forgets)
            for user, plugins in pending.items():
                _, failed = await asyncio.to_thread(self.pipeline.plugins.forget_user, user, plugins)
                await asyncio.to_thread(self.store.forgotten_by, user, [p for p in plugins if p not in failed])
                if failed:
                    log.warning("plugins %s still could not delete a user's data; retried at the next start", ", ".join(failed))
        except SeraError as error:
            log.error("could not retry the pending deletions: %s", error)


@dataclass(frozen=True)
class Forgotten:
    """What ``/forget`` removed, by kind, and the plugins that could not remove theirs yet."""

    deleted: dict[str, int]
    failed: list[str]


class ForgetView(discord.ui.View):
    """Confirm or cancel ``/forget``; only the user who asked can press the buttons."""

    def __init__(self, user_id: int, erase: Callable[[int], Awaitable[Forgotten]]) -> None:
        super().__init__(timeout=120)
        self.user_id = user_id
        self.erase = erase

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.user_id

    @discord.ui.button(label="Delete my data", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Acknowledged at once (deleting, plugins' hooks included, may take longer than the 3 s Discord
        waits for an answer), then the message is edited with what went."""
        self.stop()
        await interaction.response.edit_message(content="Deleting your data…", view=None)
        try:
            result = await self.erase(self.user_id)
        except SeraError as error:
            text = f"Nothing was deleted: {error}. Please try again."
        except Exception:
            log.exception("forgetting a user failed")
            text = "Nothing was deleted: something went wrong on my side (the operator has been told). Please try again later."
        else:
            text = forgotten(result)
        await interaction.edit_original_response(content=text)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)


STORE_KINDS = {"analyses", "utterances", "sessions_started", "baselines", "answered_messages"}  # what the stores report, by kind


def forgotten(result: Forgotten) -> str:
    """What ``/forget`` removed, in words, and what could not be yet."""
    deleted = result.deleted
    parts = [
        f"{deleted.get('analyses', 0)} analyses",
        f"{deleted.get('utterances', 0)} voice-channel utterances",
    ]
    if deleted.get("baselines"):
        parts.append("your personal baseline")
    if deleted.get("sessions_started"):
        parts.append(f"your name on {deleted['sessions_started']} sessions you started")
    parts += [f"{count} items kept by the {name} plugin" for name, count in deleted.items()
              if name not in STORE_KINDS]  # fmt: skip
    text = "Done: " + ", ".join(parts[:-1]) + " and " + parts[-1] + " deleted."
    if result.failed:
        names = ", ".join(result.failed)
        text += (f" The {names} plugin{'s' if len(result.failed) > 1 else ''} could not delete what {'they keep' if len(result.failed) > 1 else 'it keeps'} "
                 "about you right now; I will ask again when I restart.")  # fmt: skip
    return text


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Privacy(bot, bot.pipeline, bot.store))
