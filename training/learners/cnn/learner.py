"""``sera train --model cnn``: the seed paper's CNN, four conv blocks over log-Mel windows, trained from
scratch. What it brings to the protocol: log-Mel windows of every clip in several placements and both
conditions (``features``), a process pool of single-threaded fits (``fit``), and the ONNX export."""

from __future__ import annotations

import os
from argparse import Namespace
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from sera.corpora import Clip
from sera.errors import SeraError
from sera.features import FeatureParams
from sera.model import MODEL_FILE, EmotionModel, ModelInfo
from sera.training.learners.cnn.export import export_onnx, parity
from sera.training.learners.cnn.features import OFFSETS_PER_CONDITION, build_features
from sera.training.learners.cnn.fit import REFERENCE_CLIPS, predict, speaker_references, train_side_by_side, training_references
from sera.training.learners.cnn.net import EmotionNet
from sera.training.learners.cnn.recipe import RECIPES, Recipe
from sera.training.protocol import CONDITIONS, ENROLMENT, Split, corpus_ids, label_mask
from sera.training.results import Shipped

VARIANTS = {name: i * OFFSETS_PER_CONDITION for i, name in enumerate(CONDITIONS)}  # each condition's centred window
BASELINE_CONDITIONS = ("clean, neutral enrolment", "clean, no baseline")  # a "speaker" recipe's further conditions


class CNN:
    """The protocol's learner for the CNN (``sera.training.protocol.Learner``)."""

    name = "cnn"

    def __init__(self, recipe: Recipe, models_dir: Path, cache_dir: Path | None, seed: int) -> None:
        self.recipe, self.models_dir, self.cache_dir, self.seed = recipe, models_dir, cache_dir, seed
        self.params = FeatureParams()
        self.conditions = CONDITIONS + (BASELINE_CONDITIONS if recipe.reference == "speaker" else ())
        self.workers = 1

    def prepare(self, clips: list[Clip], labels: tuple[str, ...]) -> None:
        self.clips, self.labels = clips, labels
        self.features = build_features(clips, self.params, self.models_dir, self.cache_dir, self.seed)
        self.y = np.array([labels.index(c.label) for c in clips])
        self.references = training_references(self.recipe, clips, self.features, self.seed)
        self.scored = self.inputs()

    def inputs(self) -> dict[str, np.ndarray]:
        """The held-out inputs per condition. A "speaker" recipe is scored against a baseline of 5 of the
        speaker's other clips (any emotion), of their other neutral or calm clips only (an enrolment, as
        real users give), and with none (each window against its own mean: a voice heard for the first time)."""
        if self.references is None:
            return {name: self.features[:, variant].astype(np.float32) for name, variant in VARIANTS.items()}
        enrolled = speaker_references(self.clips, self.features, 1, REFERENCE_CLIPS, self.seed, lambda c: c.label in ENROLMENT)
        scored = {}
        for name, variant in VARIANTS.items():
            condition = variant // OFFSETS_PER_CONDITION  # 0 clean, 1 Opus: as in speaker_references
            scored[name] = self.features[:, variant].astype(np.float32) - self.references[:, condition, 0, :, None]
        clean = self.features[:, 0].astype(np.float32)
        scored[BASELINE_CONDITIONS[0]] = clean - enrolled[:, 0, 0, :, None]
        scored[BASELINE_CONDITIONS[1]] = clean - clean.mean(axis=2, keepdims=True)
        return scored

    def fit(self, jobs: list[np.ndarray]) -> list[EmotionNet]:
        self.workers = max(1, min(len(jobs), os.cpu_count() or 1))
        return train_side_by_side(self.recipe, jobs, self.features, self.y, len(self.labels), self.seed, self.workers,
                                  label_mask(self.clips, self.labels), self.references, corpus_ids(self.clips))  # fmt: skip

    def logits(self, model: EmotionNet, condition: str, idx: np.ndarray) -> np.ndarray:
        return predict(model, self.scored[condition][idx])

    def unfamiliarity(self, model: EmotionNet, idx: np.ndarray) -> None:
        return None  # the CNN measures none: one temperature

    def measure(self, folds: list[tuple[EmotionNet, Split]], cv: dict[str, Any]) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"recipe": asdict(self.recipe), "features": asdict(self.params), "labels": list(self.labels), "processes": self.workers}

    def export(self, model: EmotionNet, trained: np.ndarray, cv: dict[str, Any], out: Path) -> Shipped:
        trained_on: dict[str, set[str]] = {}
        for i in trained:
            trained_on.setdefault(self.clips[i].corpus, set()).add(self.clips[i].speaker)
        temperature = cv["pooled"]["temperature"]
        info = ModelInfo(features=self.params, labels=self.labels, temperature=temperature,
                         trained_on={corpus: sorted(speakers) for corpus, speakers in trained_on.items()})  # fmt: skip
        path = out / MODEL_FILE
        export_onnx(model, info, path)
        drift = parity(model, path, self.features[trained, 0])
        return Shipped(path.name, path.stat().st_size / 1e6, EmotionModel(path).window_latency_ms(), drift, temperature,
                       {"parameters": sum(p.numel() for p in model.parameters())})  # fmt: skip


def make(args: Namespace, models_dir: Path, cache_dir: Path | None) -> CNN:
    """The learner ``sera train --model cnn`` asked for: ``--recipe`` (the shipped one by default),
    ``--epochs`` or ``--smoke`` (one epoch) instead of the recipe's."""
    given = [flag for flag, value in (("--encoder", args.encoder), ("--taps", args.taps)) if value]
    if given:
        raise SeraError(f"{', '.join(given)}: the Whisper model's (--model whisper); the CNN learns from log-Mel windows")
    recipe = RECIPES[args.recipe or "sera"]
    if recipe.reference == "speaker" and not args.cv_only:
        raise SeraError("--recipe personal is measured, not served (the bot has no per-window baseline input for the CNN): add --cv-only")
    epochs = 1 if args.smoke else args.epochs
    return CNN(replace(recipe, epochs=epochs) if epochs else recipe, models_dir, cache_dir, args.seed)
