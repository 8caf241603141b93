"""The linear heads over Whisper embeddings, and the personal baseline they are trained to use.

A head is multinomial logistic regression on the standardised embedding, fitted by L-BFGS on the
whole training set at once (a few seconds), with each clip's loss over the labels its corpus has
(nEMO has no calm and no disgust) and each corpus weighing the same however many clips it has.

The baseline head learns emotion as a departure from the speaker's own voice. Its input is the clip's
standardised embedding minus a reference: the mean of ``REFERENCE_CLIPS`` other clips of the same
speaker (never the clip itself), less ``shifts`` weighted by how many of those clips the plain head
hears as each emotion. Without that correction a speaker whose every clip is angry would have their
anger subtracted away (in cross-validation such a one-emotion baseline took accuracy from 75 % to
17 %); with it, and with the answer averaged with the plain head's, no kind of baseline tried (mixed,
one emotion, the clip's own emotion, neutral enrolment) scored below no baseline at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sera.model import softmax
from sera.training.learners.whisper.encoder import Heads
from sera.training.protocol import masked_logits

REFERENCE_CLIPS = 10  # clips in each training reference (what a user's first baseline holds)
REFERENCE_DRAWS = 3  # references per training clip
L2_GRID = (100.0, 300.0, 1000.0)  # the plain head's L2 strength, chosen by speaker-grouped CV inside the training data
INNER_FOLDS = 3
FAMILIAR_DIMS = 128  # principal directions of the training clips that count as familiar (at most a quarter of the clips)

Picker = Callable[[np.ndarray, int, np.random.Generator, int], np.ndarray]  # (speaker's other clips, clip, rng, k) -> a reference


@dataclass(frozen=True)
class Data:
    """Everything a head is fitted on or scored with: one row per clip."""

    x: np.ndarray  # (clips, dims) embeddings
    y: np.ndarray  # (clips,) label index
    mask: np.ndarray  # (clips, labels): the labels the clip's corpus has
    speaker: np.ndarray  # (clips,) speaker ids
    corpus: np.ndarray  # (clips,) corpus names


def fit_linear(z: np.ndarray, y: np.ndarray, mask: np.ndarray, weights: np.ndarray, l2: float, iterations: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Masked multinomial logistic regression: minimise the weighted mean cross-entropy over each clip's
    allowed labels plus ``l2 / 2 * |W|^2 / n``. Returns ``(W, b)``."""
    torch.set_num_threads(1)
    n = len(z)
    zt, yt, mt = torch.from_numpy(z.astype(np.float32)), torch.from_numpy(y.astype(np.int64)), torch.from_numpy(mask)
    wt = torch.from_numpy((weights / weights.sum()).astype(np.float32))
    w = torch.zeros(z.shape[1], mask.shape[1], requires_grad=True)
    b = torch.zeros(mask.shape[1], requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        logits = (zt @ w + b).masked_fill(~mt, -1e9)
        value = (torch.nn.functional.cross_entropy(logits, yt, reduction="none") * wt).sum() + 0.5 * l2 * (w**2).sum() / n
        value.backward()
        return value

    optimiser.step(loss)
    return w.detach().numpy(), b.detach().numpy()


def corpus_weights(corpus: np.ndarray) -> np.ndarray:
    """Each corpus weighs the same in the loss, whatever its number of clips."""
    weights = np.ones(len(corpus))
    for name in np.unique(corpus):
        weights[corpus == name] = 1.0 / np.sum(corpus == name)
    return weights


def inner_folds(speaker: np.ndarray, k: int = INNER_FOLDS) -> np.ndarray:
    """Speakers dealt round-robin into ``k`` folds, in sorted order (deterministic)."""
    order = {s: i % k for i, s in enumerate(sorted(set(speaker.tolist())))}
    return np.array([order[s] for s in speaker])


@dataclass(frozen=True)
class Plain:
    """The plain head and the standardisation it was fitted with."""

    center: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: np.ndarray
    l2: float

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (x - self.center) / self.scale

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.standardise(x) @ self.w + self.b


def fit_plain(data: Data, idx: np.ndarray, l2: float | None = None) -> Plain:
    """The plain head on clips ``idx``; ``l2`` chosen among ``L2_GRID`` by speaker-grouped CV inside
    them when not given."""
    center, scale = data.x[idx].mean(axis=0), data.x[idx].std(axis=0) + 1e-6
    if l2 is None:
        l2 = choose_l2(data, idx)
    z = (data.x[idx] - center) / scale
    w, b = fit_linear(z, data.y[idx], data.mask[idx], corpus_weights(data.corpus[idx]), l2)
    return Plain(center, scale, w, b, l2)


def choose_l2(data: Data, idx: np.ndarray) -> float:
    """The L2 strength with the best mean accuracy over inner speaker folds of ``idx``."""
    folds = inner_folds(data.speaker[idx])
    accuracy = {}
    for l2 in L2_GRID:
        hits = []
        for k in range(INNER_FOLDS):
            fit, held = idx[folds != k], idx[folds == k]
            head = fit_plain(data, fit, l2)
            hits.append(masked_logits(head.logits(data.x[held]), data.mask[held]).argmax(axis=1) == data.y[held])
        accuracy[l2] = float(np.mean(np.concatenate(hits)))
    return max(L2_GRID, key=lambda l2: (accuracy[l2], -l2))


def heard_out_of_fold(data: Data, idx: np.ndarray, l2: float) -> np.ndarray:
    """What the plain head hears in each clip of ``idx`` (label index, over all labels) when that clip's
    speaker was not among those it was fitted on: inner speaker folds. A head hears its own training
    clips far more surely than a user's, so references built in training must not use that."""
    heard = np.zeros(len(data.y), dtype=int)
    folds = inner_folds(data.speaker[idx])
    for k in range(INNER_FOLDS):
        fit, held = idx[folds != k], idx[folds == k]
        heard[held] = fit_plain(data, fit, l2).logits(data.x[held]).argmax(axis=1)
    return heard


def emotion_shifts(z: np.ndarray, y: np.ndarray, speaker: np.ndarray, labels: int) -> np.ndarray:
    """``(labels, dims)``: for each emotion, the mean over speakers of (that speaker's mean for the
    emotion minus the speaker's mean): what an emotion adds to a voice, on average."""
    total, count = np.zeros((labels, z.shape[1])), np.zeros(labels)
    for s in np.unique(speaker):
        own = speaker == s
        mean = z[own].mean(axis=0)
        for label in np.unique(y[own]):
            total[label] += z[own & (y == label)].mean(axis=0) - mean
            count[label] += 1
    return total / np.maximum(count, 1)[:, None]


def pick_mixed(candidates: np.ndarray, clip: int, rng: np.random.Generator, k: int = REFERENCE_CLIPS) -> np.ndarray:
    """Up to ``k`` of the candidates (the speaker's other clips), any emotion."""
    return rng.choice(candidates, size=min(k, len(candidates)), replace=False) if len(candidates) else candidates


def reference(plain: Plain, shifts: np.ndarray, x: np.ndarray, heard: np.ndarray, clips: np.ndarray, labels: int) -> np.ndarray:
    """The reference a baseline of ``clips`` gives (standardised space), as the graph computes it."""
    share = np.bincount(heard[clips], minlength=labels) / len(clips)
    return plain.standardise(x[clips].mean(axis=0)) - share @ shifts


def fit_baseline(data: Data, idx: np.ndarray, plain: Plain, seed: int) -> Heads:
    """Both heads on clips ``idx`` as the graph holds them: the plain one, the baseline head
    (``baseline_head``) and the familiar subspace."""
    return Heads(plain.center, plain.scale, plain.w, plain.b, *baseline_head(data, idx, plain, seed), *familiar(plain.standardise(data.x[idx])),
                 plain.l2)  # fmt: skip


def baseline_head(data: Data, idx: np.ndarray, plain: Plain, seed: int, pick: Picker = pick_mixed,
                  corrected: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``(w, b, shifts)`` of the baseline head on clips ``idx``, each seen against ``REFERENCE_DRAWS``
    references of ``REFERENCE_CLIPS`` of its speaker's other clips drawn by ``pick``. ``corrected=False``
    leaves out the emotion shifts (all zero): the reference is the plain mean of the clips, a speaker
    standardised by their own voice, which is measured, not served."""
    labels = data.mask.shape[1]
    rng = np.random.default_rng(seed)
    z = plain.standardise(data.x)
    if corrected:
        heard = heard_out_of_fold(data, idx, plain.l2)
        shifts = emotion_shifts(z[idx], data.y[idx], data.speaker[idx], labels)
    else:
        heard, shifts = np.zeros(len(data.y), dtype=int), np.zeros((labels, z.shape[1]))
    inputs, rows = [], []
    for _ in range(REFERENCE_DRAWS):
        for i in idx:
            others = idx[(data.speaker[idx] == data.speaker[i]) & (idx != i)]
            chosen = pick(others, i, rng, REFERENCE_CLIPS)
            if len(chosen):
                inputs.append(z[i] - reference(plain, shifts, data.x, heard, chosen, labels))
                rows.append(i)
    rows = np.array(rows)
    w, b = fit_linear(np.stack(inputs), data.y[rows], data.mask[rows], corpus_weights(data.corpus[rows]), plain.l2)
    return w, b, shifts


def familiar(z: np.ndarray) -> tuple[np.ndarray, float]:
    """The principal subspace of the training clips' standardised embeddings and a typical clip's mean
    square outside it (the median): what ``unfamiliarity`` measures against. In the exploration (tiny.en,
    docs/models.md) the energy outside told held-out voices of the training corpora from a corpus left out
    with an AUROC of 0.99, from Italian with 0.91; the top probability alone, 0.59 and 0.53."""
    dims = max(1, min(FAMILIAR_DIMS, len(z) // 4))
    subspace = np.linalg.svd(z, full_matrices=False)[2][:dims]  # z is centred: standardised on these clips
    return subspace, float(np.median(outside_energy(subspace, z)))


def outside_energy(subspace: np.ndarray, z: np.ndarray) -> np.ndarray:
    return ((z - (z @ subspace.T) @ subspace) ** 2).mean(axis=1)


def unfamiliarity(heads: Heads, x: np.ndarray) -> np.ndarray:
    """What the graph's ``unfamiliar`` gives (numpy, for cross-validation)."""
    return outside_energy(heads.subspace, (x - heads.center) / heads.scale) / heads.typical


def baseline_logits(heads: Heads, x: np.ndarray, reference_mean: np.ndarray, heard_share: np.ndarray) -> np.ndarray:
    """What the graph's ``logits_baseline`` gives (numpy, for cross-validation)."""
    z = (x - heads.center) / heads.scale
    r = (reference_mean - heads.center) / heads.scale - heard_share @ heads.shifts
    return (z - r) @ heads.baseline_w + heads.baseline_b


def plain_logits(heads: Heads, x: np.ndarray) -> np.ndarray:
    return ((x - heads.center) / heads.scale) @ heads.plain_w + heads.plain_b


def served(heads: Heads, x: np.ndarray, temperature: float, baseline_temperature: float, reference_mean: np.ndarray | None = None,
           heard_share: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The probabilities the analyzer answers with (unmasked): the plain head's, averaged with the
    baseline head's where there is a baseline."""
    probs = softmax(plain_logits(heads, x), temperature)
    if reference_mean is None:
        return probs
    return (probs + softmax(baseline_logits(heads, x, reference_mean, heard_share), baseline_temperature)) / 2
