"""Plugins: discovery through real entry points, the example package, and isolation of bad plugins."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sera.audio import SAMPLE_RATE
from sera.config import Config
from sera.errors import SeraError
from sera.pipeline import Pipeline
from sera.plugin import Segment
from sera.registry import PluginSet
from tests.conftest import ROOT, SAMPLE_NOTE

BAD_PLUGINS = '''
import time
from sera.plugin import Analyzer, Reporter, Result

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

class FromTheFuture(Reporter):
    api = (2, 0)
    def render(self, report):
        return "never called"

class NeedsNewerMinor(Reporter):
    api = (1, 99)
    def render(self, report):
        return "never called"

class StatesItsApi(Reporter):
    api = (1, 0)
    def render(self, report):
        return "rendered"
'''

ENTRY_POINTS = {
    "raises": "Raises",
    "sleeps": "Sleeps",
    "garbage": "Garbage",
    "too_few": "TooFew",
    "not_json": "NotJson",
    "bad_setup": "BadSetup",
    "not_a_plugin": "NotAPlugin",
    "future_api": "FromTheFuture",
    "newer_minor": "NeedsNewerMinor",
    "current_api": "StatesItsApi",
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
        for name, kind in [("emotion_whisper", "analyzer"), ("prosody", "analyzer"), ("text", "reporter"), ("json", "reporter")]:
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
        assert infos["future_api"].status == "failed: written for plugin API 2.0; this sera has 1.3"
        assert infos["newer_minor"].status == "failed: written for plugin API 1.99; this sera has 1.3"
        assert infos["current_api"].status == "loaded"
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
    assert any("plugin raises: analyze raised" in r.message and r.exc_info for r in caplog.records)


def test_options_are_checked_per_plugin(tmp_path: Path) -> None:
    config = Config(source=str(tmp_path / "sera.yaml"), plugins={"emotion_whisper": {"unsure_bellow": 0.3}})
    plugins = PluginSet(config, SAMPLE_RATE)
    info = next(i for i in plugins.infos if i.name == "emotion_whisper")
    assert "unknown key 'plugins.emotion_whisper.unsure_bellow'" in info.status
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
    return subprocess.run([sys.executable, "-m", "sera", *args], env=env, capture_output=True, text=True, timeout=120)


def test_example_package_is_listed(example_installed: dict[str, str]) -> None:
    done = sera(example_installed, "plugins", "--check")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.split("\n\n")[0].splitlines()[1:]}
    assert "sera-mic-check 0.1.0" in rows["mic_check"] and "loaded" in rows["mic_check"]
    assert "reporter" in rows["oneline"]


@pytest.mark.slow
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


HANGS = '''
import time
from sera.plugin import Analyzer, Reporter

class Hangs(Analyzer):
    def analyze(self, segments):
        time.sleep(60)

class HangsEverywhere(Reporter):
    def render(self, report):
        time.sleep(60)
    def render_session(self, summary):
        time.sleep(60)
    def session_started(self, session):
        time.sleep(60)
    def forget_user(self, user_id):
        time.sleep(60)
    def teardown(self):
        time.sleep(60)
'''


def install(folder: Path, monkeypatch: pytest.MonkeyPatch, dist: str, module: str, source: str | None, entry_points: dict[str, str]) -> None:
    """A distribution ``dist`` on sys.path, with ``module`` (unless None) and these sera.plugins entry points."""
    folder.mkdir(exist_ok=True)
    if source is not None:
        (folder / f"{module}.py").write_text(source)
    info = folder / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[sera.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()


def test_a_hung_analyzer_costs_only_itself_and_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, speech_wav: Path) -> None:
    install(tmp_path / "site", monkeypatch, "hang-plugins", "hang_plugins", HANGS, {"hangs": "hang_plugins:Hangs"})
    config = Config(workers=1, plugin_timeout_seconds=0.5, plugin_max_timeouts=2, plugins={"hangs": {"enabled": True}})
    pipeline = Pipeline(config, PluginSet(config, SAMPLE_RATE, only={"hangs", "emotion_whisper"}))
    try:
        notices = []
        for _ in range(5):  # more hung calls than the old shared pool had threads (workers * 2)
            report = pipeline.analyze(speech_wav)
            assert report.emotion() is not None  # the built-in model answers every time
            notices += report.notices
        assert notices[:2] == ["hangs failed (it took too long); its results are left out"] * 2
        assert notices[2:] == []  # stopped: no longer called, so no note waits on it
        info = next(i for i in pipeline.plugins.infos if i.name == "hangs")
        assert info.status == "stopped after 2 calls that took longer than 0.5 s"
        assert [f.name for f in pipeline.plugins.failures()] == ["hangs"]
        assert [a.name for a in pipeline.plugins.analyzers] == ["emotion_whisper"]
    finally:
        pipeline.close()


def test_hung_calls_do_not_pile_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While as many calls as the plugin may run are hung, the next one fails at once, holding nothing."""
    from sera.registry import Guard, PluginFailure

    guard = Guard("slow", timeout=0.2, max_timeouts=10, concurrency=2)
    release = threading.Event()
    for _ in range(2):
        with pytest.raises(PluginFailure, match="took too long"):
            guard.call("analyze", release.wait)
    started = time.monotonic()
    with pytest.raises(PluginFailure, match="still busy"):
        guard.call("analyze", release.wait)
    assert time.monotonic() - started < 0.1
    release.set()
    deadline = time.monotonic() + 5
    while guard.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guard.call("analyze", lambda: 42) == 42  # once the hung calls return, it is called again


