"""``/privacy`` and ``/forget``: what sera keeps about a person, their say over being analysed by others,
and deleting all of it at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands
from discord.ext import commands

from sera.adapters.discord.failures import answer_failure
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
    "message ids, the time, the note's length and the result (emotion probabilities and the other analyzers' "
    "numbers).\n"
    "• Others can analyse your voice notes only in channels a server's admins enabled, and only they see the "
    "answer; `/privacy analysis_by_others:False` stops that everywhere.\n"
    "• In voice channels (`/listen`), only members who opted in are analysed; everyone else's audio is "
    "dropped unheard. Stored per utterance: who spoke, when, and the analysis; never the audio.\n"
    "• Server settings (enabled channels, reply style) and your opt-in are stored per server.\n"
    "• `/forget` deletes everything stored about you, at once and for good, in running sessions too (sessions "
    "you started keep no trace of you); only your choice not to be analysed by others is kept.\n"
    "• Emotion recognition from voice is uncertain; results are a hint, not a judgement about anyone."
)


def privacy(retention_days: float) -> str:
    """``PRIVACY``, with how long analyses are kept where the operator set ``discord.retention_days``."""
    if not retention_days:
        return PRIVACY
    return PRIVACY + f"\n• Analyses and voice-channel utterances are deleted after {retention_days:g} days, whatever you do."



class Privacy(commands.Cog):
    def __init__(self, bot: commands.Bot, pipeline: Pipeline, store: Store) -> None:
        self.bot = bot
        self.pipeline = pipeline
        self.store = store

    async def cog_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await answer_failure(interaction, error)

    @app_commands.command(name="privacy", description="What sera processes and stores, and for how long")
    @app_commands.describe(analysis_by_others="Whether other members may analyse your voice notes (where admins enabled it)")
    async def privacy(self, interaction: discord.Interaction, analysis_by_others: bool | None = None) -> None:
        if analysis_by_others is None:
            await interaction.response.send_message(privacy(self.bot.config.discord.retention_days), ephemeral=True)
            return
        # a refused write reaches cog_app_command_error: "Nothing was changed: <why>."
        await asyncio.to_thread(self.store.set_analysis_by_others, interaction.user.id, analysis_by_others)
        log.info("user %s %s analysis by others", interaction.user.id, "allowed" if analysis_by_others else "declined")
        text = (
            "Others may analyse your voice notes again, in channels where admins enabled it (only they see the answer)."
            if analysis_by_others
            else "Done: nobody else can analyse your voice notes with sera, in any server."
        )
        await interaction.response.send_message(text, ephemeral=True)

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

    async def forget_user(self, user_id: int) -> dict[str, int]:
        """Everything about the user, gone: running sessions first (so nothing new is stored), then every
        store in one transaction, then each plugin's own data. Returns what went, by kind."""
        listening = self.bot.get_cog("Listening")
        if listening is not None:
            await listening.forget_speaker(str(user_id))
        deleted = await asyncio.to_thread(self.store.db.forget_user, str(user_id))
        deleted.update(await asyncio.to_thread(self.pipeline.plugins.forget_user, str(user_id)))
        log.info("user %s deleted their data: %s", user_id, deleted)
        return deleted


class ForgetView(discord.ui.View):
    """Confirm or cancel ``/forget``; only the user who asked can press the buttons."""

    def __init__(self, user_id: int, erase: Callable[[int], Awaitable[dict[str, int]]]) -> None:
        super().__init__(timeout=120)
        self.user_id = user_id
        self.erase = erase

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.user_id

    @discord.ui.button(label="Delete my data", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        try:
            deleted = await self.erase(self.user_id)
        except SeraError as error:
            await interaction.response.edit_message(content=f"Nothing was deleted: {error}. Please try again.", view=None)
            return
        except Exception:
            log.exception("forgetting user %s failed", self.user_id)
            await interaction.response.edit_message(
                content="Nothing was deleted: something went wrong on my side (the operator has been told). "
                "Please try again later.",
                view=None,
            )
            return
        await interaction.response.edit_message(content=forgotten(deleted), view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)


def forgotten(deleted: dict[str, int]) -> str:
    """What ``/forget`` removed, in words."""
    parts = [
        f"{deleted.get('analyses', 0)} analyses",
        f"{deleted.get('utterances', 0)} voice-channel utterances",
    ]
    if deleted.get("sessions_started"):
        parts.append(f"your name on {deleted['sessions_started']} sessions you started")
    parts += [f"{count} items kept by the {name} plugin" for name, count in deleted.items()
              if name not in {"analyses", "utterances", "sessions_started"}]  # fmt: skip
    return "Done: " + ", ".join(parts[:-1]) + " and " + parts[-1] + " deleted."


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Privacy(bot, bot.pipeline, bot.store))
