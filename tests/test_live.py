"""Live sessions in the core (no Discord): simulated speakers as 20 ms 48 kHz stereo frames.

Four speakers, two of them talking over each other, one who never opted in, silence between turns;
real espeak-ng speech, the real speech detector and emotion model, a real SQLite file.
"""

from __future__ import annotations

import importlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sera.config import Config, LiveOptions
from sera.live import LiveSession
from sera.pipeline import Pipeline
from sera.sessions import ENDED, INTERRUPTED, SessionStore
from sera.summary import summarize
from tests.conftest import ROOT, say, needs_chart
from tests.voice_sim import Clock, Turn, frames, load_speech, speech_extent

LINES = [
    "Let's start with the second law of thermodynamics, it is on page forty two.",
    "I really did not understand the part about entropy, can you explain it again?",
    "Sure, entropy measures how many ways the energy can be arranged in a system.",
    "This is impossible, we have the exam tomorrow and nothing makes sense to me!",
    "Okay, then let us try the exercises at the end of the chapter together.",
    "Fine. Number three looks easy enough, I will read the question out loud.",
]


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("lines")
    voices = ["en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+f2", "en-us+m2"]
    return [load_speech(str(say(text, folder / f"{i}.wav", voice))) for i, (text, voice) in enumerate(zip(LINES, voices))]


def scenario(lines: list[np.ndarray]) -> list[Turn]:
    """Alice and Bob overlap at 3-5 s; Dave never opted in; gaps of silence between turns."""
    return [
        Turn("alice", 0.5, lines[0]),
        Turn("bob", 3.0, lines[1]),
        Turn("dave", 6.0, lines[2]),
        Turn("carol", 11.0, lines[3]),
        Turn("alice", 17.0, lines[4]),
        Turn("bob", 23.0, lines[5]),
    ]


OPTED_IN = {"alice", "bob", "carol"}


def run_session(pipeline: Pipeline, store: SessionStore, turns: list[Turn], **options) -> tuple[LiveSession, list]:
    info = store.start("guild", "voice", "alice", "text")
    clock = Clock()
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True, **options), consents=OPTED_IN.__contains__, clock=clock)
    for i, (at, speaker, pcm) in enumerate(frames(turns)):
        clock.now = at
        live.feed(speaker, pcm, at)
        if i % 200 == 199:
            live.process()  # as the session's tick would, while frames keep arriving
    live.process()
    return live, store.utterances(info.id)


def test_utterances_match_the_speech_and_non_consenting_speakers_leave_no_rows(pipeline, lines, tmp_path: Path):
    turns = scenario(lines)
    store = SessionStore(tmp_path / "sera.db")
    live, _ = run_session(pipeline, store, turns)
    summary = live.finish()
    rows = store.utterances(live.info.id)

    assert {r.speaker for r in rows} == OPTED_IN
    assert live.dropped_without_consent > 0
    for turn in (t for t in turns if t.speaker in OPTED_IN):
        own = [r for r in rows if r.speaker == turn.speaker and r.end > turn.start and r.start < turn.end]
        assert own, f"no utterance for {turn.speaker} at {turn.start}"
        assert own[0].start == pytest.approx(turn.start, abs=0.35)  # espeak-ng starts speaking at once
        assert own[-1].end == pytest.approx(turn.start + speech_extent(turn.samples), abs=0.4)
    for row in rows:
        assert row.label and 0 < row.confidence <= 1
        assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
        assert {"emotion_whisper", "prosody"} <= row.outputs.keys()

    truth = {s: sum(speech_extent(t.samples) for t in turns if t.speaker == s) for s in OPTED_IN}
    total = sum(truth.values())
    shares = {s.speaker: s.share for s in summary.speakers}
    for speaker in OPTED_IN:
        assert shares[speaker] == pytest.approx(truth[speaker] / total, abs=0.05)
    assert summary.status == ENDED and summary.duration >= turns[-1].end - 0.5
    assert set(summary.group) == set(pipeline.plugins.analyzers[0].labels)
    store.close()