def test_every_hook_has_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sera.summary import SessionInfo, summarize

    install(tmp_path / "site", monkeypatch, "hang-plugins", "hang_plugins", HANGS, {"hangs_everywhere": "hang_plugins:HangsEverywhere"})
    config = Config(plugin_timeout_seconds=0.3, plugin_max_timeouts=10, plugins={"hangs_everywhere": {"enabled": True}})
    plugins = PluginSet(config, SAMPLE_RATE, only={"hangs_everywhere", "text"})
    info = SessionInfo(1, "guild", "room", "alice", time.time())
    started = time.monotonic()
    plugins.notify("session_started", info)
    rendered = plugins.render_session(summarize(info, "ended", 10.0, []))
    assert "text" in rendered and "hangs_everywhere" not in rendered
    assert plugins.forget_user("alice") == ({}, ["hangs_everywhere"])  # named, so /forget says it and tries again
    with pytest.raises(SeraError, match="the hangs_everywhere reporter failed \\(it took too long\\)"):
        plugins.render("hangs_everywhere", None)
    plugins.close()
    assert time.monotonic() - started < 4 * 0.3 + 1.0  # five hooks, each cut at the timeout


def test_shutdown_is_not_held_up_by_a_hung_plugin(tmp_path: Path) -> None:
    (tmp_path / "hang_plugins.py").write_text(HANGS)
    script = f"""
import sys, time
sys.path.insert(0, {str(tmp_path)!r})
from sera.config import Config
from sera.pipeline import Pipeline
from sera.plugin import Segment
from sera.plugin import PluginContext, Segment
from sera.registry import Guard, PluginFailure, PluginInfo, PluginSet
import hang_plugins, numpy as np
config = Config(workers=1, plugin_timeout_seconds=0.5)
plugins = PluginSet(config, 16000, only=set())
plugin = hang_plugins.Hangs(None, PluginContext(config.models_dir, 16000))
plugins.infos.append(PluginInfo("hangs", "test", "analyzer", True, plugin=plugin, guard=Guard("hangs", 0.5, 3, 2)))
pipeline = Pipeline(config, plugins)
outputs, notices = pipeline.analyze_segments([Segment(np.zeros(16000, np.float32), 16000, 0.0, 1.0)])
print(notices)
pipeline.close()
"""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert "it took too long" in done.stdout
    assert time.monotonic() - started < 30  # the hung call sleeps 60 s; the process does not wait for it


def test_disabled_plugins_are_never_imported(bad_distribution: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "bad_plugins", raising=False)
    plugins = PluginSet(Config(), SAMPLE_RATE, only={"raises", "sleeps", "text"})
    assert "bad_plugins" not in sys.modules
    assert {i.name: i.status for i in plugins.infos}["raises"] == "disabled"
    plugins.close()


