"""The protocol every emotion model's training follows, written once: how a model is judged on voices,
corpora and languages it never heard, and how the shipped one is trained beside that judgement.

A learner (``training/learners/NAME``: the CNN's process pool of fits, the Whisper model's embeddings
and linear heads) supplies only what differs: its inputs, a fit on some clips, logits per condition,
its own extra measurements and the export. The protocol decides the rest: speakers dealt into folds by
corpus and gender, one model per fold, per corpus left out and on every speaker, all fitted in one
call (so a learner can run them side by side); the labels each clip's corpus has (a pooled model
compares a clip only with those); the conditions a clip is scored in; calibration on pooled
out-of-fold logits and on corpora left out (a temperature that grows with how unfamiliar a clip is, for
a learner that can say); a figure's spread over folds; the cells for a corpus no model of the fold ever
heard. numpy only, as speechbrain's ``Brain.fit`` holds the loop and a recipe the parts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sera.corpora import LABELS, Clip
from sera.emotions import UNSURE_BELOW
from sera.errors import SeraError
from sera.metrics import score
from sera.model import UNFAMILIAR_RANGE, softmax
from sera.training.results import Shipped

log = logging.getLogger(__name__)

CONDITIONS = ("clean", "opus24")  # every held-out clip as it is, and as a 24 kbit/s Opus voice note
ENROLMENT = frozenset({"neutral", "calm"})  # what "a few ordinary sentences" of a user's voice sound like
OPSET = 17  # the ONNX opset every model is exported with
SLOPE_GRID = np.round(np.arange(0.0, 1.51, 0.05), 2)  # how fast the temperature may grow with unfamiliarity


@dataclass(frozen=True)
class Split:
    """Clip indices: a model is fitted on ``train`` and scored on ``test`` (whole speakers or corpora)."""

    train: np.ndarray
    test: np.ndarray


def speaker_folds(clips: list[Clip], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each clip; all clips of a speaker share one.

    Speakers are dealt round-robin, per corpus and gender in a seeded order, continuing the deal from one
    group to the next, so each fold gets a like number of each corpus's women and men."""
    speakers = sorted({(c.corpus, c.gender, c.speaker) for c in clips})
    if k < 2 or k > len(speakers):
        raise SeraError(f"{k} folds: speaker-grouped cross-validation needs from 2 to {len(speakers)} folds here (a speaker or more held out in each)")
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    dealt = 0
    for group in sorted({(corpus, gender) for corpus, gender, _ in speakers}):
        members = [s for corpus, gender, s in speakers if (corpus, gender) == group]
        for speaker in rng.permutation(members):
            fold_of[str(speaker)] = dealt % k
            dealt += 1
    return np.array([fold_of[c.speaker] for c in clips])


def corpus_ids(clips: list[Clip]) -> np.ndarray:
    """A small integer per clip naming its corpus, for ``balanced_batches``."""
    return np.unique([c.corpus for c in clips], return_inverse=True)[1]


def label_mask(clips: list[Clip], labels: tuple[str, ...]) -> np.ndarray:
    """``(clips, labels)``: True where the clip's corpus has that label (all of them for an unknown corpus)."""
    return np.array([[label in LABELS.get(c.corpus, labels) for label in labels] for c in clips])


