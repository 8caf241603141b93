"""``/sessions``: past listening sessions, their summaries, per-utterance history and meeting notes, for
those who spoke in a session, who started it, and members with Manage Server; and the summary of a
session from its stored rows, which ``Listening`` posts when a session ends (or is found cut short),
with its meeting notes attached where anyone's words were written down."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
from collections.abc import Iterable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from sera.adapters.discord.people import who
from sera.minutes import markdown
from sera.pipeline import Pipeline
from sera.sessions import INTERRUPTED, SessionStore, StoredSession
from sera.summary import SessionSummary, clock, summarize


log = logging.getLogger(__name__)

SESSIONS_LISTED = 10
BUILTIN_TEXT_REPORTERS = {"text", "json"}  # the embed already says what they would
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # what any server accepts; boosted servers take more


def member_names(guild: discord.Guild, speakers: Iterable[str]) -> dict[str, str]:
    names = {}
    for speaker in speakers:
        member = guild.get_member(int(speaker))
        names[speaker] = member.display_name if member else speaker
    return names


async def summary_message(pipeline: Pipeline, summary: SessionSummary, reason: str | None) -> dict[str, Any]:
    """``send`` keyword arguments for a summary: the embed, other reporters' words, the chart."""
    rendered = await asyncio.to_thread(pipeline.plugins.render_session, summary)
    embed = rendered.get("embed") or {"title": f"Session {summary.session.id}"}
    if reason:
        embed["description"] = f"Ended: {reason}."
    for name, text in rendered.items():  # other reporters (third-party ones too) that answer in words
        if isinstance(text, str) and name not in BUILTIN_TEXT_REPORTERS:
            embed.setdefault("fields", []).append({"name": name, "value": text[:1024], "inline": False})
    files = []
    png = rendered.get("chart")
    if isinstance(png, bytes):
        files.append(discord.File(io.BytesIO(png), filename=f"session-{summary.session.id}.png"))
    if summary.transcribed:  # meeting notes: what was said, by whom, how it sounded
        files.append(discord.File(io.BytesIO(markdown(summary).encode()), filename=f"session-{summary.session.id}-notes.md"))
    return {"embed": discord.Embed.from_dict(embed), **({"files": files} if files else {})}


def stored_summary(sessions: SessionStore, known: StoredSession, guild: discord.Guild | None, cut_short: bool = False) -> SessionSummary:
    """A session's summary from its stored rows. ``cut_short``: a session a crash left open, summarised
    as ``mark_interrupted`` will close it (interrupted, ended at its last utterance)."""
    rows = sessions.utterances(known.info.id)
    if cut_short:
        known = known._replace(status=INTERRUPTED, duration=max((r.end for r in rows), default=0.0))
    names = member_names(guild, {r.speaker for r in rows}) if guild else {}
    return summarize(known.info, known.status, known.duration, rows, names, known.shed)


class SessionHistory(commands.Cog):
    history = app_commands.Group(name="sessions", description="Past listening sessions in this server", guild_only=True)

    def __init__(self, pipeline: Pipeline, sessions: SessionStore) -> None:
        self.pipeline = pipeline
        self.sessions = sessions

    @history.command(name="list", description="The latest listening sessions in this server")
    async def list_sessions(self, interaction: discord.Interaction) -> None:
        found = await asyncio.to_thread(self.sessions.latest, str(interaction.guild_id), SESSIONS_LISTED)
        if not found:
            await interaction.response.send_message("No sessions yet. Start one with `/listen start`.", ephemeral=True)
            return
        lines = [
            f"`#{s.info.id}` <t:{int(s.info.started_at)}:f> in <#{s.info.room}> · {clock(s.duration)} · {s.status}"
            for s in found
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    async def _visible_session(self, interaction: discord.Interaction, session_id: int) -> StoredSession | None:
        """The session, if it belongs to this server and the caller may see its per-utterance history: they
        spoke in it, started it, or have Manage Server. Otherwise the user is told why not, and None."""
        known = await asyncio.to_thread(self.sessions.info, session_id)
        if known is None or known.info.space != str(interaction.guild_id):
            await interaction.response.send_message(f"No session #{session_id} in this server.", ephemeral=True)
            return None
        caller = str(interaction.user.id)
        admin = interaction.permissions.manage_guild
        if not admin and caller != known.info.started_by and caller not in await asyncio.to_thread(self.sessions.speakers, session_id):
            log.info("%s was refused the history of session %d", who(caller), session_id)
            await interaction.response.send_message(
                f"Session #{session_id}'s history is for those who spoke in it, who started it, and members with "
                "Manage Server.", ephemeral=True,
            )  # fmt: skip
            return None
        return known

    @history.command(name="show", description="The summary of a past session")
    async def show(self, interaction: discord.Interaction, session_id: int) -> None:
        known = await self._visible_session(interaction, session_id)
        if known is None:
            return
        await interaction.response.defer(thinking=True, ephemeral=True)
        summary = await asyncio.to_thread(stored_summary, self.sessions, known, interaction.guild)
        await interaction.followup.send(**await summary_message(self.pipeline, summary, None), ephemeral=True)

    @history.command(name="export", description="A past session's utterances as CSV and JSON, and its meeting notes as Markdown")
    async def export(self, interaction: discord.Interaction, session_id: int) -> None:
        known = await self._visible_session(interaction, session_id)
        if known is None:
            return
        csv_text = await asyncio.to_thread(self.sessions.export_csv, session_id)
        json_text = await asyncio.to_thread(self.sessions.export_json, session_id)
        summary = await asyncio.to_thread(stored_summary, self.sessions, known, interaction.guild)
        files = {f"session-{session_id}.csv": csv_text.encode(), f"session-{session_id}.json": json_text.encode(),
                 f"session-{session_id}-notes.md": markdown(summary).encode()}  # fmt: skip
        limit = getattr(interaction.guild, "filesize_limit", DEFAULT_UPLOAD_LIMIT)
        note = "one row per utterance, and the meeting notes"
        if sum(map(len, files.values())) > limit:  # too big to attach as they are: gzip shrinks them ~10x
            files = {f"{name}.gz": await asyncio.to_thread(gzip.compress, data) for name, data in files.items()}
            note += ", gzipped to fit Discord's upload limit"
        if sum(map(len, files.values())) > limit:
            log.warning("session %d export is %d bytes gzipped, over the %d-byte limit", session_id,
                        sum(map(len, files.values())), limit)  # fmt: skip
            await interaction.response.send_message(
                f"Session #{session_id} is too long to export through Discord ({sum(map(len, files.values())) / 1e6:.1f} MB "
                f"even compressed; the limit here is {limit / 1e6:.0f} MB). The operator can export it from the database.",
                ephemeral=True,
            )  # fmt: skip
            return
        attachments = [discord.File(io.BytesIO(data), filename=name) for name, data in files.items()]
        try:
            await interaction.response.send_message(f"Session #{session_id}: {note}.", files=attachments, ephemeral=True)
        except discord.HTTPException as error:
            log.warning("could not send the export of session %d: %s", session_id, error)
            await interaction.response.send_message(
                f"I couldn't attach session #{session_id}'s export ({error.text or error.status}).", ephemeral=True
            )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(SessionHistory(bot.pipeline, bot.sessions))
