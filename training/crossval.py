"""Speaker-grouped K-fold cross-validation: how a recipe does on voices it never heard, with its spread.

Tuning on one small test split makes its speakers the tuning set (a recipe chosen among ~25 on the
same 3 test actors looked 9 points better there than on voices nobody tuned on). Here every speaker of
every chosen corpus is held out exactly once: folds are whole speakers, dealt per corpus and gender so
each fold has a like share of each, and each fold's model is trained on all the others. Figures are
per corpus, as mean and standard deviation over folds; per-class recall and calibration come from the
pooled out-of-fold predictions (thousands of clips, not 120). A difference inside the spread is no
difference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sera.corpora import Clip
from sera.training.data import OFFSETS_PER_CONDITION
from sera.training.fit import REFERENCE_CLIPS, Trained, predict, speaker_references, train_side_by_side, training_references
from sera.training.protocol import (
    CONDITIONS, ENROLMENT, Split, corpus_ids, fit_temperature, fold_scores, label_mask, masked_logits, never_heard, pooled,
    speaker_folds, summarize,
)  # fmt: skip
from sera.training.net import EmotionNet
from sera.training.recipe import Recipe

VARIANTS = {name: i * OFFSETS_PER_CONDITION for i, name in enumerate(CONDITIONS)}  # each condition's centred window


def inputs(recipe: Recipe, clips: list[Clip], features: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The held-out inputs scored per condition.

    A "speaker" recipe is scored with a baseline from 5 of the speaker's other clips (any emotion), from
    their other neutral or calm clips only (an enrolment, as real users give), and with none (each window
    against its own mean: a voice heard for the first time)."""
    references = training_references(recipe, clips, features, seed)
    if references is None:
        return {name: features[:, variant].astype(np.float32) for name, variant in VARIANTS.items()}
    enrolled = speaker_references(clips, features, 1, REFERENCE_CLIPS, seed, lambda c: c.label in ENROLMENT)
    scored = {}
    for name, variant in VARIANTS.items():
        condition = variant // OFFSETS_PER_CONDITION  # 0 clean, 1 Opus: as in speaker_references
        scored[name] = features[:, variant].astype(np.float32) - references[:, condition, 0, :, None]
    clean = features[:, 0].astype(np.float32)
    scored["clean, neutral enrolment"] = clean - enrolled[:, 0, 0, :, None]
    scored["clean, no baseline"] = clean - clean.mean(axis=2, keepdims=True)
    return scored


