"""The seed paper's emotion analyzer: sera's small CNN on log-Mel windows, run with onnxruntime.

Off by default since the Whisper-encoder analyzer (``emotion_whisper``) hears better; one line of config
(``plugins: {emotion_cnn: {enabled: true}}``) brings it back, beside or instead of it, and
``sera evaluate --analyzer emotion_cnn`` measures it. Every window of a segment goes through the model
in one batched call; a segment's probabilities are the mean over its windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sera.plugin import (
    MODEL_FILE, SERA_PLUGIN_API, UNSURE_BELOW, EmotionAnalyzer, EmotionResult, Segment, bounded, model_input,
)  # fmt: skip

BATCH_WINDOWS = 32  # bounds the memory of one onnxruntime call on a long file


@dataclass(frozen=True)
class Options:
    model: str = MODEL_FILE  # relative paths are looked up in the models folder
    unsure_below: float = bounded(UNSURE_BELOW, min=0, max=1)  # top calibrated probability under which the answer is "unsure"


class EmotionCNN(EmotionAnalyzer[Options]):
    Options = Options
    api = SERA_PLUGIN_API

    def setup(self) -> None:
        self.model = self.load("log_mel")
        # librosa builds its filters and JIT-compiles on first use (seconds): pay that now, not on a user's note.
        rate = self.context.sample_rate
        self.analyze([Segment(np.zeros(rate, dtype=np.float32), rate, 0.0, 1.0)])

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
