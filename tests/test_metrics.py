"""The figures every table in the README rests on, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sera.metrics import score

LABELS = ("a", "b", "c", "d")
TRUTH = [0, 0, 1, 1, 2]
PROBS = np.array([
    [0.91, 0.09, 0.00, 0.00],  # a, right, 0.91
    [0.38, 0.62, 0.00, 0.00],  # b for a: wrong, 0.62
    [0.17, 0.83, 0.00, 0.00],  # b, right, 0.83
    [0.00, 0.29, 0.00, 0.71],  # d for b: wrong, 0.71 (d is never the truth)
    [0.03, 0.00, 0.97, 0.00],  # c, right, 0.97
])  # fmt: skip


def test_scores_match_hand_computed_values() -> None:
    s = score(TRUTH, PROBS, LABELS)
    assert s.n == 5 and s.accuracy == pytest.approx(3 / 5)
    # F1 per class: a 2*(1*0.5)/1.5 = 2/3, b 0.5, c 1, d 0 (predicted once, never true): it counts.
    assert s.macro_f1 == pytest.approx((2 / 3 + 0.5 + 1 + 0) / 4)  # 0.542, not 0.722 over the true labels only
    assert s.per_class["a"] == {"recall": 0.5, "precision": 1.0, "f1": 0.6667, "support": 2}
    assert s.per_class["d"] == {"recall": 0.0, "precision": 0.0, "f1": 0.0, "support": 0}
    assert s.confusion == [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]]
    # each answer in its own 1/15-wide confidence bin: ECE is the mean |correct - confidence|
    assert s.ece == pytest.approx((0.09 + 0.62 + 0.17 + 0.71 + 0.03) / 5)


def test_a_label_neither_true_nor_predicted_does_not_count() -> None:
    """nEMO has no calm: a pooled model scored on it over its own labels is not docked for calm."""
    s = score([0, 1], np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0]]), LABELS)
    assert s.macro_f1 == 1.0 and s.accuracy == 1.0 and s.ece == pytest.approx((0.1 + 0.2) / 2)


def test_nothing_to_score_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError, match="no predictions"):
        score([], np.zeros((0, 4)), LABELS)