@dataclass
class CrossValidation:
    """What ``sera train --cv K`` reports, and what the model card's cross-validation table shows."""

    recipe: str
    k: int
    seed: int
    folds: list[dict[str, Any]] = field(default_factory=list)  # per fold: speakers and per-corpus scores
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)  # corpus -> condition -> mean/std
    pooled: dict[str, Any] = field(default_factory=dict)  # out-of-fold recall, temperature, ECE before/after
    cross_corpus: dict[str, dict[str, Any]] = field(default_factory=dict)  # corpus -> scores of models that never heard it
    minutes: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "k": self.k, "seed": self.seed, "folds": self.folds, "summary": self.summary,
                "pooled": self.pooled, "cross_corpus": self.cross_corpus, "minutes": round(self.minutes, 1)}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """The models one cross-validation trains, so that they can share a process pool with other jobs
    (``training.train.run`` trains the shipped model beside them).

    Clips of ``test_only`` corpora are never trained on: every fold's model is scored on all of them.
    With two or more trained corpora, one model per trained corpus X is also trained on the others only
    and scored on X: the cross-corpus cells ("trained without X, tested on X").
    """

    recipe: Recipe
    k: int
    seed: int
    test_only: frozenset[str] = frozenset()

    def folds(self, clips: list[Clip]) -> np.ndarray:
        """Each clip's fold, -1 for test-only corpora."""
        trained = [c for c in clips if c.corpus not in self.test_only]
        fold = np.full(len(clips), -1)
        fold[[c.corpus not in self.test_only for c in clips]] = speaker_folds(trained, self.k, self.seed)
        return fold

    def splits(self, clips: list[Clip]) -> tuple[list[Split], dict[str, Split]]:
        """The k fold splits, and the leave-one-corpus-out split of each trained corpus."""
        fold = self.folds(clips)
        corpus = np.array([c.corpus for c in clips])
        trained = sorted(set(corpus[fold >= 0]))
        empty = np.zeros(0, dtype=int)
        folds = [Split(np.flatnonzero((fold >= 0) & (fold != i)), empty, np.flatnonzero(fold == i)) for i in range(self.k)]
        left_out = {} if len(trained) < 2 else {
            x: Split(np.flatnonzero((fold >= 0) & (corpus != x)), empty, np.flatnonzero(corpus == x)) for x in trained
        }  # fmt: skip
        return folds, left_out

    def jobs(self, clips: list[Clip]) -> list[tuple[Recipe, Split]]:
        folds, left_out = self.splits(clips)
        return [(self.recipe, split) for split in [*folds, *sorted(left_out.values(), key=lambda s: -len(s.train))]]

    def result(
        self, clips: list[Clip], features: np.ndarray, y: np.ndarray, labels: tuple[str, ...], trained: list[Trained], minutes: float
    ) -> CrossValidation:
        """Score the models ``jobs`` trained (in its order) on their held-out clips."""
        folds, left_out = self.splits(clips)
        fold_models, corpus_models = trained[: self.k], trained[self.k :]
        mask = label_mask(clips, labels)
        scored = inputs(self.recipe, clips, features, self.seed)
        logits = {name: np.zeros((len(clips), len(labels)), dtype=np.float32) for name in scored}
        result = CrossValidation(self.recipe.name, self.k, self.seed, minutes=minutes)
        corpora = sorted({c.corpus for c in clips} - self.test_only)
        for i, (split, done) in enumerate(zip(folds, fold_models)):
            row: dict[str, Any] = {"fold": i + 1, "speakers": sorted({clips[j].speaker for j in split.test}), "minutes": round(done.minutes, 1)}
            for name, x in scored.items():
                logits[name][split.test] = predict(done.model, x[split.test])
                for corpus in corpora:
                    idx = split.test[[clips[j].corpus == corpus for j in split.test]]
                    row.setdefault(corpus, {})[name] = fold_scores(y[idx], logits[name][idx], mask[idx], labels)
            result.folds.append(row)
        result.summary = summarize(result.folds, corpora, scored)
        clean, held = logits["clean"], np.flatnonzero(self.folds(clips) >= 0)
        temperature = fit_temperature(masked_logits(clean[held].astype(np.float64), mask[held]), y[held])
        for corpus in corpora:
            idx = np.flatnonzero([c.corpus == corpus for c in clips])
            result.pooled[corpus] = pooled(clean[idx], y[idx], mask[idx], temperature, labels)
        result.pooled["temperature"] = temperature
        clean_x, names = scored["clean"], np.array([c.corpus for c in clips])

        def logits_of(model: EmotionNet) -> Callable[[np.ndarray], np.ndarray]:
            return lambda keep: predict(model, clean_x[keep])

        for corpus in sorted(self.test_only & {c.corpus for c in clips}):
            idx = np.flatnonzero(names == corpus)
            result.cross_corpus[corpus] = never_heard([(logits_of(d.model), split.train) for d, split in zip(fold_models, folds)],
                                                      y, mask, names, idx, temperature, labels, "each fold's model")  # fmt: skip
        for (corpus, split), done in zip(sorted(left_out.items(), key=lambda kv: -len(kv[1].train)), corpus_models):
            result.cross_corpus[corpus] = never_heard([(logits_of(done.model), split.train)], y, mask, names, split.test, temperature,
                                                      labels, "one model trained on the others")  # fmt: skip
        return result


