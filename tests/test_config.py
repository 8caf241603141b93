"""The YAML config: the example is valid, and every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sera.config import Config, build, load
from sera.errors import ConfigError
from tests.conftest import ROOT, sera


# Nine levels of nine aliases each: 387 million values once expanded, from a file of 700 bytes. Before
# the node budget, walking it took longer than any test would wait (`sera config` hung).
ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sera.yaml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_matches_the_defaults() -> None:
    config = load(ROOT / "config.example.yaml")
    defaults = Config()
    assert config.audio == defaults.audio
    assert config.speech == defaults.speech
    assert config.discord == defaults.discord
    assert config.workers == defaults.workers
    assert config.plugins["emotion_whisper"]["unsure_below"] == 0.4 and config.plugin_section("emotion_cnn")["enabled"] is False


def test_no_path_gives_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERA_CONFIG", raising=False)
    assert load(None) == Config()


def test_env_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERA_CONFIG", str(write(tmp_path, "workers: 3\n")))
    assert load(None).workers == 3


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    config = load(write(tmp_path, "models_dir: my-models\n"))
    assert config.models_dir == tmp_path / "my-models"
    assert config.path("sera.db") == tmp_path / "sera.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("audio:\n  max_fle_mb: 3\n", r"unknown key 'audio.max_fle_mb'"),
        ("workers: many\n", r"'workers' must be a whole number, not 'many'"),
        ("workers: true\n", r"'workers' must be a whole number"),
        ("speech:\n  threshold: high\n", r"'speech.threshold' must be a number"),
        ("audio: 5\n", r"audio must be a mapping"),
        ("plugins:\n  prosody: [1, 2]\n", r"'plugins.prosody' must be a mapping"),
        ("- just\n- a list\n", r"the top level must be a mapping"),
        ("workers: [unclosed\n", r"not valid YAML"),
        ("workers: 0\n", r"'workers' must be between 1 and 64, not 0"),
        ("discord:\n  user_rate_per_minute: 0\n", r"'discord.user_rate_per_minute' must be between 1 and 600, not 0"),
        ("speech:\n  threshold: 7\n", r"'speech.threshold' must be between 0 and 1, not 7"),
        ("audio:\n  max_file_mb: -5\n", r"'audio.max_file_mb' must be more than 0 and at most 2000, not -5"),
        ("live:\n  tick_seconds: 0\n", r"'live.tick_seconds' must be more than 0 and at most 10, not 0"),
        ("workers: 2\naudio: {}\nworkers: 3\n", r"duplicate key 'workers' \(line 3\)"),
        ("audio:\n  max_file_mb: 3\n  max_file_mb: 4\n", r"duplicate key 'audio.max_file_mb' \(line 3\)"),
        ("discord:\n  retention_days: .nan\n", r"'discord.retention_days' must be a finite number, not nan"),
        ("audio:\n  max_file_mb: .inf\n", r"'audio.max_file_mb' must be a finite number, not inf"),
        ("workers: -.inf\n", r"'workers' must be a finite number, not -inf"),
        ("plugins: &p\n  x: *p\n", r"'plugins.x' contains itself through an alias"),
        (ALIAS_BOMB, r"more than 10000 values once its aliases \(\*name\) are expanded"),
        ("workers: " + "[" * 3000 + "]" * 3000 + "\n", r"nested too deeply to be a config file"),
        ("audio:\n  max_file_mb: 1.0e+308\n", r"'audio.max_file_mb' must be at most 2000, not 1e\+308"),
        ("audio:\n  max_duration_seconds: 1.0e+308\n", r"'audio.max_duration_seconds' must be at most 86400, not 1e\+308"),
        ("speech:\n  max_segment_seconds: 1.0e+308\n", r"'speech.max_segment_seconds' must be between 1 and 600"),
        ("audio:\n  decode_timeout_seconds: 1.0e+300\n", r"'audio.decode_timeout_seconds' must be at most 3600"),
        ("plugin_timeout_seconds: 1.0e+300\n", r"'plugin_timeout_seconds' must be at most 3600"),
        ("audio:\n  decode_cpu_seconds: 18446744073709551616\n", r"'audio.decode_cpu_seconds' must be between 1 and 3600"),
        ("discord:\n  retention_days: " + "9" * 400 + "\n", r"'discord.retention_days' must be a finite number"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        load(path)
    assert str(path) in str(error.value)


def test_every_number_in_the_config_has_a_maximum() -> None:
    """A limit without one lets ``1e300`` through, to overflow or wrap later (a CPU limit of 2**64 wrapped to 0)."""
    import dataclasses
    import typing

    from sera.bounds import BOUNDS
    from sera.config import AudioOptions, DiscordOptions, LiveOptions, SpeechOptions
    from sera.plugins.emotion_cnn import EmotionCNN
    from sera.plugins.emotion_whisper import EmotionWhisper
    from sera.plugins.prosody import Prosody

    unbounded = []
    for cls in (Config, AudioOptions, SpeechOptions, DiscordOptions, LiveOptions, EmotionCNN.Options, EmotionWhisper.Options, Prosody.Options):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            bounds = field.metadata.get(BOUNDS)
            if hints[field.name] in (int, float) and (bounds is None or bounds.max is None):
                unbounded.append(f"{cls.__name__}.{field.name}")
    assert unbounded == []


@pytest.mark.parametrize("what", ["/dev/zero", "a folder", "a fifo", "too large"])
def test_a_config_must_be_a_small_regular_file(tmp_path: Path, what: str) -> None:
    """``/dev/zero`` was read without end and a FIFO hung: each is one line now, read from the open file."""
    import os

    path = {"/dev/zero": Path("/dev/zero"), "a folder": tmp_path}.get(what, tmp_path / "sera.yaml")
    if what == "a fifo":
        os.mkfifo(path)
    elif what == "too large":
        path.write_text("# " + "x" * 1_100_000 + "\n")
    why = "larger than 1 MB" if what == "too large" else "is not a regular file"
    with pytest.raises(ConfigError, match=why):
        load(path)
    done = sera("--config", str(path), "config")
    assert done.returncode != 0 and why in done.stderr and "Traceback" not in done.stderr


def test_a_models_folder_without_the_models_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"models_dir: {tmp_path / 'nowhere'}\n")
    done = sera("--config", str(path), "analyze", str(ROOT / "examples" / "voice-note.ogg"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"model file not found: {tmp_path / 'nowhere'}" in done.stderr


def test_a_plugin_enabled_but_not_installed_is_told_once_and_config_exits_as_analyze_does(tmp_path: Path) -> None:
    path = write(tmp_path, "plugins:\n  ghost:\n    enabled: true\n")
    checked = sera("-c", str(path), "config")
    analyzed = sera("-c", str(path), "analyze", str(ROOT / "examples" / "voice-note.ogg"))
    assert checked.returncode == analyzed.returncode == 1
    for done in (checked, analyzed):
        assert "sera: plugin ghost is not loaded: not installed" in done.stderr


def test_broken_yaml_names_the_file_in_yamls_own_words(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: [unclosed\n")
    with pytest.raises(ConfigError) as error:
        load(path)
    assert "<unicode string>" not in str(error.value) and str(error.value).count(str(path)) >= 2


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found: /nope/sera.yaml"):
        load("/nope/sera.yaml")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")).audio == Config().audio


def test_a_plugin_option_out_of_range_names_its_key() -> None:
    from sera.plugins.emotion_cnn import Options

    with pytest.raises(ConfigError, match=r"sera.yaml: 'plugins.emotion_cnn.unsure_below' must be between 0 and 1, not 3"):
        build(Options, {"unsure_below": 3}, "sera.yaml", prefix="plugins.emotion_cnn.")


def test_sera_config_prints_the_effective_config(tmp_path: Path) -> None:
    import yaml

    good = write(tmp_path, "workers: 3\nspeech:\n  threshold: 0.6\n")
    done = sera("config", str(good))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"# {good}: valid.")
    effective = yaml.safe_load(done.stdout)
    assert effective["workers"] == 3 and effective["speech"]["threshold"] == 0.6
    assert effective["discord"]["user_rate_per_minute"] == Config().discord.user_rate_per_minute  # defaults filled in
    assert effective["discord"]["database"] == str(load(good).database_path())  # the file it will use, not ''
    bad = write(tmp_path, "workers: 0\n")
    done = sera("-c", str(bad), "config")
    assert done.returncode == 2 and done.stderr.strip() == f"sera: {bad}: 'workers' must be between 1 and 64, not 0"


def test_the_database_lives_in_the_user_data_folder_unless_the_config_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert Config().database_path() == tmp_path / "data" / "sera" / "sera.db"  # not ./sera.db
    config = load(write(tmp_path, "discord:\n  database: db/bot.db\n"))
    assert config.database_path() == tmp_path / "db" / "bot.db"  # relative to the config file


def test_the_decoders_defaults_are_declared_once() -> None:
    from sera.audio import Limits
    from sera.config import AudioOptions

    assert AudioOptions().limits() == Limits()
