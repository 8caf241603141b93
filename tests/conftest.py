"""Audio the tests make themselves: numpy tones and noise, espeak-ng speech, encoded by real ffmpeg."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from sera.adapters.cli import main
from sera.config import Config
from sera.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
# Tests of PNG charts need the [chart] extra (./setup.sh installs it); without it they skip, saying so.
needs_chart = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                 reason="needs the [chart] extra (matplotlib): pip install -e '.[chart]' (./setup.sh installs it)")  # fmt: skip
SAMPLE_NOTE = ROOT / "examples" / "voice-note.ogg"
BASELINE_FROM = 5  # plugins.emotion_whisper.baseline_from in the tests' pipeline and configs
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (training runs, real corpora), as CI does")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: 8 s or more on a 2-core machine (a training run, a whole corpus, a long live session); run with --slow")
    # Tests never write into the user's home: sera's default database, status and cache folders (and
    # those of every library that follows the XDG variables) go to a folder of this run.
    home = Path(tempfile.mkdtemp(prefix="sera-tests-home-"))
    for variable in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        os.environ[variable] = str(home / variable.lower())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The working loop leaves out what takes a minute; CI (``.ci/run``) and the README's test command
    run everything, and every left-out test is listed as skipped with the way to run it."""
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def sera(*args: str) -> subprocess.CompletedProcess:
    """``sera ARGS`` in this interpreter: its exit code and what it printed, as a run would give them,
    without paying for a fresh interpreter loading librosa and the models. A few tests still run the
    installed entry point (``python -m sera``), where the process itself is what they check."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
    except SystemExit as exit:  # argparse refusing the command line
        code = exit.code if isinstance(exit.code, int) else 2
    finally:
        root.handlers[:], root.level = handlers, level
    return subprocess.CompletedProcess(["sera", *args], code, out.getvalue(), err.getvalue())


async def eventually(check: Callable[[], object], seconds: float) -> None:
    """Wait, polling every 20 ms for at most ``seconds``' worth of polls, until ``check()`` holds: the
    work runs on other threads, so tests wait for what they check, never a fixed time. Raises when it
    never holds."""
    for _ in range(round(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still not true after {seconds} s: {check}")


def encode(samples: np.ndarray, rate: int, path: Path, *codec: str, channels: int = 1) -> Path:
    """Write float samples (``(n,)`` or ``(n, channels)``) to ``path`` with real ffmpeg."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "s16le", "-ar", str(rate), "-ac", str(channels), "-i", "-", *codec, str(path)],
        input=pcm, check=True,
    )  # fmt: skip
    return path


def tone(seconds: float, rate: int = 16_000, freq: float = 440.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, rate: int = 16_000, level: float = 0.1, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def say(text: str, path: Path, voice: str = "en-us", speed: int = 150) -> Path:
    """Real synthetic speech from espeak-ng (installed by .ci/run)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed; .ci/run installs it (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
    return path


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About three seconds of espeak-ng speech, 22.05 kHz mono WAV."""
    return say("Kids are talking by the door, and dogs are sitting by the door.", tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    """One pipeline for the session, on the shipped models and built-in plugins, a personal baseline used
    from 5 clips on (``baseline_from``: the shipped model's own choice is none, and the tests exercise
    the baseline's whole road)."""
    p = Pipeline(Config(plugins={"emotion_whisper": {"baseline_from": BASELINE_FROM}}))
    yield p
    p.close()