@needs_chart
def test_the_summary_is_rendered_as_text_embed_json_and_a_timeline_chart(pipeline, lines, tmp_path: Path):
    store = SessionStore(tmp_path / "sera.db")
    live, _ = run_session(pipeline, store, scenario(lines))
    summary = live.finish(names={"alice": "Alice", "bob": "Bob", "carol": "Carol"})
    rendered = pipeline.plugins.render_session(summary)

    assert "Alice" in rendered["text"] and "of talk" in rendered["text"]
    embed = rendered["embed"]
    assert embed["title"].startswith("📋 Session summary")
    assert "<@alice>" in embed["fields"][0]["value"]
    data = json.loads(rendered["json"])
    assert {s["speaker"] for s in data["speakers"]} == OPTED_IN
    assert sum(s["share"] for s in data["speakers"]) == pytest.approx(1.0, abs=1e-3)
    png = rendered["chart"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
    store.close()


def test_a_crash_mid_session_keeps_what_was_analysed_and_the_session_is_summarised_as_interrupted(
    pipeline, lines, tmp_path: Path
):
    path = tmp_path / "sera.db"
    store = SessionStore(path)
    turns = scenario(lines)
    info = store.start("guild", "voice", "alice", "text")
    clock = Clock()
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True), consents=OPTED_IN.__contains__, clock=clock)
    for at, speaker, pcm in frames(turns):
        if at > 16.0:
            break  # the process dies here: no finish(), nothing flushed
        clock.now = at
        live.feed(speaker, pcm, at)
        if speaker == "carol" and at > 15.5:
            live.process()
    kept = store.utterances(info.id)
    assert {r.speaker for r in kept} >= {"alice", "bob"}
    del live, store  # no clean close, like a killed process

    reopened = SessionStore(path)
    assert reopened.claim_orphans() == [info.id]
    reopened.mark_interrupted(info.id)
    assert reopened.claim_orphans() == []  # marked once
    known = reopened.info(info.id)
    assert known[1] == INTERRUPTED
    rows = reopened.utterances(info.id)
    assert rows == kept
    summary = summarize(known[0], known[1], known[2], rows)
    assert summary.status == INTERRUPTED and summary.speakers
    reopened.close()


def test_rows_are_committed_as_they_arrive(pipeline, lines, tmp_path: Path):
    """Another connection (another process) sees each batch at once: nothing waits for the session end."""
    path = tmp_path / "sera.db"
    store = SessionStore(path)
    live, rows = run_session(pipeline, store, scenario(lines)[:2])
    assert rows
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT COUNT(*) FROM utterances").fetchone()[0] == len(rows)
    live.finish()
    store.close()


def test_falling_behind_sheds_audio_with_a_count_and_memory_stays_bounded(pipeline, lines, tmp_path: Path, caplog):
    store = SessionStore(tmp_path / "sera.db")
    info = store.start("guild", "voice", "alice")
    clock = Clock()
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True, speaker_buffer_seconds=2.0), consents=OPTED_IN.__contains__, clock=clock)
    long_turn = [Turn("alice", 0.0, np.concatenate(lines[:3]))]
    for at, speaker, pcm in frames(long_turn):  # ~15 s of audio and no processing at all
        clock.now = at
        live.feed(speaker, pcm, at)
    assert len(live.tracks["alice"].queue) == 100  # 2 s of 20 ms frames, never more
    assert live.shed > 500
    assert "analysis is behind" in caplog.text
    summary = live.finish()
    assert summary.shed == live.shed
    assert store.info(info.id)[3] == live.shed  # the count is kept with the session
    store.close()


def test_a_speaker_who_never_pauses_is_analysed_in_bounded_pieces(pipeline, lines, tmp_path: Path):
    store = SessionStore(tmp_path / "sera.db")
    info = store.start("guild", "voice", "alice")
    clock = Clock()
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True, max_utterance_seconds=3.0), consents=OPTED_IN.__contains__, clock=clock)
    most_kept = 0
    for i, (at, speaker, pcm) in enumerate(frames([Turn("alice", 0.0, np.concatenate([lines[0], lines[1]]))])):
        clock.now = at
        live.feed(speaker, pcm, at)
        if i % 25 == 24:  # every half second
            live.process()
            most_kept = max(most_kept, live.tracks["alice"].kept.size)
    live.finish()
    rows = store.utterances(info.id)
    assert len(rows) >= 4
    assert max(r.duration for r in rows) <= 3.0 + 0.25
    assert most_kept < 16_000 * 4  # samples are kept for the open utterance only, not the whole turn
    store.close()


def test_opting_out_mid_session_drops_what_was_queued(pipeline, lines, tmp_path: Path):
    store = SessionStore(tmp_path / "sera.db")
    info = store.start("guild", "voice", "alice")
    consenting = {"alice"}
    clock = Clock()
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True), consents=consenting.__contains__, clock=clock)
    for at, speaker, pcm in frames([Turn("alice", 0.0, lines[0])]):
        clock.now = at
        live.feed(speaker, pcm, at)
    consenting.discard("alice")  # the button is pressed before the next tick
    live.finish()
    assert store.utterances(info.id) == []
    assert not live.feed("alice", b"\x00" * 3840, 9.0)
    store.close()


