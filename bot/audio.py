"""Turning whatever a user sent into mono float32 samples at one sample rate.

One function per step, as in Whisper's ``audio.py``: ``decode`` (any container ffmpeg reads, with the
size, duration, time and memory limits applied) and ``normalize_loudness``.

pydub is how sera finds ffmpeg (it honours ``AudioSegment.converter`` and the PATH), but the decode itself
runs ffmpeg directly: pydub's ``from_file`` waits on ffmpeg without a timeout, and a crafted file must not
be able to hang a worker forever.

ffmpeg parses bytes a stranger sent, so it is run as if the file were hostile:

- only the file itself may be read: protocols are limited to ``file`` (no playlists that name other
  files, no ``concat:``), demuxers to the containers voice notes come in (no HLS, no ffconcat), and a
  path is passed as ``file:/absolute/path`` so that no part of its name is read as a protocol;
- only the first audio stream is decoded, and stream probing stops at once, so a file with a dozen
  huge video streams costs nothing; an address-space limit bounds whatever memory ffmpeg could still
  be driven to take;
- the child gets a minimal environment (no Discord token), and its stderr is kept to a short tail;
- uploaded bytes go to ffmpeg through an anonymous in-memory file (``memfd``), never through the
  file system, so nothing is left on disk if the process is killed mid-decode.
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydub import AudioSegment

from sera.errors import AudioError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # every stage after decoding works at this rate; the model metadata must agree
PCM16_SCALE = 32768  # 16-bit PCM <-> float samples in [-1, 1)
INT16_SCALE = 32_768.0

# The demuxers of the containers voice notes and audio files come in (ffmpeg's names; "matroska" also
# covers webm, "mov" also mp4/m4a/3gp). Playlists (hls), ffconcat and image or video-only formats are out.
FORMATS = ("ogg", "matroska", "webm", "mov", "mp4", "m4a", "3gp", "mp3", "wav", "w64", "flac", "aac", "aiff", "caf", "amr")
STDERR_TAIL_BYTES = 4_096  # what is kept of ffmpeg's complaints for the operator's log
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class Limits:
    """What the pipeline accepts before it spends any work on a file."""

    max_bytes: int = 25_000_000
    max_seconds: float = 600.0
    timeout_seconds: float = 30.0
    max_memory_bytes: int = 1 << 30  # ffmpeg's address space; a 10-minute note needs well under half of it


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


def child_environment() -> dict[str, str]:
    """All an ffmpeg child needs: where programs are. No token, no user's variables."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}


def decode(source: bytes | str | Path, limits: Limits = Limits(), sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio ffmpeg reads into mono float32 in [-1, 1] at ``sample_rate``.

    The size limit is checked before ffmpeg starts, the duration limit is enforced by ffmpeg itself
    (it stops reading one second past it, so a 10-hour file costs no more than a long one), and ffmpeg
    is killed after ``limits.timeout_seconds``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), limits)
        return _decode_bytes(data, limits, sample_rate)
    path = Path(source)
    if not path.is_file():
        raise AudioError(f"no such audio file: {path}")
    _check_size(path.stat().st_size, limits)
    return _run_ffmpeg(f"file:{path.resolve()}", limits, sample_rate)


