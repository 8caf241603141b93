"""Turning whatever a user sent into mono float32 samples at one sample rate.

One function per step, as in Whisper's ``audio.py``: ``decode`` (any container ffmpeg reads, with the
size, duration, time and memory limits applied) and ``normalize_loudness``.

pydub is how sera finds ffmpeg (it honours ``AudioSegment.converter`` and the PATH), but the decode itself
runs ffmpeg directly: pydub's ``from_file`` waits on ffmpeg without a timeout, and a crafted file must not
be able to hang a worker forever.

ffmpeg parses bytes a stranger sent, so it is run as if the file were hostile:

- it opens no file: the bytes (an upload, or a file the command line read) reach it through an
  anonymous in-memory file (``memfd``), never the file system, so nothing is left on disk if the
  process is killed mid-decode; protocols are limited to ``file`` and demuxers to the containers voice
  notes come in (no playlists that name other files, no ``concat:``, no HLS, no ffconcat);
- a first, bounded ``ffprobe`` refuses what no voice note is (over ``MAX_SAMPLE_RATE``, over
  ``MAX_CHANNELS``, no audio stream) before any decoding is spent on it. It reads the stream's numbers
  as JSON fields, never ffmpeg's log, where a metadata tag can forge a stream line, and only numbers
  go into a message. Only the first audio stream is decoded, with stream probing off and at most
  ``MAX_STREAMS`` streams, so a file with a thousand tracks or huge video streams costs nothing;
- every ffmpeg and ffprobe runs inside ``sera.sandbox`` (Landlock and seccomp, whatever uid sera runs
  as): it can read only the system's programs and libraries and its own input, write nothing, open no
  socket, and see no other process; with limits on its address space, CPU time (not only wall time),
  open files and file writes (none). Where the sandbox cannot be set up, nothing is decoded
  (``SandboxUnavailable``) unless the operator opted out (``audio.confine_decoder: false``);
- the child gets a minimal environment (no Discord token), and its stderr is kept to a short tail.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydub import AudioSegment

from sera.errors import AudioError
from sera.files import NotRegular, open_regular
from sera.sandbox import PREFIX, UNCONFINED_EXIT

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # every stage after decoding works at this rate; the model metadata must agree
PCM16_SCALE = 32768  # 16-bit PCM <-> float samples in [-1, 1)
INT16_SCALE = 32_768.0

# The demuxers of the containers voice notes and audio files come in (ffmpeg's names; "matroska" also
# covers webm, "mov" also mp4/m4a/3gp). Playlists (hls), ffconcat and image or video-only formats are out.
FORMATS = ("ogg", "matroska", "webm", "mov", "mp4", "m4a", "3gp", "mp3", "wav", "w64", "flac", "aac", "aiff", "caf", "amr")
STDERR_TAIL_BYTES = 4_096  # what is kept of ffmpeg's complaints for the operator's log
CHUNK_BYTES = 1 << 16
MAX_SAMPLE_RATE = 192_000  # the highest rate audio is recorded at; a 1 MHz FLAC is a CPU bomb, not a note
MAX_CHANNELS = 8  # 7.1 surround
MAX_STREAMS = 8  # a voice note has one stream (two with a cover picture); 999 Ogg streams cost 700 MB
OPEN_FILES = 64  # ffmpeg's own descriptor limit: its input, its pipes, its libraries
SANDBOX = Path(__file__).with_name("sandbox.py")  # run as a program: it confines itself, then becomes ffmpeg


@dataclass(frozen=True)
class Limits:
    """What the pipeline accepts before it spends any work on a file."""

    max_bytes: int = 25_000_000
    max_seconds: float = 600.0
    timeout_seconds: float = 30.0
    max_memory_bytes: int = 384 << 20  # ffmpeg's address space: 266 MB is its floor, 10-minute notes fit in 320 MB
    cpu_seconds: float = 10.0  # ffmpeg's CPU time; a 10-minute note takes under 2 s
    confined: bool = True  # False only where the operator opted out of the sandbox (audio.confine_decoder)


class SandboxUnavailable(AudioError):
    """The decoder sandbox cannot be set up here, and the operator has not opted out: nothing is decoded."""

    def __init__(self, reason: str) -> None:
        super().__init__("could not read this audio: this server cannot decode safely right now (its operator has been told)")
        self.reason = reason


def ffprobe_binary() -> str:
    """The ffprobe beside that ffmpeg (or on the PATH); a clear error when there is none."""
    beside = Path(ffmpeg_binary()).with_name("ffprobe")
    found = str(beside) if beside.is_file() else shutil.which("ffprobe")
    if not found:
        raise AudioError("ffprobe is not installed (it comes with ffmpeg); install ffmpeg (e.g. `apt-get install ffmpeg`) and retry")
    return found


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

    The size limit is checked before anything is read, the stream's rate and channels before anything is
    decoded, the duration limit is enforced by ffmpeg itself (it stops reading one second past it, so a
    10-hour file costs no more than a long one), and ffmpeg is killed after ``limits.timeout_seconds``
    of wall time or ``limits.cpu_seconds`` of CPU time.
    """
    with memory_file(read(source, limits)) as (url, data, fd):
        check_stream(url, limits, data, fd)
        return _run_ffmpeg(url, limits, sample_rate, data, fd)


