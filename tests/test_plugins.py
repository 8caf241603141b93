"""Plugins: discovery through real entry points, the example package, and isolation of bad plugins."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.audio import SAMPLE_RATE
from bot.config import Config
from bot.pipeline import Pipeline
from bot.registry import PluginSet
from tests.conftest import ROOT, SAMPLE_NOTE

BAD_PLUGINS = '''
import time
from bot.plugin import Analyzer, Reporter, Result

class Raises(Analyzer):
    def analyze(self, segments):
        raise RuntimeError("boom")

class Sleeps(Analyzer):
    def analyze(self, segments):
        time.sleep(10)
        return [None] * len(segments)

class Garbage(Analyzer):
    def analyze(self, segments):
        return ["not a result"] * len(segments)

class TooFew(Analyzer):
    def analyze(self, segments):
        return []

class NotJson(Analyzer):
    def analyze(self, segments):
        return [Result(float("nan"), 1.0) for _ in segments]

class BadSetup(Analyzer):
    def setup(self):
        raise OSError("cannot open my model")
    def analyze(self, segments):
        return []

class NotAPlugin:
    pass
'''

ENTRY_POINTS = {
    "raises": "Raises",
    "sleeps": "Sleeps",
    "garbage": "Garbage",
    "too_few": "TooFew",
    "not_json": "NotJson",
    "bad_setup": "BadSetup",
    "not_a_plugin": "NotAPlugin",
    "missing_module": None,
}


@pytest.fixture
def bad_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution (module + dist-info with entry points) on sys.path."""
    (tmp_path / "bad_plugins.py").write_text(BAD_PLUGINS)
    info = tmp_path / "bad_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugins\nVersion: 1.0\n")
    lines = ["[sera.plugins]"] + [
        f"{name} = bad_plugins:{cls}" if cls else f"{name} = no_such_module:Thing" for name, cls in ENTRY_POINTS.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


def test_builtins_are_found_through_entry_points() -> None:
    plugins = PluginSet(Config(), SAMPLE_RATE)
    try:
        infos = {i.name: i for i in plugins.infos}
        for name, kind in [("emotion_cnn", "analyzer"), ("prosody", "analyzer"), ("text", "reporter"), ("json", "reporter")]:
            assert infos[name].origin == "built-in"
            assert infos[name].kind == kind
            assert infos[name].status == "loaded"
    finally:
        plugins.close()


def test_third_party_plugins_are_off_until_enabled(bad_distribution: Path) -> None:
    plugins = PluginSet(Config(), SAMPLE_RATE)
    infos = {i.name: i for i in plugins.infos}
    assert infos["raises"].origin == "bad-plugins 1.0"
    assert not infos["raises"].enabled and infos["raises"].status == "disabled"
    plugins.close()


def test_broken_plugins_are_isolated_and_reported(bad_distribution: Path, speech_wav: Path, caplog) -> None:
    config = Config(plugin_timeout_seconds=3.0, plugins={name: {"enabled": True} for name in ENTRY_POINTS})
    pipeline = Pipeline(config)
    try:
        infos = {i.name: i for i in pipeline.plugins.infos}
        assert "cannot open my model" in infos["bad_setup"].status
        assert "not an Analyzer or Reporter" in infos["not_a_plugin"].status
        assert "No module named 'no_such_module'" in infos["missing_module"].status
        report = pipeline.analyze(speech_wav)
    finally:
        pipeline.close()
    # the good analyzers still report
    assert report.emotion() is not None
    assert report.outputs["prosody"].overall is not None
    notices = "\n".join(report.notices)
    for name, why in [
        ("raises", "it raised an error"),
        ("sleeps", "it took too long"),
        ("garbage", "it returned a str, not a Result"),
        ("too_few", "it gave 0 results"),
        ("not_json", "its result cannot be serialised"),
    ]:
        assert f"{name} failed ({why}" in notices
        assert name not in report.outputs
    assert "boom" not in notices  # the user sees a short notice; the operator's log has the traceback
    assert any("analyzer raises raised" in r.message and r.exc_info for r in caplog.records)


def test_options_are_checked_per_plugin(tmp_path: Path) -> None:
    config = Config(source=str(tmp_path / "sera.yaml"), plugins={"emotion_cnn": {"unsure_bellow": 0.3}})
    plugins = PluginSet(config, SAMPLE_RATE)
    info = next(i for i in plugins.infos if i.name == "emotion_cnn")
    assert "unknown key 'plugins.emotion_cnn.unsure_bellow'" in info.status
    assert next(i for i in plugins.infos if i.name == "prosody").status == "loaded"
    plugins.close()


def test_configured_but_not_installed() -> None:
    plugins = PluginSet(Config(plugins={"nonexistent": {"enabled": True}}), SAMPLE_RATE)
    assert next(i for i in plugins.infos if i.name == "nonexistent").status == "failed: not installed"
    plugins.close()


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example package installed for real (pip, no network) into a private folder."""
    target = tmp_path_factory.mktemp("site")
    source = shutil.copytree(ROOT / "examples" / "sera-plugin-example", tmp_path_factory.mktemp("src") / "pkg")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        check=True,
    )  # fmt: skip
    config = target / "sera.yaml"
    config.write_text(f"models_dir: {ROOT / 'models'}\nplugins:\n  mic_check: {{enabled: true}}\n  oneline: {{enabled: true}}\n")
    env = dict(os.environ, PYTHONPATH=f"{target}{os.pathsep}{ROOT}", SERA_CONFIG=str(config))
    return env


def sera(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=120)


def test_example_package_is_listed(example_installed: dict[str, str]) -> None:
    done = sera(example_installed, "plugins")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "sera-mic-check 0.1.0" in rows["mic_check"] and "loaded" in rows["mic_check"]
    assert "reporter" in rows["oneline"]


def test_example_analyzer_runs_in_analyze(example_installed: dict[str, str]) -> None:
    done = sera(example_installed, "analyze", "--json", str(SAMPLE_NOTE))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    mic = report["analyzers"]["mic_check"]["overall"]
    assert mic["type"] == "mic_check" and mic["verdict"] in {"ok", "clipping", "too quiet"}
    assert -60 < mic["peak_dbfs"] <= 0
    text = sera(example_installed, "analyze", str(SAMPLE_NOTE))
    assert "mic_check: mic " in text.stdout


def test_example_reporter_renders(example_installed: dict[str, str]) -> None:
    done = sera(example_installed, "analyze", "--reporter", "oneline", str(SAMPLE_NOTE))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("voice-note.ogg: ")
    assert len(done.stdout.strip().splitlines()) == 1
