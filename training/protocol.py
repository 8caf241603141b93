"""The evaluation protocol every emotion model's training shares, written once: how a model is judged
on voices, corpora and languages it never heard.

A learner (the CNN's process pool of fits, the Whisper model's embeddings and linear heads) supplies
logits; the protocol decides the rest: speakers dealt into folds by corpus and gender, the labels each
clip's corpus has (a pooled model compares a clip only with those), the conditions a clip is scored in,
calibration on pooled out-of-fold logits, a figure's spread over folds, and the cells for a corpus no
model of the fold ever heard. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sera.corpora import LABELS, Clip
from sera.emotions import UNSURE_BELOW
from sera.metrics import score
from sera.model import softmax

CONDITIONS = ("clean", "opus24")  # every held-out clip as it is, and as a 24 kbit/s Opus voice note
ENROLMENT = frozenset({"neutral", "calm"})  # what "a few ordinary sentences" of a user's voice sound like
OPSET = 17  # the ONNX opset every model is exported with


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_by_speaker(clips: list[Clip], val: set[str], test: set[str]) -> Split:
    speakers = np.array([c.speaker for c in clips])
    if val & test:
        raise ValueError("a speaker cannot be both validation and test")
    in_val, in_test = np.isin(speakers, list(val)), np.isin(speakers, list(test))
    return Split(np.flatnonzero(~in_val & ~in_test), np.flatnonzero(in_val), np.flatnonzero(in_test))


def speaker_folds(clips: list[Clip], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each clip; all clips of a speaker share one.

    Speakers are dealt round-robin, per corpus and gender in a seeded order, continuing the deal from one
    group to the next, so each fold gets a like number of each corpus's women and men."""
    speakers = sorted({(c.corpus, c.gender, c.speaker) for c in clips})
    if k < 2 or k > len(speakers):
        raise ValueError(f"{k} folds need between 2 and {len(speakers)} speakers' worth of folds")
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


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of ``truth`` (Guo et al. 2017), by grid search."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 200))
    nll = [-np.mean(np.log(softmax(logits, t)[np.arange(len(truth)), truth] + 1e-12)) for t in grid]
    return float(grid[int(np.argmin(nll))])


def spread(values: list[dict[str, float]], metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over folds of each metric: a difference inside it is no difference."""
    return {m: {"mean": float(np.mean([v[m] for v in values])), "std": float(np.std([v[m] for v in values]))} for m in metrics}


def confidently_wrong(probs: np.ndarray, truth: np.ndarray) -> float:
    """The share of answers that are wrong yet above the "unsure" threshold: said with confidence."""
    return float(np.mean((probs.argmax(axis=1) != truth) & (probs.max(axis=1) >= UNSURE_BELOW)))


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
            "ece_raw": before.ece, "ece_calibrated": after.ece, "confident_wrong": confidently_wrong(probs, truth)}  # fmt: skip


Logits = Callable[[np.ndarray], np.ndarray]  # a model's logits for the clips at these indices


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
                          "confident_wrong": confidently_wrong(probs, y[keep])})  # fmt: skip
    trained_on = sorted(set(corpus[models[0][1]].tolist()))
    return {"how": how, "n": per_model[0]["n"], "trained_on": trained_on} | spread(per_model, ("accuracy", "macro_f1", "ece", "confident_wrong"))
