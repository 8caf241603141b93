"""The Discord adapter through the offline harness: real audio, real pipeline, real SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import discord
import numpy as np
import pytest

from sera.audio import decode
from sera.adapters.discord.privacy import PRIVACY, ForgetView
from sera.pipeline import Pipeline
from tests.conftest import SAMPLE_NOTE, encode, eventually, sera, tone, needs_chart
from sera.adapters.discord.testing import FakeChannel, FakeGuild, FakeUser, Harness, invoke

LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
NOTE = SAMPLE_NOTE.read_bytes()


@pytest.fixture
def harness(tmp_path: Path, pipeline: Pipeline) -> Harness:
    h = Harness(tmp_path, pipeline=pipeline)
    asyncio.run(h.start())
    yield h
    h.close()


def assert_emotion_embed(embed: discord.Embed) -> None:
    assert isinstance(embed, discord.Embed)
    assert any(label in embed.title for label in (*LABELS, "unsure"))
    for label in LABELS:
        assert label in embed.description  # every class with its bar
    assert "s speech" in embed.footer.text


def test_voice_note_in_dm_gets_a_reply_reaction_and_a_row(harness: Harness) -> None:
    message = harness.message(harness.attachment(NOTE))
    asyncio.run(harness.cog.on_message(message))
    (reply,) = message.replies
    assert_emotion_embed(reply["embed"])
    assert reply["mention_author"] is False
    assert [f.name for f in reply["embed"].fields][:1] == ["Timeline"]  # a 9 s note has several segments
    assert len(message.reactions) == 1
    assert harness.store.analyses_of(message.author.id) == 1


def test_audio_attachment_that_is_not_a_voice_message(harness: Harness, tmp_path: Path, speech_wav: Path) -> None:
    attachment = harness.attachment(speech_wav.read_bytes(), "speech.wav", "audio/x-wav", voice=False)
    message = harness.message(attachment)
    asyncio.run(harness.cog.on_message(message))
    assert_emotion_embed(message.replies[0]["embed"])


def test_other_messages_are_ignored(harness: Harness) -> None:
    image = harness.attachment(b"\x89PNG....", "cat.png", "image/png", voice=False)
    from_bot = harness.message(harness.attachment(NOTE), author=FakeUser(bot=True))
    for message in (harness.message(image), harness.message(), from_bot):
        asyncio.run(harness.cog.on_message(message))
        assert message.replies == [] and message.reactions == []
    assert harness.cdn.downloads == 0


def test_guild_channels_need_enabling_by_an_admin(harness: Harness) -> None:
    guild, channel = FakeGuild(), FakeChannel()
    before = harness.message(harness.attachment(NOTE), guild=guild, channel=channel)
    asyncio.run(harness.cog.on_message(before))
    assert before.replies == []

    refused = harness.interaction(guild, channel, admin=False)
    asyncio.run(invoke(harness.settings.set_channel, refused, True))
    assert "Manage Server" in refused.sent()[0]["content"] and refused.sent()[0]["ephemeral"] is True
    assert harness.store.settings(guild.id).channels == frozenset()

    admin = harness.interaction(guild, channel, admin=True)
    asyncio.run(invoke(harness.settings.set_channel, admin, True))
    assert f"<#{channel.id}>" in admin.sent()[0]["content"]

    after = harness.message(harness.attachment(NOTE), guild=guild, channel=channel)
    asyncio.run(harness.cog.on_message(after))
    assert_emotion_embed(after.replies[0]["embed"])


def test_settings_survive_a_restart(tmp_path: Path, pipeline: Pipeline) -> None:
    guild, channel = FakeGuild(), FakeChannel()
    first = Harness(tmp_path, pipeline=pipeline)
    asyncio.run(first.start())
    admin = first.interaction(guild, channel, admin=True)
    asyncio.run(invoke(first.settings.set_channel, admin, True))
    asyncio.run(invoke(first.settings.set_style, first.interaction(guild, channel, admin=True), reaction=False, ephemeral=True))
    asyncio.run(invoke(first.settings.set_plugin, first.interaction(guild, channel, admin=True), "prosody", False))
    first.close()

    second = Harness(tmp_path, pipeline=pipeline)
    asyncio.run(second.start())
    settings = second.store.settings(guild.id)
    assert settings.channels == {channel.id} and not settings.reaction and settings.ephemeral
    assert settings.disabled_plugins == {"prosody"}
    message = second.message(second.attachment(NOTE), guild=guild, channel=channel)
    asyncio.run(second.cog.on_message(message))
    assert message.reactions == []  # reaction turned off
    assert all(f.name != "prosody" for f in message.replies[0]["embed"].fields)  # plugin turned off here
    second.close()


def test_admin_commands_refuse_non_admins_and_dms(harness: Harness) -> None:
    guild = FakeGuild()
    cog = harness.settings
    from sera.adapters.discord.settings import server_admin

    assert all(server_admin in command.checks for command in cog.admin.commands)  # a new settings command too
    for command, args in [(cog.set_channel, {"enabled": True}), (cog.set_style, {"chart": True}),
                          (cog.set_plugin, {"name": "prosody", "enabled": False}), (cog.show_settings, {})]:  # fmt: skip
        interaction = harness.interaction(guild)
        asyncio.run(invoke(command, interaction, **args))
        assert "Manage Server" in interaction.sent()[0]["content"]
        in_dm = harness.interaction(None)
        asyncio.run(invoke(command, in_dm, **args))
        assert "only be changed in a server" in in_dm.sent()[0]["content"]
    assert harness.store.settings(guild.id).chart is False and not harness.store.settings(guild.id).channels
    unknown = harness.interaction(guild, admin=True)
    asyncio.run(invoke(cog.set_plugin, unknown, "nope", False))
    assert "No analyzer called `nope`" in unknown.sent()[0]["content"]


def test_slash_command_analyses_a_file(harness: Harness) -> None:
    interaction = harness.interaction(FakeGuild())
    asyncio.run(invoke(harness.cog.analyze_file, interaction, harness.attachment(NOTE, voice=False)))
    kinds = [kind for kind, _ in interaction.log]
    assert kinds == ["defer", "followup"]
    assert interaction.log[0][1]["thinking"] is True
    assert_emotion_embed(interaction.sent()[0]["embed"])


def test_context_menu_works_on_your_own_message_with_audio(harness: Harness) -> None:
    me = FakeUser()
    target = harness.message(harness.attachment(b"\x89PNG", "cat.png", "image/png", voice=False), harness.attachment(NOTE), author=me)
    interaction = harness.interaction(FakeGuild(), user=me)
    asyncio.run(harness.cog.menu.callback(interaction, target))
    assert_emotion_embed(interaction.sent()[0]["embed"])
    no_audio = harness.interaction(FakeGuild())
    asyncio.run(harness.cog.menu.callback(no_audio, harness.message()))
    assert no_audio.sent() == [{"content": "I can only listen to audio files and voice notes.", "ephemeral": True}]
    assert harness.cog.menu.name == "Analyse emotion"
    assert harness.bot.tree.get_command("Analyse emotion", type=discord.AppCommandType.message) is harness.cog.menu


def test_commands_are_registered_on_the_tree(harness: Harness) -> None:
    names = {c.qualified_name for c in harness.bot.tree.walk_commands()}
    assert {"emotion analyse", "emotion baseline add", "emotion baseline learn", "emotion baseline show", "emotion baseline clear",
            "sera channel", "sera style", "sera plugin", "sera settings", "privacy", "forget"} <= names
    admin = harness.bot.tree.get_command("sera")
    assert admin.default_permissions.manage_guild and admin.guild_only


@pytest.fixture(scope="module")
def bad_notes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("notes")
    silent = encode(np.zeros(16_000 * 3, dtype=np.float32), 16_000, folder / "silent.ogg", "-c:a", "libopus")
    beep = encode(tone(2.0), 16_000, folder / "beep.ogg", "-c:a", "libopus")
    return {"silent": silent.read_bytes(), "beep": beep.read_bytes(), "corrupt": NOTE[:150] + bytes(500)}


@pytest.mark.parametrize(
    ("name", "expected"),
    [("corrupt", "I couldn't use this audio: could not read this audio"), ("silent", "No speech detected"), ("beep", "No speech detected")],
)
def test_bad_notes_get_friendly_answers(harness: Harness, bad_notes: dict[str, bytes], name: str, expected: str) -> None:
    message = harness.message(harness.attachment(bad_notes[name]))
    asyncio.run(harness.cog.on_message(message))
    (reply,) = message.replies
    shown = reply.get("content") or reply["embed"].title
    assert expected in shown
    assert message.reactions == []  # no emotion, no emoji


def test_limits_are_checked_before_download(harness: Harness) -> None:
    oversized = harness.message(harness.attachment(NOTE, size=200 * 1024 * 1024))
    too_long = harness.message(harness.attachment(NOTE, duration=3600.0))
    for message, expected in [(oversized, "I can listen to files up to"), (too_long, "I can listen to up to 600 s")]:
        asyncio.run(harness.cog.on_message(message))
        assert expected in message.replies[0]["content"]
    assert harness.cdn.downloads == 0

    interaction = harness.interaction(FakeGuild())
    asyncio.run(invoke(harness.cog.analyze_file, interaction, harness.attachment(NOTE, size=10**9)))
    # a failed slash command is answered ephemerally, and its public "thinking" notice is removed
    assert [k for k, _ in interaction.log] == ["defer", "delete_original", "followup"]
    assert interaction.sent()[0]["ephemeral"] is True


def test_per_user_rate_limit(tmp_path: Path, pipeline: Pipeline) -> None:
    harness = Harness(tmp_path, pipeline=pipeline, user_rate_per_minute=2)
    asyncio.run(harness.start())
    user = FakeUser()
    answers = []
    for _ in range(3):
        message = harness.message(harness.attachment(NOTE), author=user)
        asyncio.run(harness.cog.on_message(message))
        answers.append(message.replies[0])
    assert "embed" in answers[0] and "embed" in answers[1]
    assert "faster than I can listen" in answers[2]["content"]
    other = harness.message(harness.attachment(NOTE))
    asyncio.run(harness.cog.on_message(other))
    assert "embed" in other.replies[0]  # the limit is per user
    harness.close()


async def deliver_at_once(harness: Harness, messages: list) -> None:
    """Every message reaches the bot at the same moment, as a burst on the gateway would."""
    await asyncio.gather(*(harness.cog.on_message(m) for m in messages))


async def _with_lag_probe(work) -> tuple[object, float]:
    """Run ``work`` while a heartbeat-like task measures how late the event loop wakes it."""
    worst = 0.0
    stop = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal worst
        interval = 0.02
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(interval)
            worst = max(worst, time.perf_counter() - start - interval)

    probe = asyncio.create_task(heartbeat())
    try:
        return await work, worst
    finally:
        stop.set()
        await probe


def test_fifty_notes_at_once_are_all_answered_off_the_event_loop(
    tmp_path: Path, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every decode runs on a worker thread, never on the loop's (asyncio.run runs the loop on this
    thread). The loop's lag is printed, not asserted: a timing bound fails on a busy machine;
    ``bench/throughput_bench.py`` measures it."""
    import sera.pipeline as core

    decoded_on: list[int] = []
    real_decode = core.decode
    monkeypatch.setattr(core, "decode", lambda *a, **k: decoded_on.append(threading.get_ident()) or real_decode(*a, **k))
    harness = Harness(tmp_path, pipeline=pipeline, queue_size=64)
    asyncio.run(harness.start())
    messages = [harness.message(harness.attachment(NOTE)) for _ in range(50)]
    started = time.perf_counter()
    _, worst_lag = asyncio.run(_with_lag_probe(deliver_at_once(harness, messages)))
    elapsed = time.perf_counter() - started
    assert all(len(m.replies) == 1 and "embed" in m.replies[0] for m in messages)
    print(f"\n50 voice notes: {elapsed:.1f} s, worst event-loop lag {worst_lag * 1000:.1f} ms")
    assert len(decoded_on) == 50 and threading.get_ident() not in decoded_on
    assert harness.store.analyses_of(messages[0].author.id) == 1
    harness.close()


