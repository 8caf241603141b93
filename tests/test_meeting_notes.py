"""Meeting notes from stored rows, and ``sera listen``: a live session on this machine through the same
engine as a voice channel (real ffmpeg playing a real file, the real models, a real SQLite file).

What a transcript adds is tested with the real recogniser in ``test_transcripts.py`` (the
``transcripts`` extra); here the rows carry a transcript's result as stored, so the notes are checked
wherever the tests run.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sera.adapters.listen import Display, microphone, utterance_line
from sera.errors import SeraError
from sera.minutes import markdown
from sera.sessions import SessionStore
from sera.summary import SessionInfo, Utterance, summarize
from tests.conftest import ROOT, SAMPLE_NOTE, encode, say, sera
from tests.voice_sim import load_speech

PROBS = {"sad": 0.71, "neutral": 0.2, "happy": 0.09}


def row(speaker: str, start: float, words: str | None, label: str = "sad") -> Utterance:
    outputs = {"emotion_whisper": {"type": "emotion", "label": label}}
    if words is not None:
        outputs["transcript"] = {"type": "transcript", "start_s": start, "end_s": start + 2, "text": words, "language": "en", "confidence": 0.8}
    return Utterance(speaker, start, start + 2.0, label, PROBS[label] if label in PROBS else 0.3, PROBS, outputs)


def test_meeting_notes_list_every_utterance_with_its_emotion_and_the_words_of_those_who_agreed() -> None:
    info = SessionInfo(7, "guild", "room", "1", 1_800_000_000.0)
    rows = [row("1", 0.0, "I still don't get the second proof"), row("2", 3.0, None, "happy"), row("1", 62.0, "*Maybe* <@3> can # help")]
    summary = summarize(info, "ended", 70.0, rows, {"1": "Alice", "2": "Bob"})
    assert summary.transcribed
    notes = markdown(summary)
    assert notes.startswith("# Session 7\n") and "2027-01-15 08:00 UTC" in notes and "1:10 long" in notes
    assert "- `0:00` **Alice** · sad 71%: I still don't get the second proof" in notes
    assert "- `0:03` **Bob** · happy 9%\n" in notes  # Bob never agreed: his line has no words
    assert "- `1:02` **Alice** · sad 71%: \\*Maybe\\* \\<@3\\> can \\# help" in notes  # markup in words stays text
    assert "**Alice**: 0:04 (67% of the talk), 2 utterances, mostly sad" in notes
    lines = summary.to_dict()["notes"]
    assert [n["text"] for n in lines] == ["I still don't get the second proof", None, "*Maybe* <@3> can # help"]
    assert lines[0] == {"start_s": 0.0, "end_s": 2.0, "speaker": "1", "name": "Alice", "emotion": "sad", "confidence": 0.71,
                        "text": "I still don't get the second proof"}  # fmt: skip
    plain = summarize(info, "interrupted", 5.0, [row("2", 0.0, None)], {"2": "Bob"})
    assert not plain.transcribed and "# Session 7 (interrupted)" in markdown(plain) and ": " not in markdown(plain).split("## Timeline")[1]


def test_the_text_and_embed_summaries_carry_the_notes_only_when_someone_was_transcribed(pipeline) -> None:
    info = SessionInfo(8, "guild", "room", "1", 1_800_000_000.0)
    with_words = summarize(info, "ended", 10.0, [row("1", 0.0, "hello there"), row("2", 3.0, None)], {"1": "Alice", "2": "Bob"})
    text = pipeline.plugins.render_summary("text", with_words)
    assert "notes:" in text and "“hello there”" in text and "2 speakers" in text
    embed = pipeline.plugins.render_summary("embed", with_words)
    (notes,) = [f for f in embed["fields"] if f["name"].startswith("📝 Notes")]
    assert "<@1>" in notes["value"] and "hello there" in notes["value"] and "<@2>" not in notes["value"]
    without = summarize(info, "ended", 10.0, [row("2", 3.0, None)], {"2": "Bob"})
    assert "notes:" not in pipeline.plugins.render_summary("text", without) and "from 1 speaker\n" in pipeline.plugins.render_summary("text", without)
    assert not any(f["name"].startswith("📝") for f in pipeline.plugins.render_summary("embed", without)["fields"])
    many = summarize(info, "ended", 900.0, [row("1", 10.0 * i, "word " * 60) for i in range(80)], {"1": "Alice"})
    (long_notes,) = [f for f in pipeline.plugins.render_summary("embed", many)["fields"] if f["name"].startswith("📝")]
    assert len(long_notes["value"]) <= 1024 and long_notes["value"].endswith("more")  # Discord's limit on a field


def database_of(folder: Path) -> Path:
    return folder / "sera.db"


def listen_config(tmp_path: Path) -> Path:
    config = tmp_path / "sera.yaml"
    config.write_text(f"discord:\n  database: {database_of(tmp_path)}\n")
    return config


@pytest.mark.slow
def test_sera_listen_plays_a_file_as_a_live_session_and_writes_its_summary_and_notes(tmp_path: Path) -> None:
    """The README's command, sped up: each utterance printed as it ends, plain lines when piped, the summary,
    the session stored as it went, and --output's chart, notes and JSON."""
    out = tmp_path / "out"
    done = sera("--config", str(listen_config(tmp_path)), "listen", str(SAMPLE_NOTE), "--speed", "4", "--name", "Sam", "-o", str(out))
    assert done.returncode == 0, done.stderr
    utterances = [line for line in done.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(utterances) >= 2 and all("█" in line for line in utterances)
    assert "\x1b[" not in done.stdout  # not a terminal: no redrawing
    assert "session 1: 0:09 long" in done.stdout and "Sam" in done.stdout and "3 utterances" in done.stdout
    summary = json.loads((out / "session-1.json").read_text())
    assert summary["status"] == "ended" and len(summary["notes"]) == len(utterances)
    assert (out / "session-1-notes.md").read_text().startswith("# Session 1\n")
    if (out / "session-1.png").exists():  # the [chart] extra
        assert (out / "session-1.png").read_bytes()[:4] == b"\x89PNG"
    store = SessionStore(database_of(tmp_path))
    (stored,) = store.latest("local")
    assert stored.status == "ended" and stored.info.started_by == "Sam" and len(store.utterances(1)) == len(utterances)
    store.close()


def test_sera_listen_refuses_what_it_cannot_play_in_one_line_and_stores_nothing(tmp_path: Path) -> None:
    config = str(listen_config(tmp_path))
    missing = sera("--config", config, "listen", str(tmp_path / "nope.ogg"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"sera: {tmp_path / 'nope.ogg'}: no such file"
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all")
    refused = sera("--config", config, "listen", str(text))
    assert refused.returncode == 2 and refused.stderr.startswith("sera: ffmpeg could not read it: ") and "Traceback" not in refused.stderr
    assert sera("--config", config, "listen", str(SAMPLE_NOTE), "--speed", "0").returncode == 2
    assert not database_of(tmp_path).exists() or not SessionStore(database_of(tmp_path)).latest("local")


def test_the_microphone_is_pulse_then_alsa_or_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULSE_SERVER", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    if Path("/dev/snd").is_dir():
        assert microphone() == ["-f", "alsa", "-i", "default"]
    else:
        with pytest.raises(SeraError, match="no microphone here"):
            microphone()
    (tmp_path / "pulse").mkdir()
    (tmp_path / "pulse" / "native").touch()
    assert microphone() == ["-f", "pulse", "-i", "default"]  # ffmpeg here has the pulse input


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_status_line_is_redrawn_in_place_and_utterances_print_above_it() -> None:
    screen = Terminal()
    display = Display(screen, "microphone")
    display.status(12.0)
    display.utterances([row("me", 1.0, "hello there")])
    display.status(13.0)
    display.end()
    written = screen.getvalue()
    assert written.startswith("\r\x1b[K● 0:12 listening to microphone · 0 utterances")
    assert "\r\x1b[K" + utterance_line(row("me", 1.0, "hello there")) + "\n" in written
    assert "· 1 utterances" in written and written.endswith("\r\x1b[K")
    assert "sad 71%" in utterance_line(row("me", 1.0, "hello there")) and "“hello there”" in utterance_line(row("me", 1.0, "hello there"))
    piped = io.StringIO()
    Display(piped, "x").status(3.0)
    assert piped.getvalue() == ""


@pytest.mark.slow
def test_ctrl_c_ends_a_live_session_with_its_summary(tmp_path: Path) -> None:
    """An operator checking a microphone stops with Ctrl-C: the session ends normally, summarised."""
    speech = load_speech(str(say("Testing the microphone, one two three. Can everyone hear me well?", tmp_path / "a.wav")))
    long = encode(np.concatenate([speech, np.zeros(16_000, np.float32)] * 8), 16_000, tmp_path / "long.wav")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "sera", "--config", str(listen_config(tmp_path)), "listen", str(long), "--speed", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)  # fmt: skip
    first = process.stdout.readline()  # the first utterance: the session is running
    assert "█" in first
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "session 1:" in out and "Traceback" not in err
    store = SessionStore(database_of(tmp_path))
    (stored,) = store.latest("local")
    assert stored.status == "ended" and stored.duration < 8 * 4.5  # stopped well before the end of the input
    store.close()


def test_doctor_names_an_enabled_transcript_plugin_whose_extra_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from sera.adapters.doctor import _models
    from sera.config import Config
    from sera.plugins.transcript import Transcript

    monkeypatch.setattr(Transcript, "requires", ("sera_test_no_such_module",))  # as where [transcripts] is not installed
    checks = {c.name: c for c in _models(Config(plugins={"transcript": {"enabled": True}, "emotion_whisper": {"enabled": False},
                                                         "prosody": {"enabled": False}}))}  # fmt: skip
    check = checks["transcript analyzer"]
    assert not check.ok and "pip install 'sera-voice[transcripts]'" in check.detail and "disable it" in check.fix
    assert "transcript analyzer" not in {c.name for c in _models(Config(plugins={"emotion_whisper": {"enabled": False}}))}  # off: no concern
