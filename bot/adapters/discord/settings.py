"""``/sera ...``: a server's settings (channels analysed, reply style, analyzers on or off, whether members
may agree to transcripts), for members with Manage Server."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import discord
from discord import app_commands
from discord.ext import commands

from sera.adapters.discord.store import GuildSettings, Store
from sera.pipeline import Pipeline


def server_admin(interaction: discord.Interaction) -> bool:
    """The settings commands' check, run by discord.py before the command. Discord's default permissions
    already hide them from members without Manage Server, but a server can grant them to any role, so
    the bot checks too."""
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage("Server settings can only be changed in a server.")
    if not interaction.permissions.manage_guild:
        raise app_commands.MissingPermissions(["manage_guild"])
    return True


class ServerSettings(commands.Cog):
    admin = app_commands.Group(
        name="sera",
        description="Server settings for sera",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, pipeline: Pipeline, store: Store) -> None:
        self.pipeline = pipeline
        self.store = store

    @app_commands.check(server_admin)
    @admin.command(name="channel", description="Analyse voice notes in a channel automatically, or stop")
    @app_commands.describe(enabled="Analyse voice notes posted here", channel="Default: this channel")
    async def set_channel(
        self, interaction: discord.Interaction, enabled: bool, channel: discord.TextChannel | None = None
    ) -> None:
        channel_id = channel.id if channel else interaction.channel_id

        def edit(current: GuildSettings) -> GuildSettings:
            channels = current.channels | {channel_id} if enabled else current.channels - {channel_id}
            return replace(current, channels=frozenset(channels))

        await asyncio.to_thread(self.store.update_settings, interaction.guild_id, edit)
        state = "now analyses" if enabled else "no longer analyses"
        await interaction.response.send_message(f"sera {state} voice notes in <#{channel_id}>.", ephemeral=True)

    @app_commands.check(server_admin)
    @admin.command(name="style", description="How sera answers in this server")
    @app_commands.describe(
        reply="Answer with an embed", reaction="React with the emotion's emoji",
        chart="Attach a chart", ephemeral="Slash-command answers only visible to the caller",
        live_feedback="While listening in voice (/listen), keep a live mood message up to date",
    )  # fmt: skip
    async def set_style(
        self,
        interaction: discord.Interaction,
        reply: bool | None = None,
        reaction: bool | None = None,
        chart: bool | None = None,
        ephemeral: bool | None = None,
        live_feedback: bool | None = None,
    ) -> None:
        chosen = dict(reply=reply, reaction=reaction, chart=chart, ephemeral=ephemeral, live_feedback=live_feedback)
        changes = {k: v for k, v in chosen.items() if v is not None}
        settings = await asyncio.to_thread(self.store.update_settings, interaction.guild_id, lambda s: replace(s, **changes))
        await interaction.response.send_message(describe(settings), ephemeral=True)

    @app_commands.check(server_admin)
    @admin.command(name="plugin", description="Turn an analyzer plugin on or off in this server")
    async def set_plugin(self, interaction: discord.Interaction, name: str, enabled: bool) -> None:
        known = [a.name for a in self.pipeline.plugins.analyzers]
        if name not in known:
            await interaction.response.send_message(f"No analyzer called `{name}`. Known: {', '.join(known)}.", ephemeral=True)
            return

        def edit(current: GuildSettings) -> GuildSettings:
            disabled = current.disabled_plugins - {name} if enabled else current.disabled_plugins | {name}
            return replace(current, disabled_plugins=frozenset(disabled))

        settings = await asyncio.to_thread(self.store.update_settings, interaction.guild_id, edit)
        await interaction.response.send_message(describe(settings), ephemeral=True)

    @set_plugin.autocomplete("name")
    async def _plugin_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = [a.name for a in self.pipeline.plugins.analyzers]
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n.lower()][:25]

    @app_commands.check(server_admin)
    @admin.command(name="transcripts", description="Let members agree to have their words written down in this server")
    @app_commands.describe(enabled="Members who agree (/privacy transcripts:True) get transcripts and meeting notes")
    async def set_transcripts(self, interaction: discord.Interaction, enabled: bool) -> None:
        if enabled and not self.pipeline.transcribes:
            await interaction.response.send_message(
                "This bot makes no transcripts: its operator has not enabled the transcript plugin "
                "(`plugins.transcript.enabled`, with the `transcripts` extra installed).", ephemeral=True,
            )  # fmt: skip
            return
        settings = await asyncio.to_thread(self.store.update_settings, interaction.guild_id, lambda s: replace(s, transcripts=enabled))
        listening = interaction.client.get_cog("Listening") if interaction.client else None
        if listening is not None:
            listening.transcripts_switched(interaction.guild_id, enabled)
        more = (" Each member still decides for themselves (`/privacy transcripts:True`); nobody's words are written "
                "down without their agreement." if enabled else " Words already kept stay until retention or `/forget` removes them.")  # fmt: skip
        await interaction.response.send_message(describe(settings) + "\n" + more.strip(), ephemeral=True)

    @app_commands.check(server_admin)
    @admin.command(name="settings", description="Show sera's settings for this server")
    async def show_settings(self, interaction: discord.Interaction) -> None:
        settings = await asyncio.to_thread(self.store.settings, interaction.guild_id)
        stopped = "".join(f"\n**{i.name}:** {i.status}" for i in self.pipeline.plugins.failures())
        await interaction.response.send_message(describe(settings) + stopped, ephemeral=True)


def describe(settings: GuildSettings) -> str:
    channels = ", ".join(f"<#{c}>" for c in sorted(settings.channels)) or "none (use /sera channel)"
    onoff = {True: "on", False: "off"}
    return (
        f"**Channels:** {channels}\n"
        f"**Reply:** {onoff[settings.reply]} · **Reaction:** {onoff[settings.reaction]} · "
        f"**Chart:** {onoff[settings.chart]} · **Ephemeral:** {onoff[settings.ephemeral]} · "
        f"**Live feedback:** {onoff[settings.live_feedback]} · **Transcripts:** {onoff[settings.transcripts]}\n"
        f"**Plugins off:** {', '.join(sorted(settings.disabled_plugins)) or 'none'}"
    )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ServerSettings(bot.pipeline, bot.store))
