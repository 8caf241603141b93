"""The emotion model file: an ONNX graph from log-Mel windows to class logits, plus its metadata.

The metadata carries what serving needs to reproduce training exactly: the feature parameters
(``sera.features.FeatureParams``), the label names in output order and the calibration temperature.
A file without them is refused with a clear message rather than run with guessed numbers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sera.errors import ModelError
from sera.features import METADATA_KEY, FeatureParams, log_mel, windows
from sera.audio import normalize_loudness
from sera.speech import session_options

MODEL_FILE = "sera-emotion.onnx"  # the shipped emotion model, in the models folder
EMOTION_PLUGIN = "emotion_cnn"  # the built-in analyzer that serves it
LABELS_KEY = "sera.labels"
TEMPERATURE_KEY = "sera.temperature"
INPUT_NAME = "mel"  # (batch, n_mels, frames) float32
OUTPUT_NAME = "logits"  # (batch, n_labels) float32


@dataclass(frozen=True)
class ModelInfo:
    """The metadata sera writes into every emotion model it exports."""

    features: FeatureParams
    labels: tuple[str, ...]
    temperature: float = 1.0

    def metadata(self) -> dict[str, str]:
        return {
            METADATA_KEY: self.features.to_json(),
            LABELS_KEY: json.dumps(list(self.labels)),
            TEMPERATURE_KEY: repr(self.temperature),
        }

    @classmethod
    def from_metadata(cls, values: dict[str, str], path: Path) -> ModelInfo:
        try:
            return cls(
                features=FeatureParams.from_json(values[METADATA_KEY]),
                labels=tuple(json.loads(values[LABELS_KEY])),
                temperature=float(values.get(TEMPERATURE_KEY, "1.0")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"{path} is not a sera emotion model: its metadata is missing or bad ({exc})") from None


def model_input(utterance: np.ndarray, params: FeatureParams, offset: int = -1) -> np.ndarray:
    """What the model sees of one utterance: loudness-normalised, windowed log-Mel, ``(n, mels, frames)``.

    The one feature function: serving calls it, and training calls it too (with ``offset`` to place a
    short utterance elsewhere in its window), so the two cannot compute features differently."""
    return log_mel(windows(normalize_loudness(utterance, params.loudness_dbfs), params, offset), params)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


class EmotionModel:
    """An onnxruntime session created once and reused; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        import onnxruntime as ort  # when a model is loaded (see session_options)

        try:
            self.session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise ModelError(f"cannot load model {path}: {exc}") from None
        self.path = path
        self.info = ModelInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map, path)

    def logits(self, mel: np.ndarray) -> np.ndarray:
        """Raw logits for a batch of windows, all in one onnxruntime call."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: mel})[0]

    def probabilities(self, mel: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities for a batch of windows."""
        return softmax(self.logits(mel), self.info.temperature)

    def window_latency_ms(self, runs: int = 200) -> float:
        """Median latency of one window through the session (single-threaded: one CPU core), after a warm-up."""
        params = self.info.features
        mel = np.random.default_rng(0).normal(-40, 10, (1, params.n_mels, params.window_frames)).astype(np.float32)
        for _ in range(10):
            self.logits(mel)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.logits(mel)
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000)
