"""``sera analyze`` and ``sera plugins`` as a user runs them: real ffmpeg, real onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, SAMPLE_NOTE, encode, noise, tone
from tests.conftest import sera as run

LABELS = {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}


def entry_point(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sera", *args], capture_output=True, text=True, timeout=120)


def test_analyze_sample_note_prints_a_table() -> None:
    done = run("analyze", str(SAMPLE_NOTE))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("voice-note.ogg  (9.4 s audio")
    assert "emotion: " in out
    bars = [line for line in out.splitlines() if "%" in line and line.strip().split()[0] in LABELS]
    assert len(bars) == len(LABELS)  # every class with its bar
    assert "prosody: pitch" in out
    assert "timeline:" in out  # the note is longer than one window


def test_analyze_json_has_the_documented_fields() -> None:
    done = run("analyze", "--json", str(SAMPLE_NOTE))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"source", "duration_s", "speech_s", "speech_detected", "segments", "analyzers", "notices"}
    emotion = report["analyzers"]["emotion_whisper"]["overall"]
    assert set(emotion) == {"type", "start_s", "end_s", "label", "confidence", "unsure", "probabilities", "baseline_clips"}
    assert set(emotion["probabilities"]) == LABELS
    assert abs(sum(emotion["probabilities"].values()) - 1) < 1e-3
    assert emotion["label"] in LABELS | {"unsure"}
    assert len(report["analyzers"]["emotion_whisper"]["segments"]) == len(report["segments"]) >= 2
    prosody = report["analyzers"]["prosody"]["overall"]
    assert 60 < prosody["pitch_hz"] < 300  # espeak-ng's male voice


def test_module_and_entry_point_agree() -> None:
    """The one check of the installed command itself; every other test here calls it in-process."""
    in_process = run("analyze", "--json", str(SAMPLE_NOTE))
    installed = entry_point("analyze", "--json", str(SAMPLE_NOTE))
    assert (installed.returncode, json.loads(installed.stdout)) == (in_process.returncode, json.loads(in_process.stdout))
    bad = entry_point("analyze")
    assert bad.returncode == 2 and "the following arguments are required: FILE" in bad.stderr


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.ogg").write_bytes(b"")
    (d / "random.ogg").write_bytes(np.random.default_rng(0).bytes(5000))
    (d / "truncated.ogg").write_bytes(SAMPLE_NOTE.read_bytes()[:300])
    (d / "notes.txt").write_text("not audio\n" * 100)
    big = d / "big.wav"
    encode(noise(20.0, 48_000, level=0.05), 48_000, big)  # ~1.9 MB, over the 1 MB limit below
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty", "the file is empty"),
        ("random", "could not read this audio"),
        ("truncated", "could not read this audio"),
        ("notes", "could not read this audio"),
        ("big", "too large"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path, bad_files: dict[str, Path], name: str, message: str) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text("audio:\n  max_file_mb: 1\n")
    done = run("--config", str(config), "analyze", str(bad_files[name]))
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_one_bad_file_does_not_stop_the_others(bad_files: dict[str, Path]) -> None:
    done = run("analyze", "--json", str(bad_files["random"]), str(SAMPLE_NOTE))
    assert done.returncode == 2
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert "could not read" in first["error"]
    assert second["speech_detected"] is True


@pytest.mark.parametrize(
    "make",
    [
        lambda p: encode(tone(0.1), 16_000, p / "short.ogg", "-c:a", "libopus"),
        lambda p: encode(np.zeros(16_000 * 3, dtype=np.float32), 16_000, p / "silence.ogg", "-c:a", "libopus"),
        lambda p: encode(tone(3.0, freq=220.0), 16_000, p / "tone.mp3"),
        lambda p: encode(noise(3.0, level=0.2), 16_000, p / "noise.wav"),
    ],
    ids=["0.1s-clip", "silence", "pure-tone", "white-noise"],
)
def test_no_speech_never_gets_an_emotion(tmp_path: Path, make) -> None:
    path = make(tmp_path)
    done = run("analyze", "--json", str(path))
    assert done.returncode == 2  # like any input that cannot be analysed
    assert done.stderr.strip() == f"sera: {path}: no speech detected"
    report = json.loads(done.stdout)
    assert report["speech_detected"] is False
    assert report["analyzers"] == {}
    assert "no speech detected" in run("analyze", str(path)).stdout


def test_wrong_config_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text("speech:\n  treshold: 0.5\n")
    done = run("--config", str(config), "analyze", str(SAMPLE_NOTE))
    assert done.returncode == 2
    assert done.stderr.strip() == f"sera: {config}: unknown key 'speech.treshold' (allowed here: " + (
        "max_segment_seconds, min_silence_seconds, min_speech_seconds, pad_seconds, threshold)"
    )
    missing = run("--config", str(tmp_path / "nope.yaml"), "plugins")
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def test_missing_model_is_reported_not_fatal(tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text("plugins:\n  emotion_whisper:\n    model: missing.onnx\n")
    listing = run("--config", str(config), "plugins", "--check")
    assert listing.returncode == 0
    assert "model file not found" in listing.stdout
    done = run("--config", str(config), "analyze", "--json", str(SAMPLE_NOTE))
    assert done.returncode == 0
    assert "plugin emotion_whisper is not loaded: model file not found" in done.stderr
    assert "prosody" in json.loads(done.stdout)["analyzers"]


def test_plugins_lists_builtins() -> None:
    """At a glance without loading a model; with --check, each one set up for real."""
    for flags, status in (((), "ready"), (("--check",), "loaded")):
        done = run("plugins", *flags)
        assert done.returncode == 0
        header, *rows = done.stdout.split("\n\n")[0].splitlines()
        assert header.split() == ["NAME", "KIND", "ORIGIN", "ENABLED", "STATUS"]
        assert done.stdout.endswith("\nsera 0.1.0, plugin API 1.1\n")
        names = {row.split()[0]: row for row in rows}
        assert {"emotion_whisper", "prosody", "text", "json"} <= names.keys()
        assert all(names[n].split()[2:] == ["built-in", "yes", status] for n in ("emotion_whisper", "prosody", "text", "json"))


def test_the_operator_log_can_be_json_lines(tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text("plugins:\n  emotion_whisper:\n    unsure_below: 3\n")
    done = run("--log-format", "json", "--config", str(config), "plugins")
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert entries and all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    assert any(e["level"] == "ERROR" and "'plugins.emotion_whisper.unsure_below' must be between 0 and 1" in e["message"] for e in entries)


def test_the_readme_shows_what_sera_analyze_prints_for_the_sample() -> None:
    """The README's sample output is the shipped model's, not a stale one: regenerate it with the command."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ sera analyze examples/voice-note.ogg\n", 1)[1].split("```", 1)[0]
    done = run("analyze", str(SAMPLE_NOTE))
    assert done.returncode == 0, done.stderr
    assert done.stdout == block


def test_progress_bars_are_drawn_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """sera evaluate and sera train draw tqdm bars for a person at a terminal; CI logs and pipes stay clean."""
    import io

    from sera.progress import bar, progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, drawn in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        assert list(progress(range(3), "evaluating")) == [0, 1, 2]
        with bar(4, "training 2 models", unit="epoch") as epochs:
            epochs.update(4)
        assert ("evaluating:" in stream.getvalue() and "training 2 models:" in stream.getvalue()) == drawn, stream.getvalue()
