"""The emotion analyzer: sera's small CNN on log-Mel windows, run with onnxruntime.

Every window of a segment goes through the model in one batched call; a segment's probabilities are the
mean over its windows, and the whole note's are the duration-weighted mean over segments. Below
``unsure_below`` the answer is "unsure" with the top candidates rather than a confident-sounding guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sera.errors import ModelError
from sera.model import MODEL_FILE, EmotionModel, model_input
from sera.plugin import SERA_PLUGIN_API, Analyzer, EmotionResult, Result, Segment, bounded

BATCH_WINDOWS = 32  # bounds the memory of one onnxruntime call on a long file


@dataclass(frozen=True)
class Options:
    model: str = MODEL_FILE  # relative paths are looked up in the models folder
    unsure_below: float = bounded(0.4, min=0, max=1)  # top calibrated probability under which the answer is "unsure"


class EmotionCNN(Analyzer[Options]):
    Options = Options
    api = SERA_PLUGIN_API

    def setup(self) -> None:
        path = Path(self.options.model)
        self.model = EmotionModel(path if path.is_absolute() else self.context.models_dir / path)
        rate = self.model.info.features.sample_rate
        if rate != self.context.sample_rate:
            raise ModelError(f"{path} expects {rate} Hz audio but sera decodes at {self.context.sample_rate} Hz")
        # librosa builds its filters and JIT-compiles on first use (seconds): pay that now, not on a user's note.
        self.analyze([Segment(np.zeros(rate, dtype=np.float32), rate, 0.0, 1.0)])

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.info.labels

    def analyze(self, segments: Sequence[Segment]) -> list[EmotionResult]:
        features = [model_input(segment.samples, self.model.info.features) for segment in segments]
        stacked = np.concatenate(features)
        probs = np.concatenate(
            [self.model.probabilities(stacked[i : i + BATCH_WINDOWS]) for i in range(0, len(stacked), BATCH_WINDOWS)]
        )
        bounds = np.cumsum([0] + [len(f) for f in features])
        return [
            self.result(segment.start, segment.end, probs[lo:hi].mean(axis=0))
            for segment, lo, hi in zip(segments, bounds[:-1], bounds[1:])
        ]

    def summarize(self, results: Sequence[Result]) -> EmotionResult | None:
        emotions = [r for r in results if isinstance(r, EmotionResult)]
        if not emotions:
            return None
        weights = np.array([r.end - r.start for r in emotions])
        probs = np.array([[r.probabilities[name] for name in self.labels] for r in emotions])
        return self.result(emotions[0].start, emotions[-1].end, weights @ probs / weights.sum())

    def result(self, start: float, end: float, probs: np.ndarray) -> EmotionResult:
        best = int(np.argmax(probs))
        confidence = float(probs[best])
        label = self.labels[best] if confidence >= self.options.unsure_below else EmotionResult.UNSURE
        return EmotionResult(
            start=start,
            end=end,
            label=label,
            confidence=confidence,
            probabilities={name: float(p) for name, p in zip(self.labels, probs)},
        )
