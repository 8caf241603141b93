"""What both recipes (the CNN's and the Whisper model's) share: speaker splits, which labels each clip's
corpus has, and calibration. numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sera.corpora import LABELS, Clip
from sera.model import softmax


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


def label_mask(clips: list[Clip], labels: tuple[str, ...]) -> np.ndarray:
    """``(clips, labels)``: True where the clip's corpus has that label (all of them for an unknown corpus)."""
    return np.array([[label in LABELS.get(c.corpus, labels) for label in labels] for c in clips])


def corpus_ids(clips: list[Clip]) -> np.ndarray:
    """A small integer per clip naming its corpus, for ``balanced_batches``."""
    return np.unique([c.corpus for c in clips], return_inverse=True)[1]


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """Temperature minimising validation negative log-likelihood (Guo et al. 2017), by grid search."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 200))
    nll = [-np.mean(np.log(softmax(logits, t)[np.arange(len(truth)), truth] + 1e-12)) for t in grid]
    return float(grid[int(np.argmin(nll))])


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


def spread(values: list[dict[str, float]], metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {m: {"mean": float(np.mean([v[m] for v in values])), "std": float(np.std([v[m] for v in values]))} for m in metrics}


def masked_probabilities(logits: np.ndarray, mask: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the labels each clip's corpus has (the others get probability 0)."""
    return softmax(np.where(mask, logits, -np.inf), temperature)
