"""``sera sync``: what the application commands Discord holds would become, and then the sync itself.

Discord keeps its own copy of a bot's slash commands and context menus; a sync replaces it wholesale,
and syncs are rate-limited. So an operator first wants to see the difference (``--dry-run``): which
commands would be created, changed (and in what) or deleted, globally or in one server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import discord
from discord import app_commands

from sera.adapters.discord.app import SeraBot, said_plainly, token
from sera.adapters.discord.store import Store
from sera.config import Config
from sera.errors import SeraError
from sera.pipeline import Pipeline

COMPARED = ("description", "options", "default_member_permissions", "nsfw", "contexts", "integration_types")


@dataclass(frozen=True)
class Change:
    action: str  # "create", "change", "delete" or "keep"
    name: str  # as people see it: "/sera" for a slash command, "Analyse emotion (message menu)"
    fields: tuple[str, ...] = ()  # what differs, for "change"


def shown_name(payload: dict[str, Any]) -> str:
    kind = payload.get("type", 1)
    return f"/{payload['name']}" if kind == 1 else f"{payload['name']} ({'user' if kind == 2 else 'message'} menu)"


def comparable(payload: dict[str, Any]) -> dict[str, Any]:
    """The fields a sync would change, with Discord's defaults filled in, so that a command that was
    sent without a field and comes back with its default compares equal."""
    return {
        "description": payload.get("description") or "",
        "options": [option(o) for o in payload.get("options") or []],
        "default_member_permissions": _text(payload.get("default_member_permissions")),  # sent as a number, held as a string
        "nsfw": bool(payload.get("nsfw", False)),
        "contexts": sorted(payload.get("contexts") or []),
        "integration_types": sorted(payload.get("integration_types") or []),
    }


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def option(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": payload["type"],
        "name": payload["name"],
        "description": payload.get("description") or "",
        "required": bool(payload.get("required", False)),
        "choices": [(c["name"], c["value"]) for c in payload.get("choices") or []],
        "options": [option(o) for o in payload.get("options") or []],
    }


def held_by_discord(command: app_commands.AppCommand) -> dict[str, Any]:
    """A fetched command as the payload that would have created it."""
    payload: dict[str, Any] = dict(command.to_dict())
    permissions = command.default_member_permissions
    payload["default_member_permissions"] = str(permissions.value) if permissions is not None else None
    payload["nsfw"] = command.nsfw
    return payload


def changes(local: list[dict[str, Any]], remote: list[dict[str, Any]]) -> list[Change]:
    """What a sync of ``local`` does to ``remote``, one line per command, sorted by name."""
    ours = {(p.get("type", 1), p["name"]): p for p in local}
    theirs = {(p.get("type", 1), p["name"]): p for p in remote}
    result = []
    for key in sorted(ours.keys() | theirs.keys(), key=lambda k: (k[1], k[0])):
        name = shown_name(ours.get(key) or theirs[key])
        if key not in theirs:
            result.append(Change("create", name))
        elif key not in ours:
            result.append(Change("delete", name))
        else:
            mine, held = comparable(ours[key]), comparable(theirs[key])
            differ = tuple(field for field in COMPARED if mine[field] != held[field])
            result.append(Change("change", name, differ) if differ else Change("keep", name))
    return result


async def plan(tree: app_commands.CommandTree, guild: discord.abc.Snowflake | None) -> list[Change]:
    local = [command.to_dict(tree) for command in tree.get_commands(guild=guild)]
    remote = [held_by_discord(command) for command in await tree.fetch_commands(guild=guild)]
    return changes(local, remote)


def describe(planned: list[Change], guild: int | None, dry_run: bool) -> str:
    where = f"server {guild} only" if guild else "every server (global commands)"
    lines = [f"application commands for {where}:"]
    lines += [f"  {c.action:<7} {c.name}" + (f"  ({', '.join(c.fields)})" if c.fields else "") for c in planned]
    if all(c.action == "keep" for c in planned):
        lines.append("nothing to sync: Discord already has these")
    elif dry_run:
        lines.append("nothing sent (--dry-run)")
    return "\n".join(lines)


async def sync(bot: SeraBot, guild_id: int | None, dry_run: bool) -> str:
    """Plan against what Discord holds; sync unless ``dry_run`` or there is nothing to change. The bot
    must be logged in (HTTP only: no gateway connection is needed) with its cogs loaded."""
    guild = discord.Object(id=guild_id) if guild_id else None
    if guild:
        bot.tree.copy_global_to(guild=guild)
    planned = await plan(bot.tree, guild)
    text = describe(planned, guild_id, dry_run)
    if not dry_run and any(c.action != "keep" for c in planned):
        synced = await bot.tree.sync(guild=guild)
        text += f"\nsynced {len(synced)} commands"
    return text


def run(config: Config, guild_id: int | None, dry_run: bool) -> str:
    """``sera sync``: log in over HTTP, load the cogs as ``sera run`` would (without its own sync on start),
    then ``sync``."""
    guild_id = guild_id or config.discord.dev_guild or None
    quiet = replace(config, discord=replace(config.discord, sync_commands=False))
    secret = token(config)
    bot = SeraBot(quiet, Pipeline(quiet), Store(quiet.database_path()))

    async def main() -> str:
        async with bot:
            await bot.login(secret)  # runs setup_hook: the cogs, hence the command tree, are loaded
            return await sync(bot, guild_id, dry_run)

    with said_plainly(config):
        try:
            return asyncio.run(main())
        except discord.Forbidden:
            raise SeraError(f"Discord refused: is the bot in server {guild_id} with the applications.commands scope?") from None