def test_built_in_is_decided_by_the_distribution_and_name_clashes_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path / "a", monkeypatch, "evil-plugins", "evil_plugins", BAD_PLUGINS,
            {"text": "evil_plugins:Raises", "sneaky": "sera.plugins.text_report:TextReporter", "twice": "evil_plugins:Raises"})  # fmt: skip
    install(tmp_path / "b", monkeypatch, "other-plugins", "other_plugins", None, {"twice": "evil_plugins:Raises"})
    plugins = PluginSet(Config(plugins={"twice": {"enabled": True}}), SAMPLE_RATE, only={"text", "sneaky", "twice"})
    try:
        rows = [(i.name, i.origin, i.status) for i in plugins.infos]
        assert ("text", "built-in", "loaded") in rows
        assert ("text", "evil-plugins 1.0", "failed: name clash: 'text' is a built-in plugin's name; choose another name in evil-plugins 1.0") in rows
        assert type(plugins.reporter("text")).__module__ == "sera.plugins.text_report"
        # a module path under sera.plugins. does not make a third party's entry point built-in: it is a
        # second copy of a built-in (its model loaded twice, under another name), refused
        assert ("sneaky", "evil-plugins 1.0", "failed: it names a built-in plugin's class (sera.plugins.text_report:TextReporter): "
                "enable the built-in itself (a second copy would load its model twice)") in rows
        twice = [status for name, _, status in rows if name == "twice"]
        assert len(twice) == 2 and all("name clash" in s and "neither is loaded" in s for s in twice)
    finally:
        plugins.close()


