"""The default emotion analyzer: Whisper tiny.en's encoder (the layers that carry tone of voice) with a
linear head trained on RAVDESS and nEMO, one ONNX graph run with onnxruntime.

Each speech segment goes through the graph at its own length and gives its pooled embedding and
calibrated probabilities. Where the segment carries its speaker's baseline of at least the model's
``min_clips`` clips (of this model's embedding space), the answer averages the plain probabilities with
those judged against the baseline (a mean shift that first takes out what the emotions heard in the
baseline explain): cross-validated, that was better with a baseline of ten mixed clips and never worse
when every clip of the baseline was of one emotion (``models/MODEL_CARD_WHISPER.md``). Every result
carries the observation that adds its segment to a baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sera.plugin import (
    SERA_PLUGIN_API, UNSURE_BELOW, WHISPER_MODEL_FILE, EmotionAnalyzer, EmotionResult, Observation, Segment, bounded,
    softmax, whisper_input,
)  # fmt: skip


@dataclass(frozen=True)
class Options:
    model: str = WHISPER_MODEL_FILE  # relative paths are looked up in the models folder
    unsure_below: float = bounded(UNSURE_BELOW, min=0, max=1)  # top calibrated probability under which the answer is "unsure"


class EmotionWhisper(EmotionAnalyzer[Options]):
    Options = Options
    api = SERA_PLUGIN_API

    def setup(self) -> None:
        self.model = self.load("whisper_log_mel")
        self.baseline_info = self.model.baseline
        rate = self.context.sample_rate
        self.analyze([Segment(np.zeros(rate, dtype=np.float32), rate, 0.0, 1.0)])  # onnxruntime's first run, off a user's note

    def analyze(self, segments: Sequence[Segment]) -> list[EmotionResult]:
        return [self._one(segment) for segment in segments]

    def _one(self, segment: Segment) -> EmotionResult:
        info = self.model.info
        baseline = segment.baseline if self.model.usable(segment.baseline) else None
        embedding, logits, against = self.model.run(whisper_input(segment.samples, info.features), baseline)
        probs = softmax(logits, info.temperature)
        observation = Observation(self.model.baseline.space, embedding, int(np.argmax(probs)), len(self.labels))
        if against is None:
            return self.result(segment.start, segment.end, probs, 0, observation)
        probs = (probs + softmax(against, self.model.baseline.temperature)) / 2
        return self.result(segment.start, segment.end, probs, baseline.count, observation)
