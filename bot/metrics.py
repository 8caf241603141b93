"""Classification metrics shared by ``sera evaluate`` and training (numpy only, no sklearn)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    """Metrics for integer ``truth`` against ``(n, classes)`` probabilities."""
    truth = np.asarray(truth, dtype=int)
    predicted = probs.argmax(axis=1)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)
    per_class, f1s = {}, []
    for i, label in enumerate(labels):
        support = int(confusion[i].sum())
        tp = confusion[i, i]
        recall = tp / support if support else 0.0
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "recall": round(float(recall), 4),
            "precision": round(float(precision), 4),
            "f1": round(float(f1), 4),
            "support": support,
        }
        if support:
            f1s.append(f1)
    return Scores(
        labels=tuple(labels),
        n=int(truth.size),
        accuracy=float((predicted == truth).mean()) if truth.size else 0.0,
        macro_f1=float(np.mean(f1s)) if f1s else 0.0,
        ece=expected_calibration_error(truth, probs),
        per_class=per_class,
        confusion=confusion.tolist(),
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