def test_store_consent_exports_and_forgetting(tmp_path: Path):
    store = SessionStore(tmp_path / "sera.db")
    store.set_consent("g", "alice", True)
    store.set_consent("g", "alice", True)
    store.set_consent("g", "bob", True)
    store.set_consent("other", "carol", True)
    store.set_consent("g", "bob", False)
    assert store.consenting("g") == {"alice"}
    info = store.start("g", "vc", "alice")
    from sera.summary import Utterance

    store.add(info.id, [Utterance("alice", 1.0, 2.5, "calm", 0.7, {"calm": 0.7, "sad": 0.3}, {"x": {"a": 1}})])
    csv_text = store.export_csv(info.id)
    assert csv_text.splitlines()[0] == "session,speaker,start_s,end_s,label,confidence,probabilities"
    assert ",alice,1.000,2.500,calm,0.7000," in csv_text
    exported = json.loads(store.export_json(info.id))
    assert exported["utterances"][0]["probabilities"] == {"calm": 0.7, "sad": 0.3}
    with store.db.transaction() as tx:
        assert store.delete_user_data(tx, "alice") == {"utterances": 1, "sessions_started": 1}
    assert store.utterances(info.id) == [] and store.consenting("g") == set()
    assert json.loads(store.export_json(info.id))["started_by"] == "forgotten"
    store.close()


def test_a_third_party_plugin_sees_sessions_through_the_plugin_api(lines, tmp_path: Path, monkeypatch, caplog):
    """The example package's ``talk_balance`` reporter: session hooks and a rendered summary, no Discord."""
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "sera-plugin-example"))
    info_dir = tmp_path / "sera_mic_check-0.1.0.dist-info"
    info_dir.mkdir()
    (info_dir / "METADATA").write_text("Metadata-Version: 2.1\nName: sera-mic-check\nVersion: 0.1.0\n")
    (info_dir / "entry_points.txt").write_text("[sera.plugins]\ntalk_balance = sera_mic_check:TalkBalance\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    config = Config(plugins={"talk_balance": {"enabled": True, "dominant_share": 0.5}, "prosody": {"enabled": False}})
    pipeline = Pipeline(config)
    try:
        store = SessionStore(tmp_path / "sera.db")
        caplog.set_level("INFO")
        live, _ = run_session(pipeline, store, [Turn("alice", 0.0, np.concatenate(lines[:2])), Turn("bob", 1.0, lines[2])])
        assert "timing who talks" in caplog.text
        summary = live.finish(names={"alice": "Alice", "bob": "Bob"})
        verdict = pipeline.plugins.render_session(summary)["talk_balance"]
        assert verdict.startswith("Alice did ") and "let the others in" in verdict
        store.close()
    finally:
        pipeline.close()


def test_a_packet_older_than_the_timeline_is_dropped_and_gaps_become_silence(pipeline, lines, tmp_path: Path):
    store = SessionStore(tmp_path / "sera.db")
    info = store.start("guild", "voice", "alice")
    clock = Clock()
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True), consents=OPTED_IN.__contains__, clock=clock)
    sent = frames([Turn("alice", 0.0, lines[0])])
    for k, (at, speaker, pcm) in enumerate(sent):
        if k == 100:
            continue  # lost in transit: the track fills its 20 ms with silence
        clock.now = at
        live.feed(speaker, pcm, at)
        if k == 150:
            live.feed(speaker, sent[140][2], sent[140][0])  # a duplicate that arrives ten frames late
    live.process()
    track = live.tracks["alice"]
    assert track.late == 1
    assert track.position == pytest.approx(sent[-1][0] + 0.02, abs=1e-6)  # the timeline did not drift
    live.finish()
    store.close()


def test_a_frame_stamped_far_in_the_future_moves_only_its_own_speaker(pipeline, lines, tmp_path: Path):
    """Mallory (opted in) sends one frame stamped an hour ahead; Alice's long turn stays whole."""
    store = SessionStore(tmp_path / "sera.db")
    info = store.start("guild", "voice", "alice")
    clock = Clock()
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True), consents={"alice", "mallory"}.__contains__, clock=clock)
    turn = Turn("alice", 0.0, np.concatenate(lines[:2]))
    for i, (at, speaker, pcm) in enumerate(frames([turn])):
        clock.now = at
        live.feed(speaker, pcm, at)
        if i == 20:
            live.feed("mallory", bytes(3840), 3600.0)
        if i % 25 == 24:
            live.process()
    live.finish()
    alice = [r for r in store.utterances(info.id) if r.speaker == "alice"]
    assert min(r.duration for r in alice) > 1.0  # not cut into 0.5 s pieces at every tick
    assert len(alice) <= 4
    assert live.clamped == 1
    store.close()


def test_forgetting_a_speaker_mid_session_stores_nothing_more_of_theirs(pipeline, lines, tmp_path: Path):
    store = SessionStore(tmp_path / "sera.db")
    info = store.start("guild", "voice", "alice")
    consenting = {"alice", "bob"}
    clock = Clock()
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True), consents=consenting.__contains__, clock=clock)
    for at, speaker, pcm in frames([Turn("alice", 0.0, lines[0]), Turn("bob", 0.5, lines[1])]):
        clock.now = at
        live.feed(speaker, pcm, at)
    consenting.discard("bob")  # /forget: the adapter drops the consent, then the session forgets him
    live.forget("bob")
    assert "bob" not in live.tracks
    summary = live.finish()
    assert {r.speaker for r in store.utterances(info.id)} == {"alice"}
    assert [s.speaker for s in summary.speakers] == ["alice"]
    store.close()
