"""The feature functions, one per kind of model input, each with the parameters that shape it.

- ``log_mel`` (``FeatureParams``, kind ``log_mel``): fixed-length windows of dB log-Mel, what the seed
  paper's CNN takes.
- ``whisper_log_mel`` (``WhisperParams``, kind ``whisper_log_mel``): Whisper's own 80-band log-Mel of a
  whole utterance at its own length, what the Whisper encoder takes.

Training imports these functions and writes the parameters it used into the ONNX file (with their
kind); serving reads them back from there (``sera.model``) and calls the function of that kind. Nothing
else computes features, so the two cannot drift.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from functools import cache
from typing import ClassVar

import numpy as np

from sera.audio import SAMPLE_RATE

METADATA_KEY = "sera.features"


@dataclass(frozen=True)
class FeatureParams:
    """Everything that shapes the CNN's input, stored in the model file."""

    kind: ClassVar[str] = "log_mel"

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
        return to_json(self)

    @classmethod
    def from_json(cls, text: str) -> FeatureParams:
        params = from_json(text)
        if not isinstance(params, cls):
            raise ValueError(f"these are {params.kind} parameters, not {cls.kind}")
        return params


@dataclass(frozen=True)
class WhisperParams:
    """Whisper's log-Mel (openai-whisper's ``log_mel_spectrogram``, numerically): 25 ms Hann windows every
    10 ms, centred with reflection, the last frame dropped, 80 Slaney Mel bands, log10 floored at
    ``dynamic_range`` below the utterance's peak, then ``(x + 4) / 4``. sera scales the speech to
    ``loudness_dbfs`` first: Whisper's values move with the recording level, and a phone's microphone
    gain says nothing about emotion."""

    kind: ClassVar[str] = "whisper_log_mel"
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    dynamic_range: float = 8.0  # in log10 units: 80 dB
    loudness_dbfs: float = -23.0
    min_seconds: float = 0.1  # shorter speech is zero-padded to this (the encoder's convolutions need frames)

    def to_json(self) -> str:
        return to_json(self)


KINDS = {params.kind: params for params in (FeatureParams, WhisperParams)}


def to_json(params: FeatureParams | WhisperParams) -> str:
    return json.dumps({"kind": params.kind, **asdict(params)}, sort_keys=True)


def from_json(text: str) -> FeatureParams | WhisperParams:
    """The parameters a model file states, of the kind it states (a file without a kind is the CNN's)."""
    values = json.loads(text)
    kind = values.pop("kind", FeatureParams.kind)
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; this sera knows {', '.join(KINDS)}")
    cls = KINDS[kind]
    known = {f.name for f in fields(cls)}
    missing = known - values.keys()
    if missing:
        raise ValueError(f"feature metadata lacks {sorted(missing)}")
    params = cls(**{k: v for k, v in values.items() if k in known})
    for name in known:
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"feature parameter {name} must be a finite number, not {value!r}")
        if name in FEATURE_RANGES and not FEATURE_RANGES[name][0] <= value <= FEATURE_RANGES[name][1]:
            raise ValueError(f"feature parameter {name} must be between {FEATURE_RANGES[name][0]} and {FEATURE_RANGES[name][1]}, not {value!r}")
    if params.sample_rate != SAMPLE_RATE:
        raise ValueError(f"the model was trained at {params.sample_rate} Hz; sera decodes at {SAMPLE_RATE} Hz")
    return params


# What a model's feature parameters may be: beyond these, features cost without bound or mean nothing.
FEATURE_RANGES = {
    "n_fft": (16, 8192), "win_length": (16, 8192), "hop_length": (1, 8192), "n_mels": (1, 512),
    "fmin": (0, SAMPLE_RATE / 2), "fmax": (1, SAMPLE_RATE / 2), "top_db": (1, 200), "dynamic_range": (0.1, 20),
    "window_seconds": (0.1, 60), "window_hop_seconds": (0.05, 60), "loudness_dbfs": (-80, 0), "min_seconds": (0, 10),
}  # fmt: skip


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


@cache
def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``(n_mels, 1 + n_fft // 2)``: the Slaney-style Mel filterbank (librosa's default, and Whisper's),
    in numpy: librosa's own costs a second of imports on first use, on every command that analyses."""

    def to_mel(hz: np.ndarray) -> np.ndarray:
        linear = hz / (200.0 / 3)
        return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27), linear)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27) * (mel - 15.0)), (200.0 / 3) * mel)

    frequencies = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    edges = to_hz(np.linspace(to_mel(np.array(0.0)), to_mel(np.array(sample_rate / 2)), n_mels + 2))
    ramps = edges[:, None] - frequencies[None, :]
    widths = np.diff(edges)
    rising, falling = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def whisper_log_mel(samples: np.ndarray, params: WhisperParams) -> np.ndarray:
    """Whisper's log-Mel of one utterance, ``(n_mels, frames)`` with ``frames = samples // hop_length``.

    Centred frames padded by reflection, the last frame dropped, a periodic Hann window: as Whisper
    (torch) computes it, spelt out in numpy (librosa pads with zeros unless told otherwise, and either
    difference silently costs accuracy)."""
    least = round(params.min_seconds * params.sample_rate)
    if samples.size < least:
        samples = np.pad(samples, (0, least - samples.size))
    half = params.n_fft // 2
    padded = np.pad(np.asarray(samples, dtype=np.float32), half, mode="reflect")
    count = 1 + (padded.size - params.n_fft) // params.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, params.n_fft)[:: params.hop_length][: count - 1]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(params.n_fft) / params.n_fft)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    log = np.log10(np.maximum(slaney_mel_filters(params.sample_rate, params.n_fft, params.n_mels) @ power.T, 1e-10))
    log = np.maximum(log, log.max() - params.dynamic_range)
    return ((log + 4.0) / 4.0).astype(np.float32)