def _decode_bytes(data: bytes, limits: Limits, sample_rate: int) -> np.ndarray:
    """Bytes through a memory-backed file: seekable (mp4/m4a keep their index at the end), never on disk."""
    if not hasattr(os, "memfd_create"):  # not Linux: a pipe, which containers that need seeking cannot use
        return _run_ffmpeg("pipe:0", limits, sample_rate, data=data)
    fd = os.memfd_create("sera-upload", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as memory:
            memory.write(data)
        return _run_ffmpeg(f"file:/proc/self/fd/{fd}", limits, sample_rate, keep_fd=fd)
    finally:
        os.close(fd)


def _check_size(size: int, limits: Limits) -> None:
    if size == 0:
        raise AudioError("the file is empty")
    if size > limits.max_bytes:
        raise AudioError(
            f"the file is too large ({size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB)"
        )


def _run_ffmpeg(url: str, limits: Limits, sample_rate: int, data: bytes | None = None, keep_fd: int | None = None) -> np.ndarray:
    protocols = "pipe" if url.startswith("pipe:") else "file"
    arguments = [
        *(["-nostdin"] if data is None else []), "-hide_banner", "-loglevel", "error",
        "-protocol_whitelist", protocols, "-format_whitelist", ",".join(FORMATS),
        "-probesize", "32", "-analyzeduration", "0",
        "-i", url,
        "-map", "0:a:0", "-t", f"{limits.max_seconds + 1.0:.3f}",
        "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1",
    ]  # fmt: skip
    try:
        code, out, err = run_bounded(
            arguments, limits, data=data, pass_fds=() if keep_fd is None else (keep_fd,),
            max_output=round((limits.max_seconds + 2.0) * sample_rate) * 2,
        )  # fmt: skip
    except TimeoutError:
        log.warning("ffmpeg timed out after %.0f s on %s", limits.timeout_seconds, url)
        raise AudioError("could not read this audio: decoding took too long") from None
    if code != 0:
        reason = err.decode(errors="replace").strip().splitlines()
        log.info("ffmpeg failed on %s: %s", url, reason[-1] if reason else f"exit {code}")
        raise AudioError("could not read this audio: it is corrupt or not an audio format ffmpeg knows")
    samples = np.frombuffer(out, dtype="<i2").astype(np.float32) / INT16_SCALE
    if samples.size == 0:
        raise AudioError("could not read this audio: it holds no sound")
    if samples.size > limits.max_seconds * sample_rate:
        raise AudioError(f"the audio is too long (the limit is {limits.max_seconds:.0f} s)")
    return samples


def run_bounded(
    arguments: Sequence[str], limits: Limits, data: bytes | None = None, pass_fds: Sequence[int] = (), max_output: int = 1 << 26
) -> tuple[int, bytes, bytes]:
    """Run ffmpeg with ``arguments`` under the memory and time limits: (exit code, stdout, stderr's tail).

    The address-space limit is set by ``sh``'s ``ulimit`` just before ffmpeg replaces it: unlike a
    ``preexec_fn``, that is safe in a process with threads (decodes run on a worker pool). Output past
    ``max_output`` bytes and stderr past a short tail are dropped, so neither can grow without bound.
    Raises ``TimeoutError`` after ``limits.timeout_seconds`` (ffmpeg is killed first).
    """
    kib = max(limits.max_memory_bytes // 1024, 1)
    # Where the hard limit is already lower than ours, the soft limit goes to it (lower still protects).
    limit = 'ulimit -v "$0" 2>/dev/null || ulimit -v "$(ulimit -H -v)"; exec "$@"'
    command = ["/bin/sh", "-c", limit, str(kib), ffmpeg_binary(), *arguments]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL if data is None else subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=child_environment(), pass_fds=tuple(pass_fds),
    )  # fmt: skip
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + limits.timeout_seconds
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, out)
        selector.register(process.stderr, selectors.EVENT_READ, err)
        if data is not None:
            os.set_blocking(process.stdin.fileno(), False)
            selector.register(process.stdin, selectors.EVENT_WRITE, memoryview(data))
        try:
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                for key, _ in selector.select(left):
                    if key.fileobj is process.stdin:
                        _feed(selector, key)
                        continue
                    chunk = os.read(key.fd, CHUNK_BYTES)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    buffer: bytearray = key.data
                    buffer += chunk
                    if buffer is err and len(err) > STDERR_TAIL_BYTES:
                        del err[: len(err) - STDERR_TAIL_BYTES]
                    elif buffer is out and len(out) > max_output:
                        del out[max_output:]
            code = process.wait(max(deadline - time.monotonic(), 0.001))
        except (TimeoutError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
            raise TimeoutError from None
        finally:
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
    return code, bytes(out), bytes(err)


def _feed(selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
    """Write the next piece of stdin; close it when all is written or ffmpeg stopped reading."""
    left: memoryview = key.data
    try:
        written = os.write(key.fd, left[:CHUNK_BYTES])
    except BrokenPipeError:
        written = len(left)
    left = left[written:]
    if left:
        selector.modify(key.fileobj, selectors.EVENT_WRITE, left)
    else:
        selector.unregister(key.fileobj)
        key.fileobj.close()


def encode_opus(source: np.ndarray | Path, bitrate: str, sample_rate: int = SAMPLE_RATE, timeout: float = 60.0) -> bytes:
    """``source`` (samples at ``sample_rate``, or an audio file) as a voice note would arrive: Opus in Ogg.

    Training uses it to hear what Discord users send; ``sera evaluate --opus`` to measure it.
    """
    if isinstance(source, np.ndarray):
        data = np.clip(source * PCM16_SCALE, -PCM16_SCALE, PCM16_SCALE - 1).astype("<i2").tobytes()
        inputs = ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0"]
    else:
        data, inputs = None, ["-i", f"file:{Path(source).resolve()}"]
    arguments = ["-loglevel", "error", *inputs, "-c:a", "libopus", "-b:a", bitrate, "-f", "ogg", "pipe:1"]
    try:
        code, out, _ = run_bounded(arguments, Limits(timeout_seconds=timeout), data=data)
    except TimeoutError:
        raise AudioError("could not encode it as Opus: ffmpeg took too long") from None
    if code != 0:
        raise AudioError("could not encode it as Opus")
    return out


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