def cross_validate(
    plan: Plan, clips: list[Clip], features: np.ndarray, y: np.ndarray, labels: tuple[str, ...], workers: int
) -> CrossValidation:
    """Train the plan's models (``workers`` single-threaded processes at a time) and score them."""
    started = time.perf_counter()
    trained = train_side_by_side(
        plan.jobs(clips), features, y, len(labels), plan.seed, workers, label_mask(clips, labels),
        training_references(plan.recipe, clips, features, plan.seed), corpus_ids(clips),
    )  # fmt: skip
    return plan.result(clips, features, y, labels, trained, (time.perf_counter() - started) / 60)


def markdown(cv: dict[str, Any]) -> str:
    """The table for the README and the model card, from ``CrossValidation.to_dict()``."""
    lines = [
        f"Speaker-grouped {cv['k']}-fold cross-validation, seed {cv['seed']}, recipe: {cv['recipe']}. Mean ± standard "
        "deviation over folds; argmax over the labels each corpus has.",
        "",
        "| corpus | clips | accuracy clean | macro-F1 clean | accuracy Opus 24k | ECE raw -> calibrated (pooled) |",
        "|---|---|---|---|---|---|",
    ]
    for corpus, conditions in cv["summary"].items():
        pooled = cv["pooled"][corpus]
        clean, opus = conditions["clean"], conditions["opus24"]
        lines.append(
            f"| {corpus} | {pooled['n']} | {clean['accuracy']['mean']:.1%} ± {clean['accuracy']['std']:.1%} | "
            f"{clean['macro_f1']['mean']:.3f} ± {clean['macro_f1']['std']:.3f} | "
            f"{opus['accuracy']['mean']:.1%} ± {opus['accuracy']['std']:.1%} | "
            f"{pooled['ece_raw']:.3f} -> {pooled['ece_calibrated']:.3f} |"
        )
    others = [(corpus, name, values) for corpus, conditions in cv["summary"].items() for name, values in conditions.items()
              if name not in CONDITIONS]  # fmt: skip
    lines += [""] if others else []
    for corpus, name, values in others:
        lines.append(f"- {corpus}, {name}: accuracy {values['accuracy']['mean']:.1%} ± {values['accuracy']['std']:.1%}, "
                     f"macro-F1 {values['macro_f1']['mean']:.3f} ± {values['macro_f1']['std']:.3f}.")  # fmt: skip
    if cv.get("cross_corpus"):
        lines += [
            "",
            "Cross-corpus: each corpus scored by models that never heard it (clean, calibrated; over the labels both it",
            "and the training data have). Confidently wrong: wrong answers given above the \"unsure\" threshold.",
            "",
            "| corpus | trained on | scored by | clips | accuracy | macro-F1 | ECE | confidently wrong |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for corpus, c in cv["cross_corpus"].items():
            lines.append(
                f"| {corpus} | {' + '.join(c['trained_on'])} | {c['how']} | {c['n']} | {c['accuracy']['mean']:.1%} ± "
                f"{c['accuracy']['std']:.1%} | {c['macro_f1']['mean']:.3f} | {c['ece']['mean']:.3f} | {c['confident_wrong']['mean']:.1%} |"
            )
    lines += ["", f"Temperature fitted on the pooled out-of-fold logits: {cv['pooled']['temperature']:.2f}.", ""]
    for corpus in cv["summary"]:
        recall = ", ".join(f"{label} {value:.0%}" for label, value in cv['pooled'][corpus]["recall"].items())
        lines.append(f"- {corpus}, out-of-fold recall per class: {recall}.")
    lines += ["", "| fold | held-out speakers | " + " | ".join(f"{c} accuracy" for c in cv['summary']) + " |",
              "|---|---|" + "---|" * len(cv["summary"])]  # fmt: skip
    for row in cv["folds"]:
        cells = " | ".join(f"{row[c]['clean']['accuracy']:.1%}" if c in row else "-" for c in cv['summary'])
        shown = ", ".join(row["speakers"][:12]) + (f" (+{len(row['speakers']) - 12})" if len(row["speakers"]) > 12 else "")
        lines.append(f"| {row['fold']} | {shown} | {cells} |")
    lines.append(f"\nWhole run: {cv['minutes']:.0f} min.")
    return "\n".join(lines) + "\n"