def read(source: bytes | str | Path, limits: Limits = Limits()) -> bytes:
    """The bytes of an upload or a file, its size checked first: a file's on the open file itself (a
    file swapped for a link or a bigger one after a check is never what is read), and no more than the
    limit and one byte is ever read (so ``/dev/zero`` or a growing file cannot fill memory)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), limits)
        return data
    path = Path(source)
    try:
        with open_regular(path) as file:
            _check_size(os.fstat(file.fileno()).st_size, limits)
            data = file.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise AudioError(f"no such audio file: {path}") from None
    except NotRegular as refused:
        if refused.kind == "folder":
            raise AudioError(f"{path} is a folder, not an audio file") from None
        raise AudioError(f"{path} is not a file but a {refused.kind}: sera reads audio files") from None
    except OSError as exc:
        raise AudioError(f"cannot read {path}: {exc.strerror}") from None
    _check_size(len(data), limits)
    return data


@contextmanager
def memory_file(data: bytes) -> Iterator[tuple[str, bytes | None, int | None]]:
    """``(url, stdin data, descriptor to pass)`` for ffmpeg: a memory-backed file, seekable (mp4/m4a keep
    their index at the end) and never on disk; where there is no memfd (not Linux), a pipe, which
    containers that need seeking cannot use."""
    if not hasattr(os, "memfd_create"):
        yield "pipe:0", data, None
        return
    fd = os.memfd_create("sera-upload", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as memory:
            memory.write(data)
        yield f"file:/proc/self/fd/{fd}", None, fd
    finally:
        os.close(fd)


def _check_size(size: int, limits: Limits) -> None:
    if size == 0:
        raise AudioError("the file is empty")
    if size > limits.max_bytes:
        raise AudioError(
            f"the file is too large ({size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB)"
        )


def _demuxing(url: str) -> list[str]:
    """The input options every ffmpeg and ffprobe run gets: only this file, only these containers, no probing."""
    protocols = "pipe" if url.startswith("pipe:") else "file"
    return ["-protocol_whitelist", protocols, "-format_whitelist", ",".join(FORMATS), "-probesize", "32",
            "-analyzeduration", "0", "-max_streams", str(MAX_STREAMS), "-i", url]  # fmt: skip


def check_stream(url: str, limits: Limits, data: bytes | None = None, fd: int | None = None) -> None:
    """Refuse what no recording is before decoding it: ffprobe (confined and bounded as ffmpeg is) gives
    the first audio stream's rate and channels as JSON numbers, which no tag in the file can forge."""
    arguments = ["-hide_banner", "-loglevel", "error", *_demuxing(url), "-select_streams", "a:0",
                 "-show_entries", "stream=sample_rate,channels", "-of", "json"]  # fmt: skip
    code, out, err = _bounded(ffprobe_binary(), arguments, limits, data, fd, 1 << 16)
    if code != 0:
        _refuse(url, code, err)
        raise AudioError("could not read this audio: it is corrupt or not an audio format ffmpeg knows")
    reason = absurd_stream(out)
    if reason:
        raise AudioError(f"could not read this audio: {reason}")


