"""Turning whatever a user sent into mono float32 samples at one sample rate.

One function per step, as in Whisper's ``audio.py``: ``decode`` (any container ffmpeg reads, with the
size, duration and time limits applied) and ``normalize_loudness``.

pydub is how sera finds ffmpeg (it honours ``AudioSegment.converter`` and the PATH), but the decode itself
runs ffmpeg directly: pydub's ``from_file`` waits on ffmpeg without a timeout, and a crafted file must not
be able to hang a worker forever.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydub import AudioSegment

from bot.errors import AudioError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # every stage after decoding works at this rate; the model metadata must agree
INT16_SCALE = 32_768.0


@dataclass(frozen=True)
class Limits:
    """What the pipeline accepts before it spends any work on a file."""

    max_bytes: int = 25_000_000
    max_seconds: float = 600.0
    timeout_seconds: float = 30.0


def ffmpeg_binary() -> str:
    """The ffmpeg that pydub would use; a clear error when there is none."""
    converter = AudioSegment.converter
    if os.path.sep in converter and Path(converter).is_file():
        return converter
    from pydub.utils import which

    found = which(converter)
    if not found:
        raise AudioError("ffmpeg is not installed; install it (e.g. `apt-get install ffmpeg`) and retry")
    return found


def decode(source: bytes | str | Path, limits: Limits = Limits(), sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio ffmpeg reads into mono float32 in [-1, 1] at ``sample_rate``.

    The size limit is checked before ffmpeg starts, the duration limit is enforced by ffmpeg itself
    (it stops reading one second past it, so a 10-hour file costs no more than a long one), and ffmpeg
    is killed after ``limits.timeout_seconds``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), limits)
        with tempfile.NamedTemporaryFile(prefix="sera-", suffix=".audio") as tmp:
            # A file rather than a pipe: mp4/m4a keep their index at the end and need seeking.
            tmp.write(data)
            tmp.flush()
            return _run_ffmpeg(Path(tmp.name), limits, sample_rate)
    path = Path(source)
    if not path.is_file():
        raise AudioError(f"no such audio file: {path}")
    _check_size(path.stat().st_size, limits)
    return _run_ffmpeg(path, limits, sample_rate)


def _check_size(size: int, limits: Limits) -> None:
    if size == 0:
        raise AudioError("the file is empty")
    if size > limits.max_bytes:
        raise AudioError(
            f"the file is too large ({size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB)"
        )


def _run_ffmpeg(path: Path, limits: Limits, sample_rate: int) -> np.ndarray:
    command = [
        ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path),
        "-t", f"{limits.max_seconds + 1.0:.3f}",
        "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le", "-",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, timeout=limits.timeout_seconds, check=False)
    except subprocess.TimeoutExpired:
        log.warning("ffmpeg timed out after %.0f s on %s", limits.timeout_seconds, path)
        raise AudioError("could not read this audio: decoding took too long") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        log.info("ffmpeg failed on %s: %s", path, reason[-1] if reason else f"exit {done.returncode}")
        raise AudioError("could not read this audio: it is corrupt or not an audio format ffmpeg knows")
    samples = np.frombuffer(done.stdout, dtype="<i2").astype(np.float32) / INT16_SCALE
    if samples.size == 0:
        raise AudioError("could not read this audio: it holds no sound")
    if samples.size > limits.max_seconds * sample_rate:
        raise AudioError(f"the audio is too long (the limit is {limits.max_seconds:.0f} s)")
    return samples


def encode_opus(source: np.ndarray | Path, bitrate: str, sample_rate: int = SAMPLE_RATE, timeout: float = 60.0) -> bytes:
    """``source`` (samples at ``sample_rate``, or an audio file) as a voice note would arrive: Opus in Ogg.

    Training uses it to hear what Discord users send; ``sera evaluate --opus`` to measure it.
    """
    if isinstance(source, np.ndarray):
        data = (np.clip(source, -1, 1) * 32767).astype("<i2").tobytes()
        inputs = ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "-"]
    else:
        data, inputs = None, ["-i", str(source)]
    command = [ffmpeg_binary(), "-nostdin", "-loglevel", "error", *inputs, "-c:a", "libopus", "-b:a", bitrate, "-f", "ogg", "-"]
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError("could not encode it as Opus: ffmpeg took too long") from None
    if done.returncode != 0:
        raise AudioError("could not encode it as Opus")
    return done.stdout


def rms_dbfs(samples: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def normalize_loudness(samples: np.ndarray, target_dbfs: float, max_gain_db: float = 30.0) -> np.ndarray:
    """Scale speech to a fixed RMS level so that the model hears tone of voice, not microphone gain.

    The gain is capped so that near-silence is not blown up into loud noise, and the result is clipped
    to [-1, 1] as a decoded file would be.
    """
    level = rms_dbfs(samples)
    if not np.isfinite(level):
        return samples
    gain_db = min(target_dbfs - level, max_gain_db)
    return np.clip(samples * np.float32(10.0 ** (gain_db / 20.0)), -1.0, 1.0).astype(np.float32)
