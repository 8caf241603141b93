"""Recipes of the plain head without any baseline (docs/models.md, "Nothing tried moves a language never
heard"): L2 strength, each embedding standardised over its own dimensions, EmoSpeech trained on too.
Accuracy over each corpus's labels; the trained corpora by held-out speakers, the others by every fold's
head; then each trained corpus by the head trained on the others."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from common import TRAINED, Setting, groups, setting, table

from sera.training.learners.whisper.head import Data, fit_plain
from sera.training.protocol import masked_logits


def by_dimension(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)


def run(s: Setting, rows: dict, name: str, trained: tuple[str, ...], transform: Callable[[np.ndarray], np.ndarray] = lambda x: x,
        l2: float = 300.0) -> None:  # fmt: skip
    data = Data(transform(s.data.x), s.data.y, s.data.mask, s.data.speaker, s.data.corpus)
    _, splits, left_out = s.folds(trained)
    cells = rows.setdefault(name, {})
    for split in splits:
        head = fit_plain(data, split.train, l2)
        for c, idx in groups(data, split, trained).items():
            cells.setdefault(c, []).append(np.mean(masked_logits(head.logits(data.x[idx]), data.mask[idx]).argmax(1) == data.y[idx]))
    for c, split in sorted(left_out.items()):
        head = fit_plain(data, split.train, l2)
        allowed = data.mask[split.train].any(0)
        idx = split.test[allowed[data.y[split.test]]]
        hits = masked_logits(head.logits(data.x[idx]), data.mask[idx] & allowed).argmax(1) == data.y[idx]
        rows.setdefault(f"  {name}: {c} left out", {})[c] = [float(hits.mean())]


if __name__ == "__main__":
    s = setting(__doc__)
    rows: dict = {}
    run(s, rows, "shipped recipe (L2 300)", TRAINED)
    run(s, rows, "L2 3000", TRAINED, l2=3000.0)
    run(s, rows, "L2 10000", TRAINED, l2=10000.0)
    run(s, rows, "standardised over its own dimensions", TRAINED, by_dimension)
    run(s, rows, "trained on EmoSpeech too", (*TRAINED, "emospeech"))
    table(rows)