def absurd_stream(probed: bytes) -> str | None:
    """Why the stream ffprobe described (``{"streams": [{"sample_rate": "48000", "channels": 2}]}``) is no
    recording, or None. Only the parsed numbers reach the message."""
    try:
        streams = json.loads(probed)["streams"]
    except (ValueError, KeyError, TypeError):
        return "it is corrupt or not an audio format ffmpeg knows"
    if not streams:
        return "it has no audio in it"
    try:
        rate, channels = int(streams[0].get("sample_rate", 0)), int(streams[0].get("channels", 0))
    except (ValueError, TypeError):
        return "it is corrupt or not an audio format ffmpeg knows"
    if rate > MAX_SAMPLE_RATE or channels > MAX_CHANNELS:
        return (f"{rate:,} Hz with {channels} channels is no recording "
                f"(at most {MAX_SAMPLE_RATE:,} Hz and {MAX_CHANNELS} channels)")  # fmt: skip
    return None


def _run_ffmpeg(url: str, limits: Limits, sample_rate: int, data: bytes | None = None, fd: int | None = None) -> np.ndarray:
    arguments = [
        *(["-nostdin"] if data is None else []), "-hide_banner", "-nostats", "-loglevel", "error", *_demuxing(url),
        "-map", "0:a:0", "-t", f"{limits.max_seconds + 1.0:.3f}",
        "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1",
    ]  # fmt: skip
    code, out, err = _bounded(ffmpeg_binary(), arguments, limits, data, fd, round((limits.max_seconds + 2.0) * sample_rate) * 2)
    if code != 0:
        _refuse(url, code, err)
        raise AudioError("could not read this audio: it is corrupt or not an audio format ffmpeg knows")
    samples = np.frombuffer(out, dtype="<i2").astype(np.float32) / INT16_SCALE
    if samples.size == 0:
        raise AudioError("could not read this audio: it holds no sound")
    if samples.size > limits.max_seconds * sample_rate:
        raise AudioError(f"the audio is too long (the limit is {limits.max_seconds:.0f} s)")
    return samples


def _bounded(binary: str, arguments: list[str], limits: Limits, data: bytes | None, fd: int | None, max_output: int) -> tuple[int, bytes, bytes]:
    try:
        return run_bounded(arguments, limits, data=data, pass_fds=() if fd is None else (fd,), max_output=max_output, binary=binary)
    except TimeoutError:
        log.warning("%s timed out after %.0f s", Path(binary).name, limits.timeout_seconds)
        raise AudioError("could not read this audio: decoding took too long") from None


def _refuse(url: str, code: int, err: bytes) -> None:
    """Turn an ffmpeg that stopped on a limit into its own message; log the rest for the operator."""
    reason = err.decode(errors="replace").strip().splitlines()
    log.info("ffmpeg failed on %s: %s", url, reason[-1] if reason else f"exit {code}")
    if code in (-signal.SIGXCPU, -signal.SIGKILL):  # the CPU-time limit (soft, then hard)
        raise AudioError("could not read this audio: decoding took too long")
    if any("max_streams" in line or "failed to create or replace stream" in line for line in reason):  # ffmpeg says ENOMEM here too
        raise AudioError(f"could not read this audio: it holds more than {MAX_STREAMS} streams, and a voice note has one")
    if any("Cannot allocate memory" in line for line in reason):
        raise AudioError("could not read this audio: decoding it needs more memory than sera allows (audio.decode_memory_mb)")


