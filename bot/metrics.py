"""Classification metrics shared by ``sera evaluate`` and training: scikit-learn's (it comes with
librosa), with the label set spelt out, and a hand-written expected calibration error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

ECE_BINS = 15


@dataclass(frozen=True)
class Scores:
    labels: tuple[str, ...]
    n: int
    accuracy: float
    macro_f1: float
    ece: float
    per_class: dict[str, dict[str, float]]  # label -> recall, precision, f1, support
    confusion: list[list[int]]  # rows: true label, columns: predicted label

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "ece": round(self.ece, 4),
            "per_class": self.per_class,
            "confusion": self.confusion,
            "labels": list(self.labels),
        }


def score(truth: Sequence[int], probs: np.ndarray, labels: Sequence[str]) -> Scores:
    """Metrics for integer ``truth`` against ``(n, classes)`` probabilities.

    Macro-F1 averages over the labels that occur in the truth or the predictions (scikit-learn's
    default): a label predicted but never true counts, with F1 0; a label of the model that a corpus
    does not have (nEMO's calm) and that is never predicted does not."""
    truth = np.asarray(truth, dtype=int)
    predicted = probs.argmax(axis=1)
    every = list(range(len(labels)))
    present = sorted(set(truth.tolist()) | set(predicted.tolist()))
    if not truth.size:
        raise ValueError("no predictions to score")
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=every, zero_division=0)
    return Scores(
        labels=tuple(labels),
        n=int(truth.size),
        accuracy=float((predicted == truth).mean()),
        macro_f1=float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0)),
        ece=expected_calibration_error(truth, probs),
        per_class={
            label: {"recall": round(float(recall[i]), 4), "precision": round(float(precision[i]), 4),
                    "f1": round(float(f1[i]), 4), "support": int(support[i])}
            for i, label in enumerate(labels)
        },  # fmt: skip
        confusion=confusion_matrix(truth, predicted, labels=every).tolist(),
    )


def expected_calibration_error(truth: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean gap between confidence and accuracy over equal-width confidence bins, weighted by count."""
    if truth.size == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(gap)
