"""Finding speech: Silero VAD on onnxruntime, so silence, tones, music and noise never reach the model.

An energy gate would pass a loud tone as "speech" and the emotion model would then call it "sad, 90%";
a trained voice-activity detector is the speech gate. ``models/silero_vad.onnx`` is Silero VAD v6
(MIT licence, ``models/silero_vad.LICENSE``), taken from the ``silero-vad`` wheel on PyPI.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sera.config import SpeechOptions
from sera.errors import ModelError
from sera.shipped import verify

if TYPE_CHECKING:
    import onnxruntime as ort

VAD_MODEL = "silero_vad.onnx"  # in the models folder
VAD_SAMPLE_RATE = 16_000
CHUNK = 512  # samples per VAD step at 16 kHz (32 ms), fixed by the model
CONTEXT = 64  # samples of the previous chunk the model expects in front of each one
STATE_SHAPE = (2, 1, 128)


def session_options() -> ort.SessionOptions:
    """One thread per session: sera scales by running several analyses at once, not by fanning out one.

    onnxruntime is imported here, when a model is loaded, not with the module: listing plugins or
    checking a config does not pay for it."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return options


def onnxruntime() -> types.ModuleType:
    """onnxruntime, or one line saying it is missing (a broken install), never an ImportError's traceback."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelError(f"onnxruntime cannot be imported ({exc}); reinstall it: pip install --force-reinstall onnxruntime") from None
    return ort


def inference_session(path: Path) -> ort.InferenceSession:
    """An onnxruntime session on a model file, after checking the file is the one sera shipped
    (``sera.shipped.verify``); a missing, changed or unreadable file is one ``ModelError``."""
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    verify(path)
    try:
        return onnxruntime().InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    except ModelError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise ModelError(f"cannot load model {path}: {exc}") from None


class SpeechDetector:
    """Speech segments of a 16 kHz signal. Thread-safe: each call carries its own recurrent state."""

    def __init__(self, model_path: Path, options: SpeechOptions = SpeechOptions()) -> None:
        self.options = options
        self._session = inference_session(model_path)
        self._rate = np.array(VAD_SAMPLE_RATE, dtype=np.int64)

    def segments(self, samples: np.ndarray) -> list[tuple[int, int]]:
        """Speech as (start, end) sample indices, with the hysteresis Silero recommends."""
        stream = self.stream()
        found = stream.push(samples) + stream.flush()
        return split_long(found, round(self.options.max_segment_seconds * VAD_SAMPLE_RATE))

    def stream(self, max_seconds: float | None = None) -> SpeechStream:
        """A detector for audio that arrives in pieces, as a voice-channel speaker's does."""
        return SpeechStream(self, max_seconds)

    def _step(self, chunk: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        out, state = self._session.run(None, {"input": chunk[None, :], "state": state, "sr": self._rate})
        return float(out[0, 0]), state


class SpeechStream:
    """Speech spans of one signal fed in pieces; the same rules as ``SpeechDetector.segments``.

    A span is known once ``min_silence_seconds`` of non-speech follow it, so ``push`` returns spans
    about that late. ``max_seconds`` closes a span that grows longer (a live speaker who never pauses
    must not hold an ever-growing buffer); ``flush`` closes the one still open at the end.
    """

    def __init__(self, detector: SpeechDetector, max_seconds: float | None = None) -> None:
        opts = detector.options
        self._detector = detector
        self._chunks_per_second = VAD_SAMPLE_RATE / CHUNK
        self._start_at = opts.threshold
        self._stop_below = max(opts.threshold - 0.15, 0.01)
        self._min_gap = opts.min_silence_seconds * self._chunks_per_second
        self._min_chunks = opts.min_speech_seconds * self._chunks_per_second
        self._max_chunks = max_seconds * self._chunks_per_second if max_seconds else None
        self._pad = round(opts.pad_seconds * VAD_SAMPLE_RATE)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._buffer = np.zeros(CONTEXT, dtype=np.float32)  # the model's context, then samples not yet a chunk
        self._chunk = 0  # index of the next chunk
        self._speaking = False
        self._run: list[int] | None = None  # [first, end) chunks of the span being built
        self.samples_seen = 0

    def push(self, samples: np.ndarray) -> list[tuple[int, int]]:
        """Feed the next samples; returns the spans that are now complete."""
        self.samples_seen += samples.size
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        found: list[tuple[int, int]] = []
        while self._buffer.size >= CONTEXT + CHUNK:
            probability, self._state = self._detector._step(self._buffer[: CONTEXT + CHUNK], self._state)
            self._buffer = self._buffer[CHUNK:]
            found += self._advance(probability)
        return found

    def flush(self) -> list[tuple[int, int]]:
        """The end of the signal: the last partial chunk is heard, the open span closed."""
        found: list[tuple[int, int]] = []
        if self._buffer.size > CONTEXT:
            chunk = np.zeros(CONTEXT + CHUNK, dtype=np.float32)
            chunk[: self._buffer.size] = self._buffer
            probability, self._state = self._detector._step(chunk, self._state)
            found += self._advance(probability)
        self._buffer = self._buffer[-CONTEXT:]
        return found + self._close()

    def earliest_open(self) -> int:
        """The first sample a span not yet returned may include: what a caller must still keep."""
        first = self._run[0] if self._run is not None else self._chunk
        return max(first * CHUNK - self._pad, 0)

    def _advance(self, probability: float) -> list[tuple[int, int]]:
        i = self._chunk
        self._chunk += 1
        found: list[tuple[int, int]] = []
        if not self._speaking and probability >= self._start_at:
            self._speaking = True
            if self._run is not None and i - self._run[1] < self._min_gap:
                self._run[1] = i + 1  # a short pause does not split an utterance
            else:
                found += self._close()
                self._run = [i, i + 1]
        elif self._speaking:
            if probability >= self._stop_below:
                self._run[1] = i + 1
            else:
                self._speaking = False
        if self._run is not None and not self._speaking and i + 1 - self._run[1] >= self._min_gap:
            found += self._close()  # no later speech can join this span any more
        elif self._run is not None and self._max_chunks and self._run[1] - self._run[0] >= self._max_chunks:
            found += self._close()
            if self._speaking:
                self._run = [i + 1, i + 1]
        return found

    def _close(self) -> list[tuple[int, int]]:
        run, self._run = self._run, None
        if run is None or run[1] - run[0] < self._min_chunks:
            return []
        return [(max(run[0] * CHUNK - self._pad, 0), min(run[1] * CHUNK + self._pad, self.samples_seen))]


def split_long(spans: list[tuple[int, int]], max_len: int) -> list[tuple[int, int]]:
    """Split spans longer than ``max_len`` into equal parts, so a monologue still gets a timeline."""
    out = []
    for start, end in spans:
        parts = -(-(end - start) // max_len)
        edges = np.linspace(start, end, parts + 1).round().astype(int)
        out.extend(zip(edges[:-1].tolist(), edges[1:].tolist()))
    return out
