"""How every cog answers a slash command that failed: one ephemeral sentence for the user (a check
that refused, a database that refused a write, a bug) and one log line for the operator."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from sera.adapters.discord.people import who
from sera.errors import SeraError


log = logging.getLogger(__name__)

PERMISSION_NAMES = {"manage_guild": "Manage Server"}  # as Discord's own settings name them


async def answer_failure(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """One ephemeral sentence for the user and one log line for the operator, for any cog's command."""
    cause = getattr(error, "original", error)
    command = interaction.command and interaction.command.qualified_name
    if isinstance(cause, app_commands.MissingPermissions):
        names = " and ".join(f"**{PERMISSION_NAMES.get(p, p.replace('_', ' ').title())}**" for p in cause.missing_permissions)
        log.info("%s without %s tried /%s", who(interaction.user.id), cause.missing_permissions, command)
        text = f"You need the {names} permission for this."
    elif isinstance(cause, app_commands.CheckFailure):
        log.info("%s cannot run /%s here: %s", who(interaction.user.id), command, cause)
        text = str(cause)
    elif isinstance(cause, SeraError):
        log.warning("command %s failed: %s", command, cause)
        text = f"Nothing was changed: {cause}."
    else:
        log.error("command %s failed", command, exc_info=cause)
        text = "Something went wrong on my side; the operator has been told."
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as failure:
        log.warning("could not answer interaction %s: %s", interaction.id, failure)