def masked_logits(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Logits with the labels a clip's corpus lacks taken out (``-inf``: probability 0 after softmax)."""
    return np.where(mask, logits, -np.inf)


def masked_probabilities(logits: np.ndarray, mask: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the labels each clip's corpus has (the others get probability 0)."""
    return softmax(masked_logits(logits, mask), temperature)


def nll(logits: np.ndarray, truth: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``truth``."""
    return float(-np.mean(np.log(softmax(logits, temperature)[np.arange(len(truth)), truth] + 1e-12)))


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of ``truth`` (Guo et al. 2017), by grid search."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 200))
    return float(grid[int(np.argmin([nll(logits, truth, t) for t in grid]))])


def unfamiliar_scale(unfamiliar: np.ndarray, slope: float) -> np.ndarray:
    """``(clips, 1)``: what each clip's logits are divided by before the temperature, ``unfamiliar **
    slope`` (as ``sera.model.ModelInfo.temperature_for`` serves it): a clip far from everything the model
    was trained on (a language, a microphone, a voice it never heard) gets flatter probabilities."""
    return np.clip(unfamiliar, *UNFAMILIAR_RANGE)[:, None] ** slope


def fit_calibration(logits: np.ndarray, truth: np.ndarray, unfamiliar: np.ndarray) -> tuple[float, float]:
    """``(temperature, slope)`` minimising the negative log-likelihood of ``truth`` when each clip's
    logits are divided by ``temperature * unfamiliar ** slope``; the slope by grid search, each with its
    best temperature. Fitted on clips of corpora the scoring model never heard as well as on voices it
    never heard, it is calibration "where the model has never been" without touching a test-only corpus."""
    fits = []
    for slope in SLOPE_GRID:
        scaled = logits / unfamiliar_scale(unfamiliar, slope)
        t = fit_temperature(scaled, truth)
        fits.append((nll(scaled, truth, t), t, float(slope)))
    _, temperature, slope = min(fits)
    return temperature, slope


def spread(values: list[dict[str, float]], metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over folds of each metric: a difference inside it is no difference."""
    return {m: {"mean": float(np.mean([v[m] for v in values])), "std": float(np.std([v[m] for v in values]))} for m in metrics}


def confidently_wrong(probs: np.ndarray, truth: np.ndarray) -> float:
    """The share of answers that are wrong yet above the "unsure" threshold: said with confidence."""
    return float(np.mean((probs.argmax(axis=1) != truth) & (probs.max(axis=1) >= UNSURE_BELOW)))


def selective(probs: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Selective accuracy: the share of clips answered with an emotion (the rest "unsure", below the
    threshold) and how many of those answers are right, as ``sera evaluate`` reports it."""
    sure = probs.max(axis=1) >= UNSURE_BELOW
    return {"answered": float(np.mean(sure)), "answered_accuracy": float(np.mean(probs[sure].argmax(axis=1) == truth[sure])) if sure.any() else 0.0}


def fold_scores(truth: np.ndarray, logits: np.ndarray, mask: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
    """One fold's figures on held-out clips, over the labels each clip's corpus has."""
    s = score(truth, masked_probabilities(logits, mask), labels)
    return {"n": s.n, "accuracy": s.accuracy, "macro_f1": s.macro_f1, "ece": s.ece}


def summarize(folds: list[dict[str, Any]], corpora: list[str], conditions: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per corpus and condition, each figure's mean and spread over the folds."""
    names = list(conditions)
    return {corpus: {name: spread([f[corpus][name] for f in folds], ("accuracy", "macro_f1", "ece")) for name in names} for corpus in corpora}


def pooled(logits: np.ndarray, truth: np.ndarray, mask: np.ndarray, temperature: float, labels: tuple[str, ...]) -> dict[str, Any]:
    """One corpus's pooled out-of-fold figures: recall per class it has, ECE before and after the
    temperature, and the share of answers wrong yet above the "unsure" threshold."""
    before = score(truth, masked_probabilities(logits, mask), labels)
    probs = masked_probabilities(logits, mask, temperature)
    after = score(truth, probs, labels)
    present = [label for i, label in enumerate(labels) if mask[0, i]]
    return {"n": before.n, "accuracy": before.accuracy, "recall": {label: before.per_class[label]["recall"] for label in present},
            "ece_raw": before.ece, "ece_calibrated": after.ece, "confident_wrong": confidently_wrong(probs, truth)} | selective(probs, truth)  # fmt: skip


Logits = Callable[[np.ndarray], np.ndarray]  # a model's logits for the clips at these indices
CELL_FIGURES = ("accuracy", "macro_f1", "ece", "confident_wrong", "answered", "answered_accuracy")  # of a corpus never heard


def never_heard(models: list[tuple[Logits, np.ndarray]], y: np.ndarray, mask: np.ndarray, corpus: np.ndarray, idx: np.ndarray,
                temperature: float, labels: tuple[str, ...], how: str) -> dict[str, Any]:  # fmt: skip
    """A corpus scored by models that never heard it (clean, calibrated with the out-of-fold temperature).
    ``models``: each one's logits and the clips it was trained on. Each answers over the labels both the
    corpus and its training corpora have; clips whose label its training corpora lack (RAVDESS's calm
    for a model trained on nEMO alone) are left out, since no model could name them."""
    per_model = []
    for logits_of, train in models:
        allowed = mask[train].any(axis=0)
        keep = idx[allowed[y[idx]]]
        probs = masked_probabilities(logits_of(keep), mask[keep] & allowed, temperature)
        s = score(y[keep], probs, labels)
        per_model.append({"n": s.n, "accuracy": s.accuracy, "macro_f1": s.macro_f1, "ece": s.ece,
                          "confident_wrong": confidently_wrong(probs, y[keep])} | selective(probs, y[keep]))  # fmt: skip
    trained_on = sorted(set(corpus[models[0][1]].tolist()))
    return {"how": how, "n": per_model[0]["n"], "trained_on": trained_on} | spread(per_model, CELL_FIGURES)


# -- the learner's part, and the protocol around it ----------------------------------------------------


class Learner(Protocol):
    """What a model brings to the protocol (``make`` in ``training/learners/NAME/learner.py`` makes one). A fitted
    model is whatever the learner's ``fit`` returns; the protocol only hands it back."""

    name: str  # ``sera train --model NAME``; its results file is ``NAME-results.json``
    conditions: tuple[str, ...]  # what held-out clips are scored in: ``CONDITIONS``, then the learner's own

    def prepare(self, clips: list[Clip], labels: tuple[str, ...]) -> None:
        """Compute, or read from its cache, what it learns from (features, embeddings) for every clip."""

    def fit(self, jobs: list[np.ndarray]) -> list[Any]:
        """One model per set of clip indices, in the order given (the learner may fit them side by side)."""

    def logits(self, model: Any, condition: str, idx: np.ndarray) -> np.ndarray:
        """A model's logits over every label for the clips at ``idx``, heard in ``condition``."""

    def unfamiliarity(self, model: Any, idx: np.ndarray) -> np.ndarray | None:
        """How far each clip at ``idx`` (clean) lies from the clips ``model`` was trained on, 1 for a
        typical training clip; None for a learner with no such measure (its temperature is then one
        number, fitted on voices never heard in the corpora it was trained on)."""

    def measure(self, folds: list[tuple[Any, Split]], cv: dict[str, Any]) -> dict[str, Any]:
        """The learner's own cross-validated figures (the Whisper model's personal baselines), added to
        the record; ``{}`` when it has none."""

    def describe(self) -> dict[str, Any]:
        """What it trains, for the results record and the card (architecture, options)."""

    def export(self, model: Any, trained: np.ndarray, cv: dict[str, Any], out: Path) -> Shipped:
        """The model fitted on every trained clip, written to ``out`` with the calibration ``cv`` fitted."""


def splits(clips: list[Clip], k: int, seed: int, test_only: frozenset[str]) -> tuple[np.ndarray, list[Split], dict[str, Split]]:
    """Each clip's fold (-1 for the test-only corpora, never trained on), the ``k`` fold splits, and for
    two or more trained corpora, per corpus X the split trained on the others and scored on X."""
    fold = np.full(len(clips), -1)
    trained = np.array([c.corpus not in test_only for c in clips])
    if not trained.any():
        raise ValueError("every corpus given is test-only: nothing to train on")
    fold[trained] = speaker_folds([c for c, t in zip(clips, trained) if t], k, seed)
    corpus = np.array([c.corpus for c in clips])
    folds = [Split(np.flatnonzero(trained & (fold != i)), np.flatnonzero(fold == i)) for i in range(k)]
    names = sorted(set(corpus[trained]))
    left_out = {} if len(names) < 2 else {x: Split(np.flatnonzero(trained & (corpus != x)), np.flatnonzero(corpus == x)) for x in names}
    return fold, folds, left_out


def cross_validate(learner: Learner, clips: list[Clip], labels: tuple[str, ...], k: int, seed: int, test_only: frozenset[str],
                   fold: np.ndarray, folds: list[tuple[Any, Split]], left_out: dict[str, tuple[Any, Split]]) -> dict[str, Any]:  # fmt: skip
    """The record of how the learner's models did on what they never heard: per fold, corpus and
    condition; mean and spread per corpus; pooled out-of-fold recall and calibration error; the
    calibration itself (a temperature, growing with each clip's unfamiliarity where the learner
    measures one, fitted on voices never heard and on each trained corpus as scored by the model that
    never heard it); the cross-corpus cells (test-only corpora by every fold's model, each trained
    corpus by the model trained without it); then the learner's own figures."""
    y = np.array([labels.index(c.label) for c in clips])
    mask = label_mask(clips, labels)
    corpus = np.array([c.corpus for c in clips])
    corpora = sorted(set(corpus[fold >= 0]))
    oof = {name: np.zeros((len(clips), len(labels))) for name in learner.conditions}
    rows: list[dict[str, Any]] = []
    for i, (model, split) in enumerate(folds):
        row: dict[str, Any] = {"fold": i + 1, "speakers": sorted({clips[j].speaker for j in split.test})}
        for name in learner.conditions:
            oof[name][split.test] = learner.logits(model, name, split.test)
            for c in corpora:
                idx = split.test[corpus[split.test] == c]
                row.setdefault(c, {})[name] = fold_scores(y[idx], oof[name][idx], mask[idx], labels)
        rows.append(row)
    held = np.flatnonzero(fold >= 0)
    model, split = folds[0]
    signal = learner.unfamiliarity(model, split.test[:1]) is not None  # whether the learner measures it at all

    def unfamiliar(model: Any, keep: np.ndarray) -> np.ndarray:
        return learner.unfamiliarity(model, keep) if signal else np.ones(len(keep))

    oof_unfamiliar = np.ones(len(clips))
    for model, split in folds:
        oof_unfamiliar[split.test] = unfamiliar(model, split.test)
    unheard: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # each trained corpus by the model that never heard it
    for c, (model, split) in sorted(left_out.items()):
        allowed = mask[split.train].any(axis=0)
        keep = split.test[allowed[y[split.test]]]
        unheard.append((masked_logits(learner.logits(model, "clean", keep), mask[keep] & allowed), y[keep], unfamiliar(model, keep)))
    in_language = (masked_logits(oof["clean"][held], mask[held]), y[held], oof_unfamiliar[held])
    if signal and unheard:  # voices and corpora never heard, together: calibrated where the model has never been
        temperature, slope = fit_calibration(*(np.concatenate(parts) for parts in zip(in_language, *unheard)))
    else:
        temperature, slope = fit_temperature(*in_language[:2]), 0.0
    cv: dict[str, Any] = {"k": k, "seed": seed, "folds": rows, "summary": summarize(rows, corpora, learner.conditions), "pooled": {}}
    calibrated = oof["clean"] / unfamiliar_scale(oof_unfamiliar, slope)
    for c in corpora:
        idx = np.flatnonzero(corpus == c)
        cv["pooled"][c] = pooled(calibrated[idx], y[idx], mask[idx], temperature, labels)
    cv["pooled"] |= {"temperature": temperature, "temperature_slope": slope}

    def heard_by(model: Any) -> Logits:
        return lambda keep: learner.logits(model, "clean", keep) / unfamiliar_scale(unfamiliar(model, keep), slope)

    cv["test_only"] = sorted(test_only & set(corpus.tolist()))
    cv["cross_corpus"] = {}
    for c in cv["test_only"]:
        cv["cross_corpus"][c] = never_heard([(heard_by(m), s.train) for m, s in folds], y, mask, corpus, np.flatnonzero(corpus == c),
                                            temperature, labels, "each fold's model")  # fmt: skip
    for c, (model, split) in sorted(left_out.items()):
        cv["cross_corpus"][c] = never_heard([(heard_by(model), split.train)], y, mask, corpus, split.test, temperature, labels,
                                            "one model trained on the others")  # fmt: skip
    if unheard:  # one temperature for a corpus never heard, for comparison: what a learner without unfamiliarity could do
        cv["pooled"]["temperature_unheard"] = fit_temperature(np.concatenate([x for x, _, _ in unheard]), np.concatenate([t for _, t, _ in unheard]))
    return cv | learner.measure(folds, cv)


def train(learner: Learner, clips: list[Clip], labels: tuple[str, ...], k: int, seed: int, test_only: frozenset[str],
          out: Path | None) -> tuple[dict[str, Any], Shipped | None, dict[str, float]]:  # fmt: skip
    """The whole protocol: the learner's inputs; the fold models, the models that leave a corpus out and
    (with ``out``) the model on every trained speaker, in one ``fit``; the cross-validation record; the
    export. Returns the record, the shipped file (None without ``out``) and the minutes each step took."""
    started = time.perf_counter()
    fold, fold_splits, left_out = splits(clips, k, seed, test_only)  # first: a wrong K is said before any work
    learner.prepare(clips, labels)
    prepared = time.perf_counter()
    trained = np.flatnonzero(fold >= 0)
    corpus_splits = sorted(left_out.items(), key=lambda kv: -len(kv[1].train))  # the longest fits first
    jobs = ([trained] if out else []) + [s.train for s in fold_splits] + [s.train for _, s in corpus_splits]
    log.info("%s: %d models to fit (%d folds, %d corpora left out%s)", learner.name, len(jobs), k, len(left_out),
             ", every trained speaker" if out else "")  # fmt: skip
    models = learner.fit(jobs)
    final = models.pop(0) if out else None
    fitted = time.perf_counter()
    cv = cross_validate(learner, clips, labels, k, seed, test_only, fold, list(zip(models[:k], fold_splits)),
                        {c: (m, s) for (c, s), m in zip(corpus_splits, models[k:])})  # fmt: skip
    shipped = learner.export(final, trained, cv, out) if out else None
    done = time.perf_counter()
    return cv, shipped, {"prepare": (prepared - started) / 60, "fit": (fitted - prepared) / 60, "score and export": (done - fitted) / 60,
                         "total": (done - started) / 60}  # fmt: skip
