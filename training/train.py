"""``sera train --model cnn``: the seed paper's CNN end to end: features, the shipped recipe beside its
ablation and cross-validation, calibration and the ONNX export (the recipe in ``recipe``, the fitting in
``fit``, the export in ``export``).

The split is by speaker, as ``../shared/data/README.md`` requires: test speakers and validation
speakers are whole actors that never appear in training. Calibration (temperature scaling) uses the
validation speakers only; the test speakers are touched once, at the end, through the shipped pipeline
(``sera.evaluate``), clean and re-encoded as a 24 kbit/s Opus voice note.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sera.corpora import Clip
from sera.features import FeatureParams
from sera.metrics import score
from sera.model import MODEL_FILE, ModelInfo, softmax
from sera.speech import VAD_MODEL
from sera.training.data import build_features
from sera.training.export import export_onnx, parity
from sera.training.fit import held_out_scores, predict, train_side_by_side, training_references
from sera.training.protocol import Split, corpus_ids, fit_temperature, label_mask, split_by_speaker
from sera.training.recipe import ABLATION, FINAL
from sera.training.results import Calibration, Speakers, TrainingRun

if TYPE_CHECKING:
    from sera.training.crossval import Plan

log = logging.getLogger(__name__)


def run(
    clips: list[Clip],
    out_dir: Path,
    models_dir: Path,
    val_speakers: set[str],
    test_speakers: set[str],
    labels: tuple[str, ...],
    cache_dir: Path | None,
    seed: int = 0,
    epochs: int | None = None,
    ablation_epochs: int | None = None,
    corpus: str = "ravdess",
    data_root: str = "",
    crossval: Plan | None = None,
) -> tuple[Split, TrainingRun]:
    """Features, training and export; returns the split and what the run measured.

    With a cross-validation ``Plan``, its models train in the same process pool as the shipped one (the
    recipe is fixed before either starts), and with no validation speakers the shipped model takes the
    temperature fitted on the cross-validation's out-of-fold logits. Clips of the plan's test-only
    corpora are never trained on."""
    started = time.perf_counter()
    params = FeatureParams()
    features = build_features(clips, params, models_dir / VAD_MODEL, cache_dir, seed)
    y = np.array([labels.index(c.label) for c in clips])
    split = split_by_speaker(clips, val_speakers, test_speakers)
    if crossval:
        split = replace(split, train=split.train[[clips[i].corpus not in crossval.test_only for i in split.train]])
    feature_seconds = time.perf_counter() - started
    recipe = replace(FINAL, epochs=epochs) if epochs else FINAL
    steps = [replace(step, epochs=ablation_epochs) for step in ABLATION] if ablation_epochs else []
    jobs = [(r, split) for r in (recipe, *steps)] + (crossval.jobs(clips) if crossval else [])
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    mask = label_mask(clips, labels)
    references = training_references(crossval.recipe, clips, features, seed) if crossval else None
    trained = train_side_by_side(jobs, features, y, len(labels), seed, workers, mask, references, corpus_ids(clips))
    final, history = trained[0].model, trained[0].history
    train_seconds = time.perf_counter() - started - feature_seconds
    cv = crossval.result(clips, features, y, labels, trained[1 + len(steps) :], train_seconds / 60) if crossval else None
    trained = trained[: 1 + len(steps)]
    table = [
        {"recipe": step.name, "epochs": step.epochs, "minutes": done.minutes}
        | held_out_scores(done.model, features, y, split.test, len(labels))
        for step, done in zip(steps, trained[1:])
    ]
    if table:
        shipped = {"recipe": f"shipped: {recipe.name}", "epochs": recipe.epochs, "minutes": trained[0].minutes}
        table.append(shipped | held_out_scores(final, features, y, split.test, len(labels)))
    temperature, calibration = 1.0, Calibration()
    if cv and not len(split.val):
        temperature = cv.pooled["temperature"]
    if len(split.val):
        val_logits = predict(final, features[split.val, 0])
        temperature = fit_temperature(val_logits, y[split.val])
        calibration = Calibration(
            ece_raw=score(y[split.val], softmax(val_logits), labels).ece,
            ece_calibrated=score(y[split.val], softmax(val_logits, temperature), labels).ece,
        )
    trained_on: dict[str, set[str]] = {}
    for i in split.train:
        trained_on.setdefault(clips[i].corpus, set()).add(clips[i].speaker)
    info = ModelInfo(features=params, labels=labels, temperature=temperature,
                     trained_on={corpus: sorted(speakers) for corpus, speakers in trained_on.items()})  # fmt: skip
    model_path = out_dir / MODEL_FILE
    export_onnx(final, info, model_path)
    return split, TrainingRun(
        corpus=corpus,
        test_corpus=",".join(sorted(crossval.test_only)) if crossval else "",
        data_root=data_root,
        clips=len(clips) - (sum(c.corpus in crossval.test_only for c in clips) if crossval else 0),
        speakers=Speakers(sorted({clips[i].speaker for i in split.train}), sorted(val_speakers), sorted(test_speakers)),
        split_sizes={"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        recipe=recipe,
        features=params,
        labels=labels,
        temperature=temperature,
        val_before_after_calibration=calibration,
        parameters=sum(p.numel() for p in final.parameters()),
        history=history,
        ablation=table,
        seed=seed,
        feature_minutes=feature_seconds / 60,
        train_minutes=train_seconds / 60,
        total_minutes=(time.perf_counter() - started) / 60,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {workers} single-threaded training processes",
        crossval=cv.to_dict() if cv else None,
        parity_max_abs_diff=parity(final, model_path, features[split.test if len(split.test) else split.train, 0]),
    )
