"""Three ways to serve more of what a speaker's own voice gives (docs/models.md, "What a speaker's own
voice could give"), each against no baseline, with a mixed baseline and with one all of the scored
clip's own emotion (the case a served design must survive):

1. the shipped baseline head (fixed correction), used only when at most a share of the baseline is
   heard as one emotion;
2. a learned correction: the head sees the clip minus the baseline's mean and the share heard as each
   emotion, trained on mixed references, or on mixed, own-emotion and one-other-emotion ones;
3. a head trained on neutral enrolments, scored with an enrolment, a mix and one of the clip's emotion.

Every answer is the plain head's probabilities averaged with the baseline head's, as served."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from common import TRAINED, groups, setting, table

from sera.emotions import EMOTIONS
from sera.model import softmax
from sera.training.learners.whisper import baseline
from sera.training.learners.whisper.encoder import Heads
from sera.training.learners.whisper.head import (
    REFERENCE_CLIPS, Data, Plain, baseline_head, corpus_weights, familiar, fit_baseline, fit_linear, fit_plain, heard_out_of_fold,
)  # fmt: skip
from sera.training.protocol import masked_logits

TEMPERATURE, SLOPE = 1.26, 0.5  # the shipped calibration
SHARES = (1.0, 0.7, 0.6, 0.5, 0.4)  # the most of a baseline heard as one emotion for it to be used
SIZES = (3, 5, 10, 20)  # baseline sizes the shipped head's share rule is tried at
MIXES = {"learned, mixed": ("mixed",), "learned, mixed+own+other": ("mixed", "own emotion only", "one other emotion only")}


def learned(data: Data, idx: np.ndarray, plain: Plain, pickers: dict, kinds: tuple[str, ...], seed: int) -> Heads:
    """logits = (z - mean z of the reference) @ W + share @ M + b, held by the graph as shifts = M pinv(W)."""
    rng, labels = np.random.default_rng(seed), len(EMOTIONS)
    heard, z = heard_out_of_fold(data, idx, plain.l2), plain.standardise(data.x)
    inputs, rows = [], []
    for kind in kinds:
        for i in idx:
            chosen = pickers[kind](idx[(data.speaker[idx] == data.speaker[i]) & (idx != i)], i, rng, REFERENCE_CLIPS)
            if len(chosen):
                inputs.append(np.concatenate([z[i] - z[chosen].mean(0), np.bincount(heard[chosen], minlength=labels) / len(chosen)]))
                rows.append(i)
    rows = np.array(rows)
    w, b = fit_linear(np.stack(inputs), data.y[rows], data.mask[rows], corpus_weights(data.corpus[rows]), plain.l2)
    return Heads(plain.center, plain.scale, plain.w, plain.b, w[:-labels], b, w[-labels:] @ np.linalg.pinv(w[:-labels]), *familiar(z[idx]), plain.l2)


def top_share(data: Data, idx: np.ndarray, heard: np.ndarray, pick, k: int, seed: int) -> np.ndarray:
    """The largest share of each clip's baseline heard as one emotion: the draws ``against_baselines`` makes."""
    rng, top = np.random.default_rng(seed), np.ones(len(idx))
    for row, i in enumerate(idx):
        chosen = pick(idx[(data.speaker[idx] == data.speaker[i]) & (idx != i)], i, rng, k)
        if len(chosen):
            top[row] = np.bincount(heard[chosen], minlength=len(EMOTIONS)).max() / len(chosen)
    return top


if __name__ == "__main__":
    s = setting(__doc__)
    data, (_, splits, _) = s.data, s.folds()
    pickers = baseline.kinds(data, EMOTIONS)
    rows: dict = {}

    def add(name: str, corpus: str, answer: np.ndarray, truth: np.ndarray) -> None:
        rows.setdefault(name, {}).setdefault(corpus, []).append(float(np.mean(answer.argmax(1) == truth)))

    for f, split in enumerate(splits):
        plain = fit_plain(data, split.train, 300.0)
        heads = {"shipped": fit_baseline(data, split.train, plain, 0)}
        heads |= {name: learned(data, split.train, plain, pickers, kinds, f) for name, kinds in MIXES.items()}
        w, b, shifts = baseline_head(data, split.train, plain, f, pickers["neutral enrolment"], corrected=False)
        heads["enrolment"] = replace(heads["shipped"], baseline_w=w, baseline_b=b, shifts=shifts)
        for c, idx in groups(data, split).items():
            mask, truth = data.mask[idx], data.y[idx]
            logits = baseline.calibrated_plain(heads["shipped"], data.x[idx], SLOPE)
            heard = np.zeros(len(data.y), dtype=int)
            heard[idx] = logits.argmax(1)
            probs = softmax(masked_logits(logits, mask), TEMPERATURE)
            add("none", c, probs, truth)
            for name, head in heads.items():
                scored = ("neutral enrolment", "mixed", "own emotion only") if name == "enrolment" else ("mixed", "own emotion only")
                sizes = SIZES if name == "shipped" and c in TRAINED else (REFERENCE_CLIPS,)
                for kind, size in ((kind, size) for kind in scored for size in sizes):
                    against, counts = baseline.against_baselines(head, data, idx, heard, pickers[kind], size, f)
                    with_baseline = (probs + softmax(masked_logits(against, mask), 1.0)) / 2
                    shares = SHARES if name == "shipped" else (1.0,)
                    top = top_share(data, idx, heard, pickers[kind], size, f) if name == "shipped" else np.zeros(len(idx))
                    for share in shares:
                        used = (counts > 0) & (top <= share)
                        label = f"{name}, {size} {kind}" + (f", used at share <= {share}" if share < 1 else "")
                        add(label, c, np.where(used[:, None], with_baseline, probs), truth)
        print(f"fold {f + 1} done", flush=True)
    table(rows)
