"""The default emotion analyzer: Whisper base's encoder (its first blocks, which carry tone of voice, in
99 languages) with linear heads trained on RAVDESS and nEMO, one ONNX graph run with onnxruntime.

Each speech segment goes through the graph at its own length and gives its pooled embedding and
calibrated probabilities; the further the segment lies from everything the model was trained on (a
language or a microphone it never met), the flatter they are, so that it says "unsure" rather than a
confident wrong emotion (``ModelInfo.temperature_for``). Where the segment carries its speaker's
baseline of at least the model's ``min_clips`` clips (of this model's embedding space), the answer averages the plain probabilities with
those judged against the baseline (a mean shift that first takes out what the emotions heard in the
baseline explain), if the model's cross-validation found a size that helps when the baseline is mixed
and never hurts when it is all of one emotion (``models/MODEL_CARD_WHISPER.md``; the shipped model found
none, so it serves no baseline unless ``baseline_from`` says from how many clips on). Every result
carries the observation that adds its segment to a baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sera.plugin import (
    SERA_PLUGIN_API, UNSURE_BELOW, WHISPER_MODEL_FILE, EmotionAnalyzer, EmotionResult, Observation, Segment, bounded,
    softmax, whisper_input,
)  # fmt: skip


@dataclass(frozen=True)
class Options:
    model: str = WHISPER_MODEL_FILE  # relative paths are looked up in the models folder
    unsure_below: float = bounded(UNSURE_BELOW, min=0, max=1)  # top calibrated probability under which the answer is "unsure"
    baseline_from: int | None = bounded(None, min=1)  # clips a personal baseline needs before it is used; unset: the model's own size


class EmotionWhisper(EmotionAnalyzer[Options]):
    Options = Options
    api = SERA_PLUGIN_API

    def setup(self) -> None:
        self.model = self.load("whisper_log_mel")
        chosen = self.options.baseline_from
        self.baseline_info = self.model.baseline if chosen is None else replace(self.model.baseline, min_clips=chosen)
        rate = self.context.sample_rate
        self.analyze([Segment(np.zeros(rate, dtype=np.float32), rate, 0.0, 1.0)])  # onnxruntime's first run, off a user's note

    def analyze(self, segments: Sequence[Segment]) -> list[EmotionResult]:
        return [self._one(segment) for segment in segments]

    def _one(self, segment: Segment) -> EmotionResult:
        info = self.model.info
        baseline = segment.baseline if self.baseline_info.serves(segment.baseline) else None
        heard = self.model.run(whisper_input(segment.samples, info.features), baseline)
        probs = softmax(heard.logits, info.temperature_for(heard.unfamiliar))
        observation = Observation(self.model.baseline.space, heard.embedding, int(np.argmax(probs)), len(self.labels))
        if heard.against is None:
            return self.result(segment.start, segment.end, probs, 0, observation)
        probs = (probs + softmax(heard.against, self.model.baseline.temperature)) / 2
        return self.result(segment.start, segment.end, probs, baseline.count, observation)