def run_bounded(
    arguments: Sequence[str], limits: Limits, data: bytes | None = None, pass_fds: Sequence[int] = (), max_output: int = 1 << 26,
    binary: str | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ffmpeg (or ``binary``) with ``arguments`` inside the sandbox: (exit code, stdout, stderr's tail).

    ``sera.sandbox`` sets the limits (address space, CPU time, open files, no file writes), confines
    itself and becomes the program, so there is no ``preexec_fn`` (unsafe in a process with threads:
    decodes run on a worker pool). Output past ``max_output`` bytes and stderr past a short tail are
    dropped, so neither can grow without bound. Raises ``TimeoutError`` after
    ``limits.timeout_seconds`` (the program is killed first) and ``SandboxUnavailable`` where the
    sandbox cannot be set up and ``limits.confined`` holds.
    """
    if limits.confined and (reason := sandbox_refusal()):
        raise SandboxUnavailable(reason)
    process = subprocess.Popen(
        sandboxed(binary or ffmpeg_binary(), arguments, limits), stdin=subprocess.DEVNULL if data is None else subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=child_environment(), pass_fds=tuple(pass_fds), close_fds=True,
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
    if code == UNCONFINED_EXIT and err.startswith(PREFIX.encode()):
        raise SandboxUnavailable(err.decode(errors="replace").strip())
    return code, bytes(out), bytes(err)


def sandboxed(binary: str, arguments: Sequence[str], limits: Limits) -> list[str]:
    """The command that runs ``binary`` inside ``sera.sandbox`` under ``limits`` (strict unless the
    operator opted out)."""
    return [sys.executable, "-I", "-S", str(SANDBOX), "strict" if limits.confined else "lenient", str(max(limits.max_memory_bytes // 1024, 1)),
            str(max(1, round(limits.cpu_seconds))), str(OPEN_FILES), binary, *arguments]  # fmt: skip


@functools.cache
def sandbox_refusal() -> str | None:
    """Why the decoder sandbox cannot be set up on this machine, or None where it can: tried once, for
    real, around ``true``. Logged once for the operator; ``sera doctor`` shows it with the fix."""
    true = shutil.which("true", path=os.defpath) or "/bin/true"
    done = subprocess.run(sandboxed(true, [], Limits()), stdin=subprocess.DEVNULL, capture_output=True, env=child_environment())
    if done.returncode == 0:
        return None
    reason = done.stderr.decode(errors="replace").strip().removeprefix(PREFIX) or f"exit {done.returncode}"
    log.error("the decoder sandbox cannot be set up here (%s): nothing will be decoded; run `sera doctor`", reason)
    return reason


def confine_process() -> bool:
    """Make this process non-dumpable (Linux ``prctl(PR_SET_DUMPABLE, 0)``): other processes of the same
    user, ffmpeg among them, can no longer read its memory, its environment (where the token was, even
    after ``os.environ.pop``) or its open files (other users' uploads) through ``/proc/<pid>``. The bot
    calls it once it has read its token. Returns whether the platform allowed it."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    PR_SET_DUMPABLE = 4
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


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
    limits = Limits(max_bytes=1 << 30, max_seconds=3600, timeout_seconds=timeout, cpu_seconds=timeout)
    if isinstance(source, np.ndarray):
        pcm = np.clip(source * PCM16_SCALE, -PCM16_SCALE, PCM16_SCALE - 1).astype("<i2").tobytes()
        return _encode(["-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0"], bitrate, limits, pcm, None)
    with memory_file(read(source, limits)) as (url, data, fd):
        return _encode(_demuxing(url), bitrate, limits, data, fd)


def _encode(inputs: list[str], bitrate: str, limits: Limits, data: bytes | None, fd: int | None) -> bytes:
    arguments = ["-loglevel", "error", *inputs, "-map", "0:a:0", "-c:a", "libopus", "-b:a", bitrate, "-f", "ogg", "pipe:1"]
    try:
        code, out, _ = run_bounded(arguments, limits, data=data, pass_fds=() if fd is None else (fd,))
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
