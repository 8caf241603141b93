"""The emotion model files: ONNX graphs to class logits, plus the metadata serving needs.

Two kinds, one metadata: the seed paper's CNN (``sera-emotion.onnx``: log-Mel windows -> logits) and
the Whisper-encoder model (``sera-emotion-whisper.onnx``: one utterance's Whisper log-Mel -> its pooled
embedding, the logits, and the logits against a speaker's baseline). The metadata carries what serving
needs to reproduce training exactly: the feature parameters and their kind (``sera.features``), the
label names in output order, the calibration temperature, and for the Whisper model the encoder's
provenance and how its personal baseline is served. A file without them is refused with a clear
message rather than run with guessed numbers.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sera.audio import normalize_loudness
from sera.baseline import Baseline
from sera.errors import ModelError
from sera.features import METADATA_KEY, FeatureParams, WhisperParams, from_json, log_mel, whisper_log_mel, windows
from sera.speech import inference_session

MODEL_FILE = "sera-emotion.onnx"  # the seed paper's CNN, in the models folder
WHISPER_MODEL_FILE = "sera-emotion-whisper.onnx"  # the Whisper-encoder model, in the models folder
LABELS_KEY = "sera.labels"
TEMPERATURE_KEY = "sera.temperature"
SLOPE_KEY = "sera.temperature_slope"  # how the temperature grows with an utterance's unfamiliarity (``ModelInfo.temperature_for``)
ENCODER_KEY = "sera.encoder"  # where the encoder's weights came from (package, version, sha256, blocks)
BASELINE_KEY = "sera.baseline"  # how the model serves a personal baseline (``BaselineInfo``)
TRAINED_ON_KEY = "sera.trained_on"  # corpus -> the speakers the model was trained on (``sera evaluate`` warns on them)
INPUT_NAME = "mel"  # CNN: (batch, n_mels, frames); Whisper model: (1, n_mels, frames) of one utterance
OUTPUT_NAME = "logits"  # (batch, n_labels) float32
# The Whisper model's other inputs and outputs: a baseline's mean embedding and heard-emotion shares in,
# the utterance's pooled embedding and its logits against that baseline out.
BASELINE_MEAN, BASELINE_HEARD = "baseline_mean", "baseline_heard"
EMBEDDING, BASELINE_LOGITS = "embedding", "logits_baseline"
UNFAMILIAR = "unfamiliar"  # the Whisper model's (1,): how far the utterance lies from its training clips, 1 for a typical one
UNFAMILIAR_RANGE = (0.1, 100.0)  # unfamiliarity is clipped to this before it scales the temperature


@dataclass(frozen=True)
class BaselineInfo:
    """How a model serves a personal baseline: the embedding space it lives in (encoder, layers and
    features: a new head keeps users' baselines), how many clips it needs before it is used, and the
    calibration temperature of the logits against it."""

    space: str
    min_clips: int
    temperature: float = 1.0

    def serves(self, baseline: Baseline | None) -> bool:
        """Whether a baseline is of this space and rests on enough clips to be used (a model whose
        cross-validation found no size that helps, ``min_clips`` 0, uses none)."""
        return baseline is not None and baseline.space == self.space and 0 < self.min_clips <= baseline.count


@dataclass(frozen=True)
class ModelInfo:
    """The metadata sera writes into every emotion model it exports."""

    features: FeatureParams | WhisperParams
    labels: tuple[str, ...]
    temperature: float = 1.0
    encoder: dict | None = None  # provenance of a pretrained encoder's weights
    baseline: BaselineInfo | None = None
    trained_on: dict[str, list[str]] | None = None  # corpus -> speakers
    temperature_slope: float = 0.0  # 0: one temperature for every utterance

    def temperature_for(self, unfamiliar: float = 1.0) -> float:
        """The calibration temperature of an utterance ``unfamiliar`` times as far from the training clips
        as a typical one: ``temperature * unfamiliar ** temperature_slope``, fitted by training on voices
        and corpora its models never heard. A language or microphone the model never met gets flatter
        probabilities, so that it says "unsure" rather than a confident wrong emotion."""
        return self.temperature * float(np.clip(unfamiliar, *UNFAMILIAR_RANGE)) ** self.temperature_slope

    def metadata(self) -> dict[str, str]:
        values = {
            METADATA_KEY: self.features.to_json(),
            LABELS_KEY: json.dumps(list(self.labels)),
            TEMPERATURE_KEY: repr(self.temperature),
            SLOPE_KEY: repr(self.temperature_slope),
        }
        if self.encoder is not None:
            values[ENCODER_KEY] = json.dumps(self.encoder, sort_keys=True)
        if self.baseline is not None:
            values[BASELINE_KEY] = json.dumps(asdict(self.baseline), sort_keys=True)
        if self.trained_on is not None:
            values[TRAINED_ON_KEY] = json.dumps(self.trained_on, sort_keys=True)
        return values

    @classmethod
    def from_metadata(cls, values: dict[str, str], path: Path) -> ModelInfo:
        try:
            return cls(
                features=from_json(values[METADATA_KEY]),
                labels=tuple(json.loads(values[LABELS_KEY])),
                temperature=float(values.get(TEMPERATURE_KEY, "1.0")),
                encoder=json.loads(values[ENCODER_KEY]) if ENCODER_KEY in values else None,
                baseline=BaselineInfo(**json.loads(values[BASELINE_KEY])) if BASELINE_KEY in values else None,
                trained_on=json.loads(values[TRAINED_ON_KEY]) if TRAINED_ON_KEY in values else None,
                temperature_slope=float(values.get(SLOPE_KEY, "0.0")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"{path} is not a sera emotion model: its metadata is missing or bad ({exc})") from None

    def check(self, outputs: int | None, path: Path) -> ModelInfo:
        """Refuse numbers no trained model has: they would divide by zero, mislabel every answer, or run
        a baseline from nothing. ``outputs``: the graph's number of classes, where it states one."""
        problem = None
        temperatures = [self.temperature] + ([self.baseline.temperature] if self.baseline else [])
        if not all(isinstance(t, float) and math.isfinite(t) and t > 0 for t in temperatures):
            problem = "its temperature must be a finite number above 0"
        elif not (math.isfinite(self.temperature_slope) and self.temperature_slope >= 0):
            problem = "its temperature slope must be a finite number, 0 or more"
        elif not self.labels or len(set(self.labels)) != len(self.labels) or not all(isinstance(label, str) and label for label in self.labels):
            problem = "its labels must be distinct names"
        elif outputs is not None and outputs != len(self.labels):
            problem = f"it names {len(self.labels)} labels for {outputs} outputs"
        elif self.baseline and not (isinstance(self.baseline.min_clips, int) and self.baseline.min_clips >= 0):
            problem = "its baseline's min_clips must be a whole number, 0 (no baseline) or more"
        if problem:
            raise ModelError(f"{path} is not a usable sera emotion model: {problem}")
        return self


def model_input(utterance: np.ndarray, params: FeatureParams, offset: int = -1) -> np.ndarray:
    """What the CNN sees of one utterance: loudness-normalised, windowed log-Mel, ``(n, mels, frames)``.

    The CNN's feature function: serving calls it, and training calls it too (with ``offset`` to place a
    short utterance elsewhere in its window), so the two cannot compute features differently."""
    return log_mel(windows(normalize_loudness(utterance, params.loudness_dbfs), params, offset), params)


def whisper_input(utterance: np.ndarray, params: WhisperParams) -> np.ndarray:
    """What the Whisper model sees of one utterance: loudness-normalised Whisper log-Mel of all of it,
    ``(1, n_mels, frames)``. Serving and training both call it."""
    return whisper_log_mel(normalize_loudness(utterance, params.loudness_dbfs), params)[None]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


class EmotionModel:
    """The CNN: an onnxruntime session created once and reused; safe to call from several threads."""

    kind = FeatureParams.kind

    def __init__(self, path: Path, loaded: tuple[object, ModelInfo] | None = None) -> None:
        self.session, self.info = loaded or _session(path)
        if not isinstance(self.info.features, FeatureParams):
            raise ModelError(f"{path} is not a CNN emotion model (its metadata names {self.info.features.kind} features)")
        self.path = path

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


@dataclass(frozen=True)
class Heard:
    """The Whisper model's answer for one utterance."""

    embedding: np.ndarray  # (dims,): what a personal baseline averages
    logits: np.ndarray  # (labels,)
    against: np.ndarray | None  # (labels,) logits against the baseline given, None without one
    unfamiliar: float  # how far from the training clips, 1 for a typical one (``ModelInfo.temperature_for``)


class WhisperEmotionModel:
    """The Whisper-encoder model: one graph from an utterance's log-Mel to its pooled embedding, its
    logits, and its logits against a speaker's baseline. Utterances go one at a time (each at its own
    length: padding would change the pooled statistics). Safe to call from several threads."""

    kind = WhisperParams.kind

    def __init__(self, path: Path, loaded: tuple[object, ModelInfo] | None = None) -> None:
        self.session, self.info = loaded or _session(path)
        if not isinstance(self.info.features, WhisperParams) or self.info.baseline is None:
            raise ModelError(f"{path} is not a Whisper-encoder emotion model (its metadata names {self.info.features.kind} features)")
        self.path = path
        self.dims = int(self.session.get_inputs()[1].shape[1])
        self.baseline: BaselineInfo = self.info.baseline
        names = {o.name for o in self.session.get_outputs()}  # a model from before unfamiliarity has no such output
        self.outputs = [EMBEDDING, OUTPUT_NAME, BASELINE_LOGITS] + ([UNFAMILIAR] if UNFAMILIAR in names else [])

    def run(self, mel: np.ndarray, baseline: Baseline | None = None) -> Heard:
        """What the graph hears in one utterance's ``(1, mels, frames)``."""
        mean = np.zeros((1, self.dims), np.float32) if baseline is None else baseline.mean[None].astype(np.float32)
        heard = np.zeros((1, len(self.info.labels)), np.float32) if baseline is None else baseline.heard_share[None].astype(np.float32)
        outputs = self.session.run(self.outputs, {INPUT_NAME: mel, BASELINE_MEAN: mean, BASELINE_HEARD: heard})
        embedding, logits, against = (o[0] for o in outputs[:3])
        unfamiliar = float(outputs[3][0]) if len(outputs) > 3 else 1.0
        return Heard(embedding, logits, None if baseline is None else against, unfamiliar)

    def latency_ms(self, seconds: float = 3.0, runs: int = 50) -> float:
        """Median time of one utterance of ``seconds`` through features and graph on one thread, after a warm-up."""
        params = self.info.features
        speech = np.random.default_rng(0).normal(0, 0.1, round(seconds * params.sample_rate)).astype(np.float32)
        times = []
        for i in range(runs + 5):
            start = time.perf_counter()
            self.run(whisper_input(speech, params))
            if i >= 5:
                times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000)


EmotionModelKind = EmotionModel | WhisperEmotionModel
MODELS = {model.kind: model for model in (EmotionModel, WhisperEmotionModel)}  # feature kind -> the model that takes it


def load_emotion_model(path: Path) -> EmotionModelKind:
    """The emotion model a file holds, built as the kind its own metadata names (as Whisper's
    ``load_model`` builds any size from the checkpoint's own dimensions): one loader for every kind,
    and the one place that knows which kinds exist."""
    session, info = _session(path)
    if info.features.kind not in MODELS:
        raise ModelError(f"{path} holds a {info.features.kind} model, which this sera cannot serve")
    return MODELS[info.features.kind](path, (session, info))


def _session(path: Path) -> tuple[object, ModelInfo]:
    session = inference_session(path)
    shape = next((o.shape for o in session.get_outputs() if o.name == OUTPUT_NAME), None)
    outputs = shape[-1] if shape and isinstance(shape[-1], int) else None
    return session, ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, path).check(outputs, path)
