"""``sera analyze`` and ``sera plugins`` as a user runs them: real ffmpeg, real onnxruntime."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, SAMPLE_NOTE, encode, noise, tone, needs_chart
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


def test_a_missing_model_is_reported_and_the_exit_says_so(tmp_path: Path) -> None:
    """The other plugins still answer; the exit status (1) and one line say that one could not."""
    config = tmp_path / "sera.yaml"
    config.write_text("plugins:\n  emotion_whisper:\n    model: missing.onnx\n")
    listing = run("--config", str(config), "plugins", "--check")
    assert listing.returncode == 1 and "model file not found" in listing.stdout
    assert run("--config", str(config), "plugins").returncode == 0  # listed, not set up: nothing failed yet
    done = run("--config", str(config), "analyze", "--json", str(SAMPLE_NOTE))
    assert done.returncode == 1
    assert "plugin emotion_whisper is not loaded: model file not found" in done.stderr
    assert "prosody" in json.loads(done.stdout)["analyzers"]


def test_plugins_lists_builtins() -> None:
    """At a glance without loading a model; with --check, each one set up for real."""
    for flags, status in (((), "ready"), (("--check",), "loaded")):
        done = run("plugins", *flags)
        assert done.returncode == 0
        header, *rows = done.stdout.split("\n\n")[0].splitlines()
        assert header.split() == ["NAME", "KIND", "ORIGIN", "ENABLED", "STATUS"]
        assert done.stdout.endswith("\nsera 0.1.0, plugin API 1.3\n")
        names = {row.split()[0]: row for row in rows}
        assert {"emotion_whisper", "prosody", "text", "json"} <= names.keys()
        assert all(names[n].split()[2:] == ["built-in", "yes", status] for n in ("emotion_whisper", "prosody", "text", "json"))


def test_the_operator_log_can_be_json_lines(tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text("plugins:\n  emotion_whisper:\n    unsure_below: 3\n")
    done = run("--log-format", "json", "-v", "--config", str(config), "plugins")
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert entries and all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    assert any(e["level"] == "INFO" and "'plugins.emotion_whisper.unsure_below' must be between 0 and 1" in e["message"] for e in entries)


@pytest.mark.parametrize("command", [("config",), ("doctor",), ("analyze", str(SAMPLE_NOTE)), ("run",)])
def test_a_bad_plugin_option_is_refused_like_any_config_mistake(tmp_path: Path, command: tuple[str, ...]) -> None:
    """It once passed `sera config` and `sera doctor`, then `sera analyze` answered without an emotion."""
    config = tmp_path / "sera.yaml"
    config.write_text("plugins:\n  emotion_whisper:\n    unsure_below: 5\n")
    done = run("--config", str(config), *command)
    why = f"{config}: 'plugins.emotion_whisper.unsure_below' must be between 0 and 1, not 5"
    if command == ("doctor",):
        assert done.returncode == 2 and f"✘ config: {why}" in done.stdout
    else:  # (``sera run`` also logs it, as the operator's log of a refused start)
        assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == f"sera: {why}" and not done.stdout
        assert done.stderr.count("\n") == 1 or command == ("run",)


def test_an_analyzer_that_fails_on_a_file_says_so_in_the_output_and_the_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    from sera.plugins.prosody import Prosody

    monkeypatch.setattr(Prosody, "analyze", lambda self, segments: 1 / 0)
    text = run("analyze", str(SAMPLE_NOTE))
    assert text.returncode == 1 and "note: prosody failed (it raised an error); its results are left out" in text.stdout
    assert "sera: " in text.stderr and "prosody failed" in text.stderr and "emotion: " in text.stdout
    data = run("analyze", "--json", str(SAMPLE_NOTE))
    assert data.returncode == 1 and json.loads(data.stdout)["notices"] == ["prosody failed (it raised an error); its results are left out"]


def test_sera_config_fills_in_every_default_plugins_included() -> None:
    import yaml

    done = run("config")
    assert done.returncode == 0, done.stderr
    effective = yaml.safe_load(done.stdout)
    assert effective["plugins"]["emotion_whisper"] == {"enabled": True, "model": "sera-emotion-whisper.onnx", "unsure_below": 0.4,
                                                           "baseline_from": None}
    assert effective["plugins"]["emotion_cnn"] == {"enabled": False, "model": "sera-emotion.onnx", "unsure_below": 0.4}
    assert {"prosody", "text", "json", "embed", "chart"} <= effective["plugins"].keys()


def test_sera_db_status_creates_no_database(tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text(f"discord:\n  database: {tmp_path / 'nowhere' / 'sera.db'}\n")
    done = run("--config", str(config), "db", "status")
    assert done.returncode == 0 and "does not exist yet" in done.stdout and "discord: schema 0 of 3" in done.stdout
    assert not (tmp_path / "nowhere").exists()


def test_sera_doctor_on_a_fresh_folder_creates_nothing(tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text(f"discord:\n  database: {tmp_path / 'data' / 'sera.db'}\n")
    done = run("--config", str(config), "doctor")
    assert f"✔ database: {tmp_path / 'data' / 'sera.db'} does not exist yet; sera run creates it" in done.stdout
    assert not (tmp_path / "data").exists()
    status = run("--config", str(config), "db", "status").stdout
    assert "discord: schema 0 of 3" in status and "sessions: schema 0 of 3" in status


def test_help_says_what_train_makes_and_that_a_plugin_action_is_optional() -> None:
    assert "emotion CNN" not in run("--help").stdout and "--model whisper, the default" in run("--help").stdout
    assert "whisper (the default)" in run("train", "--help").stdout
    usage = run("plugins", "--help").stdout
    assert "[new NAME]" in usage and " ACTION " not in usage
    listed = [line.split() for line in run("plugins").stdout.splitlines()]
    assert ["emotion_cnn", "analyzer", "built-in", "no", "disabled"] in listed  # a disabled built-in's kind is known
    checked = [line.split() for line in run("plugins", "--check").stdout.splitlines()]
    assert ["emotion_cnn", "analyzer", "built-in", "no", "disabled"] in checked


def test_options_may_come_between_file_names(tmp_path: Path) -> None:
    done = run("analyze", str(SAMPLE_NOTE), "--json", str(SAMPLE_NOTE))
    assert done.returncode == 0 and len(done.stdout.strip().splitlines()) == 2
    assert run("analyze", str(SAMPLE_NOTE), "--nonsense").returncode == 2  # an unknown option is still refused


def test_an_earlier_failure_decides_the_exit_also_when_the_reader_stops_early() -> None:
    """`sera analyze missing.ogg ok.ogg ok.ogg | head -1`: the missing file's failure is the exit status,
    whether or not the pipe broke before the end."""
    done = subprocess.run(f"{sys.executable} -m sera analyze /nonexistent.ogg {SAMPLE_NOTE} {SAMPLE_NOTE} | head -1; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "no such audio file" in done.stderr and "Traceback" not in done.stderr


def test_reading_only_the_first_line_is_no_error() -> None:
    """`sera analyze ... | head -1` once ended in a BrokenPipeError traceback."""
    done = subprocess.run(f"{sys.executable} -m sera analyze {SAMPLE_NOTE} {SAMPLE_NOTE} | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.startswith("voice-note.ogg") and len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr and "Broken" not in done.stderr, done.stderr


def test_verbose_raises_seras_log_not_every_librarys() -> None:
    done = run("-vv", "analyze", str(SAMPLE_NOTE))
    lines = [line for line in done.stderr.splitlines() if line[:4].isdigit()]
    assert any(" DEBUG sera" in line or " INFO sera" in line for line in lines)
    assert all(" sera" in line.split(":", 3)[-2] or " WARNING " in line or " ERROR " in line for line in lines), lines


def test_an_unknown_reporter_names_the_ones_there_are() -> None:
    done = run("analyze", "--reporter", "pdf", str(SAMPLE_NOTE))
    assert done.returncode == 2 and "no reporter called 'pdf'; the reporters here: " in done.stderr
    assert all(name in done.stderr for name in ("text", "json", "embed", "chart"))


def test_output_refuses_two_inputs_that_would_overwrite_each_other(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(SAMPLE_NOTE, tmp_path / folder / "note.ogg")
    done = run("analyze", str(tmp_path / "a" / "note.ogg"), str(tmp_path / "b" / "note.ogg"), "--output", str(tmp_path / "out") + "/")
    assert done.returncode == 2 and "would both be written as note.*" in done.stderr
    assert not (tmp_path / "out").exists()


@needs_chart
def test_a_chart_is_never_written_to_a_terminal_and_goes_where_output_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sera.adapters.cli import Output
    from sera.errors import SeraError

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    with pytest.raises(SeraError, match="a terminal cannot show: add --output FILE.png"):
        Output(None, 1).emit(b"\x89PNG", "note.ogg")
    assert sys.stdout.getvalue() == ""
    monkeypatch.undo()
    one = run("analyze", "--reporter", "chart", "--output", str(tmp_path / "one.png"), str(SAMPLE_NOTE))
    assert one.returncode == 0 and (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    other = tmp_path / "other.ogg"
    other.write_bytes(SAMPLE_NOTE.read_bytes())
    folder = run("analyze", "--reporter", "chart", "--output", str(tmp_path / "charts") + "/", str(SAMPLE_NOTE), str(other))
    assert folder.returncode == 0 and sorted(p.name for p in (tmp_path / "charts").iterdir()) == ["other.png", "voice-note.png"]
    refused = run("analyze", "--reporter", "chart", "--output", str(tmp_path / "two.png"), str(SAMPLE_NOTE), str(SAMPLE_NOTE))
    assert refused.returncode == 2 and "name a folder" in refused.stderr


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