def test_full_queue_asks_to_retry(tmp_path: Path, pipeline: Pipeline) -> None:
    harness = Harness(tmp_path, pipeline=pipeline, queue_size=2)
    asyncio.run(harness.start())
    messages = [harness.message(harness.attachment(NOTE)) for _ in range(5)]
    asyncio.run(deliver_at_once(harness, messages))
    answers = [m.replies[0] for m in messages]
    assert sum("embed" in a for a in answers) == 2
    assert sum("try again in a minute" in (a.get("content") or "") for a in answers) == 3
    assert harness.cog.slots.used == 0
    harness.close()


def test_forget_says_nothing_of_a_plugin_that_is_not_installed(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart reporter without matplotlib keeps nothing: it is neither a failure nor retried later."""
    chart = next(info for info in harness.pipeline.plugins.infos if info.name == "chart")
    monkeypatch.setattr(chart, "missing", "needs matplotlib (pip install 'sera-voice[chart]')")
    monkeypatch.setattr(chart, "plugin", None)
    assert harness.pipeline.plugins.forget_user(str(FakeUser().id)) == ({}, [])


def test_privacy_and_forget(harness: Harness) -> None:
    user = FakeUser()
    for _ in range(2):
        asyncio.run(harness.cog.on_message(harness.message(harness.attachment(NOTE), author=user)))
    assert harness.store.analyses_of(user.id) == 2

    privacy = harness.interaction(user=user)
    asyncio.run(invoke(harness.privacy.privacy, privacy))
    assert privacy.sent() == [{"content": PRIVACY, "ephemeral": True}]
    assert "No audio is stored" in PRIVACY

    ask = harness.interaction(user=user)
    asyncio.run(invoke(harness.privacy.forget, ask))
    prompt = ask.sent()[0]
    assert "all 2 analyses" in prompt["content"] and prompt["ephemeral"] is True
    view: ForgetView = prompt["view"]

    async def press(button_label: str, presser: FakeUser):
        button = next(b for b in view.children if b.label == button_label)
        click = harness.interaction(user=presser)
        if await view.interaction_check(click):
            await button.callback(click)
        return click

    stranger = asyncio.run(press("Delete my data", FakeUser()))
    assert stranger.sent() == [] and harness.store.analyses_of(user.id) == 2
    done = asyncio.run(press("Delete my data", user))
    assert [kind for kind, _ in done.log] == ["edit_message", "edit_original"]  # acknowledged at once, then the result
    assert done.sent()[0] == {"content": "Deleting your data…", "view": None}
    assert done.sent()[-1]["content"] == "Done: 2 analyses and 0 voice-channel utterances deleted."
    assert harness.store.analyses_of(user.id) == 0
    with harness.store.db.read() as db:  # nor where reading their direct messages got to (the channel names them)
        assert db.execute("SELECT COUNT(*) FROM scan_marks WHERE guild_id IS NULL").fetchone()[0] == 0


def test_shutdown_apologises_for_unfinished_work(tmp_path: Path, pipeline: Pipeline) -> None:
    speech = np.tile(decode(SAMPLE_NOTE), 12)  # about two minutes of speech: seconds of work
    long_note = encode(speech, 16_000, tmp_path / "long.ogg", "-c:a", "libopus").read_bytes()
    harness = Harness(tmp_path, pipeline=pipeline)
    asyncio.run(harness.start())
    message = harness.message(harness.attachment(long_note, duration=120.0))

    async def scenario() -> None:
        handler = asyncio.create_task(harness.cog.on_message(message))
        await eventually(lambda: harness.cog.slots.used == 1, 10)  # the note is being analysed
        harness.bot.closing = True
        await harness.cog.drain(timeout=0.01)
        await handler

    asyncio.run(scenario())
    assert "I'm restarting" in message.replies[0]["content"]
    assert harness.cog.slots.used == 0
    harness.close()


@pytest.mark.slow
def test_run_without_a_network_is_one_clear_error_and_never_shows_the_token(tmp_path: Path) -> None:
    secret = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GAbCdE.super-secret-token-value"
    env = dict(os.environ, DISCORD_TOKEN=secret)
    config = tmp_path / "sera.yaml"
    config.write_text("discord:\n  database: bot.db\n")
    done = subprocess.run([sys.executable, "-m", "sera", "--config", str(config), "run"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "sera: cannot reach Discord" in done.stderr
    assert "Traceback" not in done.stderr
    assert secret not in done.stderr + done.stdout
    assert "super-secret" not in done.stderr + done.stdout
    logged = subprocess.run([sys.executable, "-m", "sera", "--log-format", "json", "-v", "--config", str(config), "run"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = logged.stderr.strip().splitlines()
    entries = [json.loads(line) for line in lines[:-1]]  # the operator's log; the last line is the person's message
    assert entries and lines[-1].startswith("sera: cannot reach Discord") and "super-secret" not in logged.stderr + logged.stdout
    assert all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    missing = subprocess.run([sys.executable, "-m", "sera", "run"], env={k: v for k, v in env.items() if k != "DISCORD_TOKEN"},
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "no Discord token: set the environment variable DISCORD_TOKEN" in missing.stderr


def test_store_is_wal_and_keeps_rows_across_connections(tmp_path: Path, harness: Harness) -> None:
    import sqlite3

    message = harness.message(harness.attachment(NOTE))
    asyncio.run(harness.cog.on_message(message))
    other = sqlite3.connect(harness.db_path)  # another process's view, before any clean close
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = other.execute("SELECT user_id, label, result FROM analyses").fetchone()
    assert row[0] == message.author.id and row[1] in (*LABELS, "unsure")
    assert '"probabilities"' in row[2] and "samples" not in row[2]  # results, never audio
    other.close()


def test_doctor_checklist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text("discord:\n  database: data/bot.db\nlive:\n  enabled: true\n")
    monkeypatch.setenv("DISCORD_TOKEN", "x.y.z")
    ok = sera("--config", str(config), "doctor")
    assert ok.returncode == 0, ok.stdout
    for name in ("config", "ffmpeg", "Opus decoder", "emotion_whisper model", "speech detector", "Discord token", "database",
                 "voice channels"):  # fmt: skip
        assert f"✔ {name}:" in ok.stdout
    assert ok.stdout.strip().endswith("all good") and "x.y.z" not in ok.stdout
    monkeypatch.delenv("DISCORD_TOKEN")
    config.write_text("discord:\n  database: /proc/nope/bot.db\n")
    bad = sera("--config", str(config), "doctor")
    assert bad.returncode == 2
    assert "✘ Discord token: neither $DISCORD_TOKEN nor a systemd credential DISCORD_TOKEN is set" in bad.stdout
    assert "fix: export DISCORD_TOKEN=" in bad.stdout
    assert "✘ database:" in bad.stdout and "2 problems to fix" in bad.stdout
    credentials = tmp_path / "credentials"  # what the README's unit gives: LoadCredential=DISCORD_TOKEN:FILE
    credentials.mkdir()
    (credentials / "DISCORD_TOKEN").write_text("x.y.z\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    found = sera("--config", str(config), "doctor")
    assert "✔ Discord token: found in the systemd credential DISCORD_TOKEN" in found.stdout and "x.y.z" not in found.stdout


@needs_chart
def test_chart_is_attached_when_the_guild_asks(harness: Harness) -> None:
    guild, channel = FakeGuild(), FakeChannel()
    asyncio.run(invoke(harness.settings.set_channel, harness.interaction(guild, channel, admin=True), True))
    asyncio.run(invoke(harness.settings.set_style, harness.interaction(guild, channel, admin=True), chart=True))
    message = harness.message(harness.attachment(NOTE), guild=guild, channel=channel)
    asyncio.run(harness.cog.on_message(message))
    attached: discord.File = message.replies[0]["file"]
    assert attached.filename == "emotion.png"
    assert attached.fp.read(4) == b"\x89PNG"
    assert_emotion_embed(message.replies[0]["embed"])


def test_someone_elses_note_only_where_enabled_privately_and_never_against_their_wish(harness: Harness) -> None:
    guild, enabled, other_channel = FakeGuild(), FakeChannel(), FakeChannel()
    asyncio.run(invoke(harness.settings.set_channel, harness.interaction(guild, enabled, admin=True), True))
    alice, bob = FakeUser(), FakeUser()

    def menu(channel: FakeChannel, caller: FakeUser):
        note = harness.message(harness.attachment(NOTE), guild=guild, channel=channel, author=alice)
        interaction = harness.interaction(guild, channel, user=caller)
        asyncio.run(harness.cog.menu.callback(interaction, note))
        return interaction

    refused = menu(other_channel, bob)
    assert "only in channels the server's admins enabled" in refused.sent()[0]["content"]
    assert refused.sent()[0]["ephemeral"] is True and harness.cdn.downloads == 0

    allowed = menu(enabled, bob)
    assert allowed.log[0] == ("defer", {"ephemeral": True, "thinking": True})  # only Bob sees it
    assert_emotion_embed(allowed.sent()[0]["embed"])
    assert allowed.sent()[0]["ephemeral"] is True
    assert harness.store.analyses_of(alice.id) == 1  # stored under the voice's author...
    with harness.store.db.read() as db:
        assert db.execute("SELECT user_id, requested_by FROM analyses").fetchall() == [(alice.id, bob.id)]  # ...naming who asked

    optout = harness.interaction(user=alice)
    asyncio.run(invoke(harness.privacy.privacy, optout, analysis_by_others=False))
    assert "nobody else can analyse your voice notes" in optout.sent()[0]["content"]
    declined = menu(enabled, bob)
    assert "asked not to be analysed by others" in declined.sent()[0]["content"]
    own = menu(other_channel, alice)  # her own notes: as before, anywhere
    assert_emotion_embed(own.sent()[0]["embed"])

    ask = harness.interaction(user=alice)
    asyncio.run(invoke(harness.privacy.forget, ask))
    done = harness.interaction(user=alice)
    asyncio.run(ask.sent()[0]["view"].confirm.callback(done))
    assert done.sent()[-1]["content"].startswith("Done: 2 analyses")  # the one Bob asked for too
    assert harness.store.analyses_of(alice.id) == 0 and harness.store.analyses_of(bob.id) == 0


@needs_chart
def test_a_dollar_file_name_still_gets_its_answer_and_chart(harness: Harness) -> None:
    import matplotlib.pyplot as plt

    guild, channel = FakeGuild(), FakeChannel()
    asyncio.run(invoke(harness.settings.set_channel, harness.interaction(guild, channel, admin=True), True))
    asyncio.run(invoke(harness.settings.set_style, harness.interaction(guild, channel, admin=True), chart=True))
    notes = [harness.attachment(NOTE, filename=name) for name in ("price_$5_and_$6.ogg", "$\\frac{$.ogg", "plain.ogg")]
    message = harness.message(*notes, guild=guild, channel=channel)
    asyncio.run(harness.cog.on_message(message))
    assert len(message.replies) == 3  # every note of the message answered
    for reply in message.replies:
        assert_emotion_embed(reply["embed"])
        assert reply["file"].fp.read(4) == b"\x89PNG"
    assert plt.get_fignums() == []  # no figure left in pyplot's registry


@needs_chart
def test_a_failing_reporter_never_costs_the_answer(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    embed = harness.pipeline.plugins.reporter("embed")
    chart = harness.pipeline.plugins.reporter("chart")
    monkeypatch.setattr(embed, "render", lambda report: 1 / 0)
    monkeypatch.setattr(chart, "render", lambda report: 1 / 0)
    message = harness.message(harness.attachment(NOTE), harness.attachment(NOTE))
    asyncio.run(harness.cog.on_message(message))
    assert len(message.replies) == 2
    assert all(any(label in r["content"] for label in (*LABELS, "unsure")) for r in message.replies)
    interaction = harness.interaction(FakeGuild())
    asyncio.run(invoke(harness.cog.analyze_file, interaction, harness.attachment(NOTE, voice=False)))
    assert [k for k, _ in interaction.log] == ["defer", "followup"]  # never stuck on "thinking"


def test_one_user_cannot_fill_the_queue(tmp_path: Path, pipeline: Pipeline) -> None:
    harness = Harness(tmp_path, pipeline=pipeline, queue_size=16, user_in_flight=2, user_rate_per_minute=100)
    asyncio.run(harness.start())
    flooder = FakeUser()
    flood = [harness.message(harness.attachment(NOTE), author=flooder) for _ in range(6)]
    others = [harness.message(harness.attachment(NOTE)) for _ in range(3)]
    asyncio.run(deliver_at_once(harness, flood + others))
    answered = [m for m in flood if "embed" in m.replies[0]]
    assert len(answered) == 2
    assert all("I'm still listening to your last 2 notes" in m.replies[0]["content"] for m in flood if m not in answered)
    assert all("embed" in m.replies[0] for m in others)
    assert harness.cog.in_flight._count == {}
    harness.close()


def test_the_rate_limiter_forgets_quiet_users() -> None:
    from sera.adapters.discord.limits import RateLimiter

    now = [0.0]
    limiter = RateLimiter(6, clock=lambda: now[0])
    for user in range(5_000):
        now[0] = user * 0.001
        limiter.retry_after(user)
    now[0] += 61.0
    for user in range(5_000, 7_000):
        limiter.retry_after(user)
    assert len(limiter) <= 2_000  # the 5,000 users of over a minute ago are gone


def test_forget_reports_what_went_and_a_failure_deletes_nothing(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from sera.database import StorageError

    user = FakeUser()
    asyncio.run(harness.cog.on_message(harness.message(harness.attachment(NOTE), author=user)))

    def locked(*args):
        raise StorageError("the database is busy (another process is writing to it); nothing was changed, try again")

    monkeypatch.setattr(harness.bot.sessions, "delete_user_data", locked)
    ask = harness.interaction(user=user)
    asyncio.run(invoke(harness.privacy.forget, ask))
    done = harness.interaction(user=user)
    asyncio.run(ask.sent()[0]["view"].confirm.callback(done))
    assert done.sent()[-1]["content"].startswith("Nothing was deleted: the database is busy")
    assert harness.store.analyses_of(user.id) == 1  # one transaction: the analyses were not deleted either


def test_a_command_that_fails_is_answered_not_left_hanging(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    from discord import app_commands

    from sera.database import StorageError

    command = harness.bot.tree.get_command("sera").get_command("style")
    busy = app_commands.CommandInvokeError(command, StorageError("the database is busy (another process is writing to it)"))
    first = harness.interaction(FakeGuild(), admin=True)
    first.command = command
    asyncio.run(harness.bot.tree.on_error(first, busy))
    assert first.sent() == [{"content": "Nothing was changed: the database is busy (another process is writing to it).", "ephemeral": True}]
    bug = app_commands.CommandInvokeError(command, KeyError("oops"))
    deferred = harness.interaction(FakeGuild(), admin=True)
    deferred.command = command
    asyncio.run(deferred.response.defer(thinking=True))
    asyncio.run(harness.bot.tree.on_error(deferred, bug))
    assert "the operator has been told" in deferred.sent()[-1]["content"] and "oops" not in deferred.sent()[-1]["content"]
    assert any("command sera style failed" in r.message and r.exc_info for r in caplog.records)


@pytest.mark.parametrize(("options", "synced_to"), [({}, "global"), ({"dev_guild": 4242}, 4242), ({"sync_commands": False}, None)])
def test_commands_sync_globally_to_one_server_or_not_at_all(tmp_path: Path, pipeline: Pipeline, options: dict, synced_to) -> None:
    harness = Harness(tmp_path, pipeline=pipeline, **options)
    calls = []

    async def sync(*, guild=None):  # Discord's side of the sync; the tree is the real one
        calls.append(guild.id if guild else "global")
        return harness.bot.tree.get_commands(guild=guild)

    harness.bot.tree.sync = sync
    asyncio.run(harness.bot.load_cogs())
    asyncio.run(harness.bot.sync_commands())
    assert calls == ([synced_to] if synced_to else [])
    if synced_to == 4242:  # the development server gets every command, copied from the global ones
        assert {"emotion", "sera", "privacy", "forget"} <= {c.name for c in harness.bot.tree.get_commands(guild=discord.Object(4242))}
    harness.close()


def test_sera_sync_shows_what_would_change_and_syncs_only_when_asked(tmp_path: Path, pipeline: Pipeline) -> None:
    """Discord's side is faked at the command tree's two HTTP calls (fetch and bulk upsert); the commands
    compared are the bot's real ones. Discord holds /emotion as it is, /sera with an old description, an
    old command of its own, and lacks the rest."""
    from discord.app_commands import AppCommand

    from sera.adapters.discord.sync import sync

    harness = Harness(tmp_path, pipeline=pipeline)
    asyncio.run(harness.bot.load_cogs())
    tree = harness.bot.tree
    local = {c["name"]: c for c in (command.to_dict(tree) for command in tree.get_commands())}
    held = [local["emotion"], local["sera"] | {"description": "an older description"},
            {"type": 1, "name": "old", "description": "a command this version dropped", "options": []}]  # fmt: skip
    sent: list = []

    async def fetch_commands(*, guild=None):
        return [AppCommand(data={"id": str(1000 + i), "application_id": "1"} | c, state=harness.bot._connection) for i, c in enumerate(held)]

    async def upsert(*, guild=None):
        sent.append(guild.id if guild else "global")
        return []

    tree.fetch_commands, tree.sync = fetch_commands, upsert
    dry = asyncio.run(sync(harness.bot, None, dry_run=True)).splitlines()
    assert dry[0] == "application commands for every server (global commands):" and dry[-1] == "nothing sent (--dry-run)"
    lines = {line.split()[1]: line.split()[0] for line in dry[1:-1]}
    assert lines["/emotion"] == "keep" and lines["/sera"] == "change" and lines["/old"] == "delete"
    assert lines["/privacy"] == lines["/forget"] == lines["Analyse"] == "create"  # "Analyse emotion (message menu)"
    assert "  change  /sera  (description)" in dry and sent == []
    done = asyncio.run(sync(harness.bot, 4242, dry_run=False))
    assert done.startswith("application commands for server 4242 only:") and sent == [4242]
    held = [{"description": ""} | c for c in (command.to_dict(tree) for command in tree.get_commands())]  # Discord gives menus ""
    assert "nothing to sync" in asyncio.run(sync(harness.bot, None, dry_run=False)) and sent == [4242]  # in step: nothing sent
    harness.close()


def test_sera_sync_without_a_network_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text("discord:\n  database: bot.db\n")
    monkeypatch.setenv("DISCORD_TOKEN", "MTIz.GAbCdE.secret-value")
    done = sera("--config", str(config), "sync", "--dry-run")
    assert done.returncode == 2 and done.stderr.startswith("sera: cannot reach Discord")
    assert "secret-value" not in done.stdout + done.stderr


def test_listening_without_the_voice_extra_says_how_to_get_it(tmp_path: Path) -> None:
    """live.enabled with davey missing (a plain install): one line naming the extra, before any login."""
    blocker = tmp_path / "blocker" / "davey"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'davey'\", name='davey')\n")
    config = tmp_path / "sera.yaml"
    config.write_text("live:\n  enabled: true\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent), "DISCORD_TOKEN": "x.y.z"}
    done = subprocess.run([sys.executable, "-m", "sera", "--config", str(config), "run"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "live.enabled is true, but davey is not installed: pip install 'sera-voice[voice]'" in done.stderr
    doctor = subprocess.run([sys.executable, "-m", "sera", "--config", str(config), "doctor"], env=env, capture_output=True, text=True, timeout=120)
    assert "✘ voice channels: missing davey" in doctor.stdout and "sera-voice[voice]" in doctor.stdout


def test_the_running_bot_reports_its_health_to_sera_status(harness: Harness) -> None:
    """The Health cog's status file counts what the bot did; `sera status` reads it, and calls a file
    older than three beats a bot that is not responding (exit 2)."""
    from sera.adapters.discord.health import STALE_SECONDS, write_status

    asyncio.run(harness.cog.on_message(harness.message(harness.attachment(NOTE))))
    asyncio.run(harness.cog.on_message(harness.message(harness.attachment(b"not audio at all"))))
    status = harness.bot.get_cog("Health").status()
    assert status["notes"] == {"answered": 1, "not answered": 1} and status["queue"] == {"busy": 0, "size": 16}
    path = harness.config.status_path()
    assert path.parent == harness.db_path.parent  # beside the configured database
    config = harness.db_path.parent / "sera.yaml"
    config.write_text(f"discord:\n  database: {harness.db_path}\n")
    command = ("--config", str(config), "status")
    write_status(path, status)
    fresh = sera(*command)
    assert fresh.returncode == 0 and fresh.stdout.startswith("running: pid")
    assert "voice notes: 1 answered, 1 not; queue 0/16" in fresh.stdout
    assert "not answered, by why: bad_audio 1\n" in fresh.stdout and "event-loop lag: " in fresh.stdout
    write_status(path, status | {"updated_at": status["updated_at"] - STALE_SECONDS - 1})
    stale = sera(*command)
    assert stale.returncode == 2 and stale.stdout.startswith("NOT RESPONDING")
    path.unlink()
    missing = sera(*command)
    assert missing.returncode == 2 and "is `sera run` running with this config?" in missing.stderr


def test_the_status_file_is_written_safely_and_once_per_process(tmp_path: Path) -> None:
    """A link planted where the file or its temporary goes is never written through; processes running
    different shards write files of their own, and ``sera status`` reads each."""
    from dataclasses import replace

    from sera.adapters.discord.health import read_status, write_status
    from sera.config import Config, DiscordOptions

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    config = Config(discord=DiscordOptions(database=str(tmp_path / "bot" / "sera.db")))
    path = config.status_path()
    path.parent.mkdir()
    path.symlink_to(victim)
    (path.parent / "status.tmp").symlink_to(victim)  # the temporary name an older sera wrote through
    write_status(path, {"updated_at": 1.0})
    assert victim.read_text() == "keep me" and not path.is_symlink()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.unlink()
    path.symlink_to(victim)
    with pytest.raises(OSError):
        read_status(path)  # nor read through one
    path.unlink()
    sharded = [replace(config, discord=replace(config.discord, shard_count=4, shard_ids=ids)) for ids in ([0, 1], [2, 3])]
    assert [c.status_path().name for c in sharded] == ["status-shards-0-1.json", "status-shards-2-3.json"]
    now = time.time()
    for i, c in enumerate(sharded):
        write_status(c.status_path(), {"pid": 100 + i, "started_at": now, "updated_at": now, "guilds": 3, "latency_ms": 40,
                                       "sessions": 0})
    yaml = tmp_path / "sera.yaml"
    yaml.write_text(f"discord:\n  database: {tmp_path / 'bot' / 'sera.db'}\n")
    done = sera("--config", str(yaml), "status")
    assert done.returncode == 0 and "status-shards-0-1.json:\nrunning: pid 100" in done.stdout and "status-shards-2-3.json:\nrunning: pid 101" in done.stdout
    planted = path.parent / "status-shards-9.json"  # a file any user could have put there, saying "running"
    planted.write_text(json.dumps({"pid": 1, "started_at": now, "updated_at": now, "guilds": 3, "latency_ms": 1, "sessions": 0}))
    planted.chmod(0o666)
    done = sera("--config", str(yaml), "status")
    assert done.returncode != 0 and "not a status file of this user's bot: every user can write to it" in done.stderr


def test_each_voice_note_is_one_json_log_line_with_its_event(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """``sera --log-format json run``: a line per note, with the event (and the server, where there is one)."""
    import logging

    from sera.adapters.cli import JsonFormatter

    caplog.set_level(logging.INFO, logger="sera.adapters.discord.notes")
    asyncio.run(harness.cog.on_message(harness.message(harness.attachment(NOTE))))
    asyncio.run(harness.cog.on_message(harness.message(harness.attachment(b"not audio at all"))))
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if getattr(r, "event", None)]
    assert [line["event"] for line in lines] == ["note_answered", "note_bad_audio"]
    assert all("guild" not in line for line in lines)  # direct messages: no server
    record = logging.LogRecord("sera", logging.INFO, __file__, 1, "note", None, None)
    record.guild, record.event = 4242, "note_answered"
    assert json.loads(JsonFormatter().format(record)) | {"time": None} == {
        "time": None, "level": "INFO", "logger": "sera", "message": "note", "guild": 4242, "event": "note_answered"}


def test_prometheus_metrics_are_served_on_loopback_when_asked(tmp_path: Path, pipeline: Pipeline) -> None:
    """A real HTTP request to the bot's metrics port: notes answered and failed by kind, the queue, live
    sessions and the event loop's lag, in Prometheus's text format; bound to 127.0.0.1 only, off by default."""
    import socket

    import aiohttp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    harness = Harness(tmp_path, pipeline=pipeline, metrics_port=port)

    async def scenario() -> tuple[int, str, str, list]:
        await harness.start()
        await harness.cog.on_message(harness.message(harness.attachment(NOTE)))
        await harness.cog.on_message(harness.message(harness.attachment(b"not audio at all")))
        await harness.cog.on_message(harness.message(harness.attachment(NOTE, size=10**9)))
        await eventually(lambda: harness.bot.get_cog("Health").lag.samples > 0, 5)  # the probe has sampled the loop
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
            answer = response.status, response.headers["Content-Type"], await response.text()
        bound = harness.bot.get_cog("Health")._server.addresses
        await harness.bot.remove_cog("Health")
        return (*answer, bound)

    status, content_type, text, bound = asyncio.run(scenario())
    assert status == 200 and content_type.startswith("text/plain")
    assert bound == [("127.0.0.1", port)]
    assert "# TYPE sera_notes_failed_total counter" in text
    samples = {name: float(value) for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))}
    assert samples["sera_up"] == 1 and samples["sera_notes_answered_total"] == 1
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}  # what a Prometheus server parses
    assert families["process_resident_memory_bytes"].samples[0].value > 50e6 and families["process_open_fds"].samples[0].value > 3
    assert families["process_cpu_seconds"].samples[0].value > 0
    latency = {s.name: s.value for s in families["sera_note_latency_seconds"].samples if not s.labels.get("le")}
    assert latency["sera_note_latency_seconds_count"] == 3 and latency["sera_note_latency_seconds_sum"] > 0
    analysis = {s.labels.get("le"): s.value for s in families["sera_analysis_seconds"].samples if s.name.endswith("_bucket")}
    assert analysis["+Inf"] == 2  # the note too large was never analysed
    assert samples['sera_notes_failed_total{kind="bad_audio"}'] == 1
    assert samples['sera_notes_failed_total{kind="too_large"}'] == 1
    assert samples['sera_notes_failed_total{kind="internal"}'] == 0
    assert samples["sera_queue_busy"] == 0 and samples["sera_queue_size"] == 16 and samples["sera_live_sessions"] == 0
    assert 0 <= samples["sera_event_loop_lag_seconds"] <= samples["sera_event_loop_lag_max_seconds"]
    with socket.socket() as after:  # the cog unloaded: the port is free again
        after.bind(("127.0.0.1", port))
    harness.close()
    default = Harness(tmp_path / "default", pipeline=pipeline)
    asyncio.run(default.start())
    assert default.config.discord.metrics_port == 0 and default.bot.get_cog("Health")._server is None
    default.close()


def test_a_refused_privacy_choice_says_nothing_changed(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from sera.database import StorageError

    def busy(*args):
        raise StorageError("the database is busy (another process is writing to it); nothing was changed, try again")

    monkeypatch.setattr(harness.store, "set_analysis_by_others", busy)
    asked = harness.interaction()
    asyncio.run(invoke(harness.privacy.privacy, asked, analysis_by_others=False))
    assert asked.sent() == [{"content": "Nothing was changed: the database is busy (another process is writing to it); "
                                        "nothing was changed, try again.", "ephemeral": True}]  # fmt: skip


def test_a_personal_baseline_through_discord(harness: Harness, tmp_path: Path) -> None:
    """``/emotion baseline add`` enrols recordings (stored as numbers, never audio); once it rests on the
    model's minimum the replies say they were judged against it; ``learn`` lets the user's own notes
    keep it current, someone else's request never does; ``/forget`` deletes it."""
    from sera.adapters.discord.testing import invoke
    from tests.conftest import say

    user, friend = FakeUser(), FakeUser()
    needed = harness.pipeline.baseline_info.min_clips
    lines = ["I went to the market this morning.", "The weather is quite mild today.", "We will meet again next week."]
    pause = np.zeros(12_000, np.float32)  # 0.75 s between sentences: each one is a clip
    sentences = [decode(say(line, tmp_path / f"{i}.wav")) for i, line in enumerate(lines)]
    reading = np.concatenate([part for i in range(needed) for part in (sentences[i % 3], pause)])
    recording = encode(reading, 16_000, tmp_path / "reading.ogg", "-c:a", "libopus").read_bytes()  # one voice note, a minute or so
    shown = harness.interaction(user=user)
    asyncio.run(invoke(harness.cog.baseline_show, shown))
    assert "You have no baseline yet" in shown.sent()[0]["content"]
    enrol = harness.interaction(user=user)
    asyncio.run(invoke(harness.cog.baseline_add, enrol, harness.attachment(recording, duration=reading.size / 16_000)))
    assert [kind for kind, _ in enrol.log] == ["defer", "followup"] and enrol.log[0][1]["ephemeral"]
    assert f"Your baseline rests on {needed} clip" in enrol.sent()[-1]["content"] and "I use it from now on" in enrol.sent()[-1]["content"]
    assert harness.store.analyses_of(user.id) == 0  # an enrolment is not an analysis: nothing else is stored
    space = harness.pipeline.baseline_info.space
    assert harness.bot.baselines.get(str(user.id), space).count == needed
    again = harness.interaction(user=user)
    asyncio.run(invoke(harness.cog.baseline_add, again, harness.attachment(recording, duration=reading.size / 16_000)))
    assert "you added this recording to your baseline before; nothing was added" in again.sent()[-1]["content"].lower()
    assert harness.bot.baselines.get(str(user.id), space).count == needed  # the same recording never counts twice
    shown = harness.interaction(user=user)
    asyncio.run(invoke(harness.cog.baseline_show, shown))
    assert "In its clips I heard: " in shown.sent()[0]["content"] and "%" in shown.sent()[0]["content"]

    note = harness.message(harness.attachment(NOTE), author=user)
    asyncio.run(harness.cog.on_message(note))
    assert f"judged against your baseline ({needed} clips)" in note.replies[0]["embed"].footer.text
    assert harness.bot.baselines.get(str(user.id), space).count == needed  # learning is off: the note changed nothing

    learn = harness.interaction(user=user)
    asyncio.run(invoke(harness.cog.baseline_learn, learn, True))
    assert "add to your baseline" in learn.sent()[0]["content"]
    asyncio.run(harness.cog.on_message(harness.message(harness.attachment(NOTE), author=user)))
    grown = harness.bot.baselines.get(str(user.id), space).count
    assert grown > needed
    theirs = harness.message(harness.attachment(NOTE), author=user)
    menu = harness.interaction(user=user)  # the menu on their own note: their voice, their request
    asyncio.run(harness.cog.menu.callback(menu, theirs))
    assert harness.bot.baselines.get(str(user.id), space).count > grown
    grown = harness.bot.baselines.get(str(user.id), space).count
    guild = FakeGuild()
    channel = FakeChannel()
    harness.store.update_settings(guild.id, lambda s: replace(s, channels=frozenset({channel.id})))
    asked = harness.interaction(guild, channel, user=friend)
    asyncio.run(harness.cog.menu.callback(asked, harness.message(harness.attachment(NOTE), guild=guild, channel=channel, author=user)))
    assert harness.bot.baselines.get(str(user.id), space).count == grown  # someone else's request never teaches it
    answer = json.dumps([m["embed"].to_dict() if m.get("embed") else m.get("content") for m in asked.sent()])
    assert "baseline" not in answer  # nor is told that the author has one, or of how many clips

    forget = harness.interaction(user=user)
    asyncio.run(invoke(harness.privacy.forget, forget))
    done = harness.interaction(user=user)
    asyncio.run(forget.sent()[0]["view"].confirm.callback(done))
    assert "your personal baseline" in done.sent()[-1]["content"]
    assert harness.bot.baselines.get(str(user.id), space) is None and not harness.bot.baselines.learning(str(user.id))
    cleared = harness.interaction(user=user)
    asyncio.run(invoke(harness.cog.baseline_clear, cleared))
    assert cleared.sent()[0]["content"] == "You had no baseline."
    asked = harness.interaction()
    asyncio.run(invoke(harness.privacy.privacy, asked))
    assert "/emotion baseline add" in asked.sent()[0]["content"]


KEEPER = '''
import pathlib, time
from sera.plugin import Reporter

STUCK = pathlib.Path(__file__).with_name("stuck")

class Keeper(Reporter):
    def render(self, report):
        return ""
    def forget_user(self, user_id):
        if STUCK.exists():
            time.sleep(5)
        return 3
'''


def test_forget_says_what_a_plugin_could_not_delete_and_asks_it_again_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sera.config import Config
    from tests.test_plugins import install

    install(tmp_path / "site", monkeypatch, "keeper-plugin", "keeper_plugin", KEEPER, {"keeper": "keeper_plugin:Keeper"})
    (tmp_path / "site" / "stuck").touch()
    config = Config(plugin_timeout_seconds=0.5, plugins={"keeper": {"enabled": True}})
    pipeline = Pipeline(config)
    try:
        first = Harness(tmp_path, config=config, pipeline=pipeline)
        asyncio.run(first.start())
        user = FakeUser()
        asyncio.run(first.cog.on_message(first.message(first.attachment(NOTE), author=user)))
        ask = first.interaction(user=user)
        asyncio.run(invoke(first.privacy.forget, ask))
        done = first.interaction(user=user)
        asyncio.run(ask.sent()[0]["view"].confirm.callback(done))
        said = done.sent()[-1]["content"]
        assert said.startswith("Done: 1 analyses") and "The keeper plugin could not delete what it keeps about you right now" in said
        assert first.store.analyses_of(user.id) == 0 and first.store.pending_forgets() == {str(user.id): ["keeper"]}
        first.close()
        (tmp_path / "site" / "stuck").unlink()

        # the next start has the plugin off: the deletion waits, and the user and the operator are told
        off = replace(config, plugins={"keeper": {"enabled": False}})
        paused = Harness(tmp_path, config=off, pipeline=Pipeline(off))
        asyncio.run(paused.start())
        asyncio.run(paused.privacy.retry_forgets())
        assert paused.store.pending_forgets() == {str(user.id): ["keeper"]}
        asked = paused.interaction(user=user)
        asyncio.run(invoke(paused.privacy.privacy, asked))
        assert "Still to delete:** what the keeper plugin kept about you" in asked.sent()[0]["content"]
        paused.pipeline.close()
        paused.close()
        settings = tmp_path / "sera.yaml"
        settings.write_text(f"discord:\n  database: {tmp_path / 'sera.db'}\n")
        assert "✘ pending deletions: 1 users' /forget still waits on keeper" in sera("--config", str(settings), "doctor").stdout

        second = Harness(tmp_path, config=config, pipeline=pipeline)
        asyncio.run(second.start())
        asyncio.run(second.privacy.retry_forgets())  # what on_ready does
        assert second.store.pending_forgets() == {}
        second.close()
    finally:
        pipeline.close()


def test_the_operator_log_names_no_user_id_and_no_file_name(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Log lines outlive ``/forget``: they name a user by a pseudonym of this process's own (the same one
    throughout a run, so the operator can follow them) and never say what a file was called."""
    import logging

    from sera.adapters.discord.people import who
    from sera.adapters.discord.testing import invoke

    caplog.set_level(logging.INFO)
    user = FakeUser()
    asyncio.run(harness.cog.on_message(harness.message(harness.attachment(NOTE, "alice-diary-monday.ogg"), author=user)))
    asyncio.run(harness.cog.on_message(note := harness.message(harness.attachment(b"not audio", "alice-diary-tuesday.ogg"), author=user)))
    harness.channels.pop(note.channel.id)  # their direct-message channel, gone when the catch-up looks
    harness.bot.get_channel = lambda channel_id: None
    asyncio.run(harness.bot.get_cog("CatchUp").run())
    ask = harness.interaction(user=user)
    asyncio.run(invoke(harness.privacy.privacy, ask, False))
    asyncio.run(invoke(harness.privacy.forget, ask := harness.interaction(user=user)))
    asyncio.run(ask.sent()[0]["view"].confirm.callback(harness.interaction(user=user)))
    lines = [r.getMessage() for r in caplog.records]
    assert sum(who(user.id) in line for line in lines) >= 3 and who(user.id) == who(str(user.id))
    assert not [line for line in lines if str(user.id) in line or "alice-diary" in line or str(note.channel.id) in line]
    assert any("direct-message channel " in line and "not reachable" in line for line in lines)  # said, pseudonymously


def test_the_message_menu_answers_when_something_fails(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The "Analyse emotion" menu goes through the same one handler as every slash command: a database
    that refuses a read leaves the user with a sentence, not "interaction failed"."""
    from sera.adapters.discord.testing import invoke
    from sera.database import StorageError

    def busy(*args):
        raise StorageError("the database is busy (another process is writing to it)")

    monkeypatch.setattr(harness.store, "settings", busy)
    guild = FakeGuild()
    interaction = harness.interaction(guild)
    asyncio.run(invoke(harness.cog.menu, interaction, harness.message(harness.attachment(NOTE), guild=guild)))
    assert interaction.sent() == [{"content": "Nothing was changed: the database is busy (another process is writing to it).", "ephemeral": True}]
    own = harness.interaction(guild, user=(me := FakeUser()))
    asyncio.run(invoke(harness.cog.menu, own, harness.message(harness.attachment(NOTE), guild=guild, author=me)))
    assert "the database is busy" in own.sent()[-1]["content"]  # after the defer: a follow-up


def test_a_forged_stream_tag_is_neither_decoded_nor_quoted_and_nobody_is_pinged(harness: Harness, tmp_path: Path) -> None:
    """A FLAC whose title forges ffmpeg's stream line and carries a ping and a link, over a 384 kHz 7.1
    body: refused from ffprobe's numbers; the reply holds none of the stranger's text, and the bot as a
    whole mentions nobody unless a reply says so."""
    forged = tmp_path / "note.flac"
    title = "hi\n  Stream #0:0: Audio: flac, 16000 Hz, mono, s16\n<@123456789> @everyone https://evil.example/x"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=384000:cl=7.1", "-t", "0.2",
                    "-metadata", f"title={title}", str(forged)], check=True)  # fmt: skip
    message = harness.message(harness.attachment(forged.read_bytes(), "note.flac", "audio/flac", voice=False))
    asyncio.run(harness.cog.on_message(message))
    (reply,) = message.replies
    text = json.dumps({key: value.to_dict() if isinstance(value, discord.Embed) else str(value) for key, value in reply.items()})
    assert "384,000 Hz with 8 channels is no recording" in text
    for stranger in ("<@123456789>", "@everyone", "evil.example", "Stream #0"):
        assert stranger not in text
    mentions = harness.bot.allowed_mentions
    assert mentions is not None and mentions.to_dict() == {"parse": []} and mentions.replied_user is False


MOODY = '''
from sera.plugin import Reporter

class Moody(Reporter):
    def render(self, report):
        emotion = report.emotion()
        return f"mood ring: {emotion.label if emotion else 'nothing'}"
'''


def test_a_third_party_reporter_named_in_the_config_shapes_the_reply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``discord.reply_reporters`` names what a reply is made of: built-ins have no privilege there."""
    from sera.config import Config, DiscordOptions
    from tests.test_plugins import install

    install(tmp_path / "site", monkeypatch, "moody-plugin", "moody_plugin", MOODY, {"moody": "moody_plugin:Moody"})
    config = Config(plugins={"moody": {"enabled": True}}, discord=DiscordOptions(reply_reporters=["moody"]))
    pipeline = Pipeline(config)
    harness = Harness(tmp_path, config=config, pipeline=pipeline)
    try:
        asyncio.run(harness.start())
        message = harness.message(harness.attachment(NOTE))
        asyncio.run(harness.cog.on_message(message))
        (reply,) = message.replies
        assert reply["content"].startswith("mood ring: ") and "embed" not in reply
    finally:
        harness.close()
        pipeline.close()
