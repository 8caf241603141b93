"""Decoding with real ffmpeg: every format users send, and every way a file can be bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sera.audio import SAMPLE_RATE, Limits, decode, normalize_loudness, rms_dbfs
from sera.errors import AudioError
from tests.conftest import SAMPLE_NOTE, encode, tone

FORMATS = {
    "ogg": ["-c:a", "libopus", "-b:a", "24k"],
    "opus": ["-c:a", "libopus"],
    "mp3": ["-c:a", "libmp3lame"],
    "wav": [],
    "flac": [],
    "m4a": ["-c:a", "aac"],
    "webm": ["-c:a", "libopus"],
}


@pytest.mark.parametrize("suffix", sorted(FORMATS))
@pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
def test_every_format_decodes_to_mono_16k(tmp_path: Path, suffix: str, rate: int) -> None:
    stereo = np.stack([tone(2.0, rate, 300), tone(2.0, rate, 500)], axis=1)
    path = encode(stereo, rate, tmp_path / f"x.{suffix}", *FORMATS[suffix], channels=2)
    samples = decode(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size / SAMPLE_RATE - 2.0) < 0.1  # codecs pad a few ms
    spectrum = np.abs(np.fft.rfft(samples[4000:20000]))
    freqs = np.fft.rfftfreq(16000, 1 / SAMPLE_RATE)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]].round(-1))
    if rate > 8_000 or suffix != "ogg":
        assert peaks == [300.0, 500.0]  # both channels survive the downmix


def test_bytes_and_path_decode_the_same() -> None:
    from_path = decode(SAMPLE_NOTE)
    from_bytes = decode(SAMPLE_NOTE.read_bytes())
    np.testing.assert_array_equal(from_path, from_bytes)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (np.random.default_rng(1).bytes(20_000), "could not read this audio"),
        (b"OggS" + bytes(100), "could not read this audio"),
        (b"just some text, not audio at all\n" * 50, "could not read this audio"),
    ],
    ids=["empty", "random-bytes", "fake-ogg-header", "text"],
)
def test_bad_bytes_give_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        decode(data)


def test_truncated_ogg_is_refused_or_shortened() -> None:
    data = SAMPLE_NOTE.read_bytes()
    with pytest.raises(AudioError, match="could not read"):
        decode(data[:200])  # only the headers
    partial = decode(data[: len(data) // 2])  # cut mid-stream: ffmpeg keeps what it could read
    assert 0 < partial.size < decode(data).size


def test_size_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = encode(tone(1.0), SAMPLE_RATE, tmp_path / "a.wav")
    with pytest.raises(AudioError, match="too large"):
        decode(path, Limits(max_bytes=1000))


def test_duration_limit(tmp_path: Path) -> None:
    path = encode(tone(5.0), SAMPLE_RATE, tmp_path / "long.ogg", "-c:a", "libopus")
    with pytest.raises(AudioError, match="too long"):
        decode(path, Limits(max_seconds=3.0))
    assert decode(path, Limits(max_seconds=6.0)).size > 0


def test_hanging_decode_is_killed(tmp_path: Path) -> None:
    # A minute of audio through a filter that makes ffmpeg slow enough to overrun a tiny timeout.
    path = encode(tone(60.0, 48_000), 48_000, tmp_path / "big.flac")
    with pytest.raises(AudioError, match="took too long"):
        decode(path, Limits(timeout_seconds=0.01))


def test_missing_file() -> None:
    with pytest.raises(AudioError, match="no such audio file"):
        decode(Path("/nonexistent/voice.ogg"))


def test_what_is_not_a_file_is_named_and_never_read_without_bound(tmp_path: Path) -> None:
    """A folder, a FIFO (its open would hang) and /dev/zero (its read would never end) each get a line
    saying what they are; a file is read on its open handle, at most the limit and one byte."""
    import os

    fifo = tmp_path / "pipe.ogg"
    os.mkfifo(fifo)
    for path, said in ((tmp_path, "is a folder, not an audio file"), (fifo, "is not a file but a pipe"),
                       (Path("/dev/zero"), "is not a file but a device or socket")):  # fmt: skip
        with pytest.raises(AudioError, match=said):
            decode(path)
    grown = tmp_path / "grows.ogg"
    grown.write_bytes(b"x" * 3000)
    from sera.audio import read

    with pytest.raises(AudioError, match="too large"):
        read(grown, Limits(max_bytes=1000))


def test_loudness_normalisation_hits_target_and_caps_gain() -> None:
    quiet = tone(1.0, level=0.01)
    assert abs(rms_dbfs(normalize_loudness(quiet, -23.0)) - -23.0) < 0.1
    whisper = tone(1.0, level=1e-5)
    assert rms_dbfs(normalize_loudness(whisper, -23.0, max_gain_db=30.0)) < -60
    silence = np.zeros(100, dtype=np.float32)
    np.testing.assert_array_equal(normalize_loudness(silence, -23.0), silence)


def test_worker_processes_give_the_same_report_as_the_process_itself() -> None:
    """``worker_processes``: the note is analysed in a spawned worker with its own models, off the event
    loop, and the report is the one the process itself would give."""
    import asyncio
    import os
    from dataclasses import replace

    from sera.config import Config
    from sera.pipeline import Pipeline

    from sera.config import DiscordOptions

    in_process = Pipeline(Config())
    secret = DiscordOptions(database="postgresql://sera:pa55word@db.internal/sera")
    pooled = Pipeline(replace(Config(), workers=1, worker_processes=True, discord=secret))
    try:
        pooled.start_workers()
        worker_pid, dumpable, config = pooled.workers.submit(worker_state).result()
        report = asyncio.run(pooled.analyze_async(SAMPLE_NOTE.read_bytes(), "note.ogg"))
    finally:
        pooled.close()
    assert worker_pid != os.getpid()
    assert dumpable == 0  # /proc/<worker> is shut to other processes of its user: it holds other users' audio
    assert "pa55word" not in config and "db.internal" not in config  # it was sent only what analysis needs
    expected = in_process.analyze(SAMPLE_NOTE.read_bytes(), "note.ogg")
    in_process.close()
    assert report.to_dict() == expected.to_dict()


def worker_state() -> tuple[int, int, str]:
    """In a worker process: (its pid, whether it is dumpable, the config it was sent)."""
    import ctypes
    import os

    from sera.pipeline import _worker

    PR_GET_DUMPABLE = 3
    return os.getpid(), ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), repr(_worker[0].config)
