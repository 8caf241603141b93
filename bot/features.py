"""The one feature function: speech samples -> fixed-length analysis windows -> log-Mel spectrograms.

Training imports these functions and writes the ``FeatureParams`` it used into the ONNX file; serving
reads them back from there (``sera.model``). Nothing else computes features, so the two cannot drift.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import numpy as np

from sera.audio import SAMPLE_RATE

METADATA_KEY = "sera.features"


@dataclass(frozen=True)
class FeatureParams:
    """Everything that shapes the model's input, stored in the model file."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 8_000.0
    top_db: float = 80.0  # dB floor below each window's loudest bin
    window_seconds: float = 3.0  # one model input
    window_hop_seconds: float = 1.5  # overlap between windows of a longer utterance
    loudness_dbfs: float = -23.0  # speech is scaled to this RMS level before features

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def window_frames(self) -> int:
        return 1 + self.window_samples // self.hop_length

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureParams:
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        missing = known - values.keys()
        if missing:
            raise ValueError(f"feature metadata lacks {sorted(missing)}")
        return cls(**{k: v for k, v in values.items() if k in known})


def windows(samples: np.ndarray, params: FeatureParams, offset: int = -1) -> np.ndarray:
    """Cut one utterance into model-sized windows, shape ``(n, window_samples)``.

    A short utterance is zero-padded; by default it sits in the middle of its window, and training
    passes ``offset`` to place it elsewhere (time-shift augmentation). A long one is covered by windows
    ``window_hop_seconds`` apart, the last aligned to its end, so no speech is left out.
    """
    size = params.window_samples
    if samples.size <= size:
        window = np.zeros(size, dtype=np.float32)
        free = size - samples.size
        start = free // 2 if offset < 0 else min(offset, free)
        window[start : start + samples.size] = samples
        return window[None, :]
    hop = round(params.window_hop_seconds * params.sample_rate)
    starts = list(range(0, samples.size - size, hop)) + [samples.size - size]
    return np.stack([samples[s : s + size] for s in starts]).astype(np.float32, copy=False)


def log_mel(batch: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-Mel spectrograms in dB, shape ``(n, n_mels, window_frames)`` for ``(n, samples)`` input."""
    import librosa  # when features are computed, not with the module (it takes a second to import)

    power = librosa.feature.melspectrogram(
        y=np.ascontiguousarray(batch, dtype=np.float32),
        sr=params.sample_rate,
        n_fft=params.n_fft,
        win_length=params.win_length,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
        fmin=params.fmin,
        fmax=params.fmax,
        power=2.0,
        center=True,
    )
    # Per-window floor: librosa applies top_db to the whole batch, which would let one loud window
    # change another's features.
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    peak = db.max(axis=(-2, -1), keepdims=True)
    return np.maximum(db, peak - params.top_db).astype(np.float32)
