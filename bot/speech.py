"""Finding speech: Silero VAD on onnxruntime, so silence, tones, music and noise never reach the model.

An energy gate would pass a loud tone as "speech" and the emotion model would then call it "sad, 90%";
a trained voice-activity detector is the speech gate. ``models/silero_vad.onnx`` is Silero VAD v6
(MIT licence, ``models/silero_vad.LICENSE``), taken from the ``silero-vad`` wheel on PyPI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

VAD_SAMPLE_RATE = 16_000
CHUNK = 512  # samples per VAD step at 16 kHz (32 ms), fixed by the model
CONTEXT = 64  # samples of the previous chunk the model expects in front of each one
STATE_SHAPE = (2, 1, 128)


@dataclass(frozen=True)
class SpeechOptions:
    """How speech is cut into segments (the ``speech:`` section of the config)."""

    threshold: float = 0.5  # a chunk above this starts speech
    min_speech_seconds: float = 0.25  # shorter bursts are clicks, not speech
    min_silence_seconds: float = 0.3  # shorter pauses do not split an utterance
    pad_seconds: float = 0.1  # kept either side so onsets and endings are not clipped
    max_segment_seconds: float = 6.0  # longer utterances are split into equal parts for the timeline


def session_options() -> ort.SessionOptions:
    """One thread per session: sera scales by running several analyses at once, not by fanning out one."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return options


class SpeechDetector:
    """Speech segments of a 16 kHz signal. Thread-safe: each call carries its own recurrent state."""

    def __init__(self, model_path: Path, options: SpeechOptions = SpeechOptions()) -> None:
        self.options = options
        self._session = ort.InferenceSession(str(model_path), session_options(), providers=["CPUExecutionProvider"])
        self._rate = np.array(VAD_SAMPLE_RATE, dtype=np.int64)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms chunk."""
        count = -(-samples.size // CHUNK)
        padded = np.zeros(CONTEXT + count * CHUNK, dtype=np.float32)
        padded[CONTEXT : CONTEXT + samples.size] = samples
        state = np.zeros(STATE_SHAPE, dtype=np.float32)
        probs = np.empty(count, dtype=np.float32)
        for i in range(count):
            chunk = padded[i * CHUNK : i * CHUNK + CONTEXT + CHUNK][None, :]
            out, state = self._session.run(None, {"input": chunk, "state": state, "sr": self._rate})
            probs[i] = out[0, 0]
        return probs

    def segments(self, samples: np.ndarray) -> list[tuple[int, int]]:
        """Speech as (start, end) sample indices, with the hysteresis Silero recommends."""
        opts = self.options
        probs = self.probabilities(samples)
        chunks_per_second = VAD_SAMPLE_RATE / CHUNK
        stop_below = max(opts.threshold - 0.15, 0.01)
        runs: list[list[int]] = []
        speaking = False
        for i, p in enumerate(probs):
            if not speaking and p >= opts.threshold:
                speaking = True
                runs.append([i, i + 1])
            elif speaking:
                if p >= stop_below:
                    runs[-1][1] = i + 1
                else:
                    speaking = False
        merged: list[list[int]] = []
        min_gap = opts.min_silence_seconds * chunks_per_second
        for run in runs:
            if merged and run[0] - merged[-1][1] < min_gap:
                merged[-1][1] = run[1]
            else:
                merged.append(run)
        pad = round(opts.pad_seconds * VAD_SAMPLE_RATE)
        found = []
        for first, last in merged:
            if (last - first) / chunks_per_second < opts.min_speech_seconds:
                continue
            found.append((max(first * CHUNK - pad, 0), min(last * CHUNK + pad, samples.size)))
        return split_long(found, round(opts.max_segment_seconds * VAD_SAMPLE_RATE))


def split_long(spans: list[tuple[int, int]], max_len: int) -> list[tuple[int, int]]:
    """Split spans longer than ``max_len`` into equal parts, so a monologue still gets a timeline."""
    out = []
    for start, end in spans:
        parts = -(-(end - start) // max_len)
        edges = np.linspace(start, end, parts + 1).round().astype(int)
        out.extend(zip(edges[:-1].tolist(), edges[1:].tolist()))
    return out