def test_a_dist_info_in_the_current_folder_makes_no_built_in(tmp_path: Path) -> None:
    """``python -m sera`` in a folder holding a planted ``sera_voice-*.dist-info``: its entry points are
    not read as sera's own (nor as installed at all), and its module never runs."""
    marker = tmp_path / "ran"
    (tmp_path / "planted.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nfrom sera.plugins.text_report import TextReporter as Evil\n")
    info = tmp_path / "sera_voice-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sera-voice\nVersion: 9.9\n")
    (info / "entry_points.txt").write_text("[sera.plugins]\ntext = planted:Evil\nprosody = planted:Evil\n")
    done = subprocess.run([sys.executable, "-m", "sera", "plugins", "--check"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["text", "reporter", "built-in", "yes", "loaded"] in [row[:5] for row in rows]
    assert "9.9" not in done.stdout and not marker.exists()


@pytest.mark.parametrize(("requires", "status"), [
    ("sera-voice>=99", "failed: compat-plugins 1.0 needs sera-voice>=99; this is sera-voice 0.1.0"),
    ("sera-voice>=0.1,<1", "loaded"),
    ("numpy", "loaded"),  # no requirement on sera stated: nothing to check
])  # fmt: skip
def test_a_plugin_built_for_another_sera_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, requires: str, status: str
) -> None:
    (tmp_path / "compat_plugins.py").write_text("from sera.plugin import Reporter\n\nclass Quiet(Reporter):\n    def render(self, report):\n        return ''\n")
    info = tmp_path / "compat_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: compat-plugins\nVersion: 1.0\nRequires-Dist: {requires}\n")
    (info / "entry_points.txt").write_text("[sera.plugins]\nquiet = compat_plugins:Quiet\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    plugins = PluginSet(Config(plugins={"quiet": {"enabled": True}}), SAMPLE_RATE, only={"quiet"})
    try:
        assert next(i for i in plugins.infos if i.name == "quiet").status == status
    finally:
        plugins.close()


@pytest.mark.slow
def test_a_new_plugin_from_the_template_installs_and_runs(tmp_path: Path) -> None:
    """``sera plugins new NAME``: the package installs (pip, for real) and its analyzer shows up in
    ``sera analyze`` with the config it ships; a name that is not an identifier is refused."""
    from tests.conftest import sera as cli

    done = cli("plugins", "new", "loud_meter", "--dir", str(tmp_path))
    assert done.returncode == 0 and f"pip install -e {tmp_path}/loud_meter" in done.stdout
    again = cli("plugins", "new", "loud_meter", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert cli("plugins", "new", "Bad-Name", "--dir", str(tmp_path)).returncode == 2
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(tmp_path / "loud_meter")], check=True)  # fmt: skip
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{ROOT}", SERA_CONFIG=str(tmp_path / "loud_meter" / "sera.yaml"))
    analyzed = sera(env, "analyze", "--json", str(SAMPLE_NOTE))
    assert analyzed.returncode == 0, analyzed.stderr
    loudness = json.loads(analyzed.stdout)["analyzers"]["loud_meter"]["overall"]
    assert loudness["type"] == "loud_meter" and -60 < loudness["dbfs"] < 0
    listed = sera(env, "plugins", "--check")
    assert "sera-loud-meter 0.1.0" in listed.stdout and "loaded" in listed.stdout


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("none", "YAML or Python reads it as something else"),
        ("true", "YAML or Python reads it as something else"),
        ("false", "YAML or Python reads it as something else"),
        ("yes", "YAML or Python reads it as something else"),
        ("class", "YAML or Python reads it as something else"),
        ("prosody", "a plugin called 'prosody' is already installed"),
        ("emotion_cnn", "a plugin called 'emotion_cnn' is already installed"),
        ("a" * 300, "at most 40 characters"),
        ("Bad-Name", "lower case letters, digits and _"),
        ("voice", "a package named sera-voice, which is already installed"),  # its install would uninstall sera
        ("segment_loudness", "the plugin's class SegmentLoudness, which the template already uses"),
        ("options", "the plugin's class Options, which the template already uses"),
    ],
)
def test_plugins_new_refuses_a_name_that_would_make_a_broken_package(tmp_path: Path, name: str, why: str) -> None:
    """Each of these once wrote a package that could not be installed, loaded or configured (``class
    None``, a YAML key read as null, a built-in's name refused at load time) or ended in a traceback."""
    from tests.conftest import sera as cli

    done = cli("plugins", "new", name, "--dir", str(tmp_path))
    assert done.returncode == 2 and why in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_plugin_for_another_api_is_refused_before_its_code_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where its installed source states ``api``, it is read there: the module's import-time code (here,
    touching a file) never runs. And a class that names itself after a built-in answers under its own
    entry point's name, never the built-in's."""
    marker = tmp_path / "ran"
    source = (f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nfrom sera.plugin import Analyzer, Reporter\n\n"
              "class Future(Reporter):\n    api = (2, 0)\n    def render(self, report):\n        return ''\n\n"
              "class Computed(Reporter):\n    api = tuple([2, 0])\n    def render(self, report):\n        return ''\n\n"
              "class Impostor(Analyzer):\n    name = 'emotion_whisper'\n    def analyze(self, segments):\n        return [None] * len(segments)\n")
    (tmp_path / "future_plugins.py").write_text(source)
    info = tmp_path / "future_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: future-plugins\nVersion: 1.0\n")
    (info / "RECORD").write_text("future_plugins.py,,\nfuture_plugins-1.0.dist-info/METADATA,,\n")
    (info / "entry_points.txt").write_text("[sera.plugins]\nfuture = future_plugins:Future\nimpostor = future_plugins:Impostor\n"
                                           "computed = future_plugins:Computed\n")  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "future_plugins", raising=False)
    importlib.invalidate_caches()
    config = Config(plugins={"future": {"enabled": True}, "computed": {"enabled": True}})
    plugins = PluginSet(config, SAMPLE_RATE, only={"future", "computed"})
    try:
        status = {info.name: info.status for info in plugins.infos}
        assert status["future"] == "failed: written for plugin API 2.0; this sera has 1.3"
        assert status["computed"] == "failed: its api attribute must be written as (major, minor), not 'tuple([2, 0])'"
        assert not marker.exists() and "future_plugins" not in sys.modules
    finally:
        plugins.close()
    config = Config(plugins={"impostor": {"enabled": True}})
    plugins = PluginSet(config, SAMPLE_RATE, only={"impostor", "emotion_whisper"})
    pipeline = Pipeline(config, plugins)
    try:
        outputs, _ = pipeline.analyze_segments([Segment(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, 0.0, 1.0)])
        assert {a.name for a in plugins.analyzers} == {"impostor", "emotion_whisper"}
        assert outputs["impostor"].segments == [None] and outputs["emotion_whisper"].segments[0] is not None
    finally:
        pipeline.close()


def test_a_built_in_whose_optional_dependency_is_missing_is_not_installed_not_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without matplotlib (a plain `pip install sera-voice`), the chart reporter is "not installed" with
    the command that installs it: no error, no traceback, no line on every `sera analyze`."""
    import importlib.util

    from sera import registry
    from tests.conftest import sera as cli

    real = importlib.util.find_spec
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    plugins = PluginSet(Config(), SAMPLE_RATE, only={"chart"})
    try:
        (info,) = plugins.infos
        assert info.status == "not installed: needs matplotlib (pip install 'sera-voice[chart]')"
        assert plugins.failures() == [] and info.plugin is None
        with pytest.raises(SeraError, match="reporter 'chart' is not available \\(not installed: needs matplotlib"):
            plugins.render("chart", None)
    finally:
        plugins.close()
    done = cli("analyze", str(SAMPLE_NOTE))
    assert done.returncode == 0 and done.stderr == ""
    listed = cli("plugins", "--check")
    assert listed.returncode == 0 and "not installed: needs matplotlib (pip install 'sera-voice[chart]')" in listed.stdout
