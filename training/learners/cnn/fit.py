"""Fitting the CNN: the training loop (augmentation, corpus-balanced batches, label masks, the personal
baseline variant), and single-threaded training processes side by side."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from queue import Empty
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from sera.corpora import Clip
from sera.progress import bar
from sera.training.learners.cnn.features import OFFSETS_PER_CONDITION
from sera.training.learners.cnn.net import EmotionNet
from sera.training.learners.cnn.recipe import Recipe

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

log = logging.getLogger(__name__)


REFERENCE_DRAWS, REFERENCE_CLIPS = 4, 5  # personal baselines per clip, each from this many other clips


def spec_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Two frequency masks (up to 8 bands) and two time masks (up to 30 frames) per example."""
    x = x.clone()
    n, bands, frames = x.shape
    fill = x.mean(dim=(1, 2))
    for axis, size, width in ((1, bands, 8), (2, frames, 30)):
        for _ in range(2):
            w = torch.randint(0, width + 1, (n,), generator=generator)
            start = (torch.rand(n, generator=generator) * (size - w)).long()
            for i in range(n):
                index = [i, slice(None), slice(None)]
                index[axis] = slice(int(start[i]), int(start[i] + w[i]))
                x[tuple(index)] = fill[i]
    return x


def variants_of(recipe: Recipe) -> list[int]:
    """Which precomputed variants (see ``training.data.clip_features``) a recipe may draw from."""
    offsets = range(OFFSETS_PER_CONDITION) if recipe.shift else range(1)
    conditions = (0, 1) if recipe.opus else (0,)
    return [c * OFFSETS_PER_CONDITION + k for c in conditions for k in offsets]


def predict(model: EmotionNet, x: np.ndarray, batch: int = 128) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i : i + batch].astype(np.float32))).numpy() for i in range(0, len(x), batch)])


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the labels a clip's corpus has: nEMO, which has no calm, never teaches
    the model that calm does not exist. Masked labels get a log-probability of about -1e9 (finite, so
    a zero target weight times it stays zero)."""
    return F.log_softmax(logits.masked_fill(~mask, -1e9), dim=1)


def speaker_references(
    clips: list[Clip], features: np.ndarray, draws: int, per_draw: int, seed: int, enrol: Callable[[Clip], bool] = lambda c: True
) -> np.ndarray:
    """``(clips, conditions, draws, n_mels)``: for each clip, ``draws`` estimates of its speaker's band
    means, each over ``per_draw`` of the speaker's *other* clips (never the clip itself) that ``enrol``
    accepts, centred window, per condition (clean, Opus). A speaker with fewer such clips uses what
    there is; with none, the clip's own window (the fallback a first-time user gets)."""
    rng = np.random.default_rng(seed)
    band_means = features[:, [0, OFFSETS_PER_CONDITION]].astype(np.float32).mean(axis=3)  # (clips, 2, n_mels)
    by_speaker: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        if enrol(clip):
            by_speaker.setdefault(clip.speaker, []).append(i)
    out = np.empty((len(clips), 2, draws, features.shape[2]), dtype=np.float32)
    for i, clip in enumerate(clips):
        others = [j for j in by_speaker.get(clip.speaker, []) if j != i] or [i]
        for d in range(draws):
            chosen = rng.choice(others, size=min(per_draw, len(others)), replace=False)
            out[i, :, d] = band_means[chosen].mean(axis=0)
    return out


def balanced_batches(train: np.ndarray, corpus_of: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of ``train`` indices, each with an equal share of every corpus in it (the
    remainder going to each corpus in turn), each corpus's clips drawn in shuffled passes.

    nEMO has three times the clips of RAVDESS; sampled by clip, it would outvote RAVDESS three to one
    and the model would learn the corpus the most clips come from. One corpus gives plain shuffled passes.
    """
    groups = [train[corpus_of[train] == c] for c in np.unique(corpus_of[train])]
    queues: list[list[int]] = [[] for _ in groups]
    turn = 0
    while True:
        shares = np.full(len(groups), batch_size // len(groups))
        shares[(turn + np.arange(batch_size % len(groups))) % len(groups)] += 1
        turn += 1
        batch = []
        for group, queue, share in zip(groups, queues, shares):
            while len(queue) < share:
                queue.extend(rng.permutation(group).tolist())
            batch += queue[:share]
            del queue[:share]
        yield np.array(batch)


def training_references(recipe: Recipe, clips: list[Clip], features: np.ndarray, seed: int) -> np.ndarray | None:
    """The personal baselines a "speaker" recipe trains with; None for a "window" recipe."""
    if recipe.reference != "speaker":
        return None
    return speaker_references(clips, features, REFERENCE_DRAWS, REFERENCE_CLIPS, seed)


def with_reference(x: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
    """The net's input under a "speaker" recipe: each band minus a reference level (the window's own
    mean when ``reference`` is None)."""
    level = x.mean(dim=2, keepdim=True) if reference is None else reference.unsqueeze(2)
    return x - level


def train_one(
    recipe: Recipe, features: np.ndarray, y: np.ndarray, train: np.ndarray, n_labels: int, seed: int, mask: np.ndarray | None = None,
    references: np.ndarray | None = None, corpus_of: np.ndarray | None = None, on_epoch: Callable[[], None] | None = None,
) -> EmotionNet:
    """Train on the clips at ``train`` for the whole schedule and keep the final weights (no epoch is
    picked on held-out speakers: one seed's best-F1 epoch on 120 validation clips scored 54 % on the test
    speakers where its final weights, at the end of the one-cycle decay, scored 62 %). ``mask``
    (``label_mask``) limits each clip's loss to its corpus's labels; None means every clip has them all.
    ``corpus_of`` (an id per clip) makes batches corpus-balanced (``balanced_batches``). An epoch is as
    many batches as one pass over the training clips would take.
    """
    if mask is None:
        mask = np.ones((len(y), n_labels), dtype=bool)
    if corpus_of is None:
        corpus_of = np.zeros(len(y), dtype=int)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    _, _, n_mels, frames = features.shape
    model = EmotionNet(n_labels, n_mels, frames, recipe.channels, recipe.dropout, recipe.head, recipe.time_pool,
                       recipe.band_norm)
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    model = model.to(memory_format=torch.channels_last)  # about 1.3x faster on one CPU thread, same model
    steps_per_epoch = -(-len(train) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    allowed = variants_of(recipe)
    batches = balanced_batches(train, corpus_of, recipe.batch_size, rng)
    for epoch in range(recipe.epochs):
        model.train()
        losses = []
        for _ in range(steps_per_epoch):
            idx = next(batches)
            chosen = rng.choice(allowed, size=len(idx))
            x = torch.from_numpy(features[idx, chosen].astype(np.float32))
            if recipe.reference == "speaker":
                condition = chosen // OFFSETS_PER_CONDITION
                draw = rng.integers(references.shape[2], size=len(idx))
                ref = torch.from_numpy(references[idx, condition, draw])
                use_own = torch.from_numpy(rng.random(len(idx)) < 0.5)[:, None, None]
                x = torch.where(use_own, with_reference(x, None), with_reference(x, ref))
            target = F.one_hot(torch.from_numpy(y[idx]), n_labels).float()
            allowed_labels = torch.from_numpy(mask[idx])
            if recipe.specaugment:
                x = spec_augment(x, generator)
            if recipe.mixup > 0:
                lam = float(rng.beta(recipe.mixup, recipe.mixup))
                perm = torch.randperm(len(idx), generator=generator)
                x = lam * x + (1 - lam) * x[perm]
                target = lam * target + (1 - lam) * target[perm]
                allowed_labels = allowed_labels | allowed_labels[perm]
            loss = torch.sum(-target * masked_log_softmax(model(x), allowed_labels), dim=1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        log.info("%s, %d training clips, epoch %d/%d: loss %.4f", recipe.name, len(train), epoch + 1, recipe.epochs, np.mean(losses))
        if on_epoch:
            on_epoch()
    model.eval()
    return model


_worker: dict = {}


def _start_worker(
    features: np.ndarray, y: np.ndarray, mask: np.ndarray | None, references: np.ndarray | None, corpus_of: np.ndarray | None,
    n_labels: int, log_level: int, epochs_done: Queue,
) -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(message)s")
    _worker.update(features=features, y=y, mask=mask, references=references, corpus_of=corpus_of, n_labels=n_labels,
                   epochs_done=epochs_done)  # fmt: skip


def _train_in_worker(recipe: Recipe, train: np.ndarray, seed: int) -> EmotionNet:
    w = _worker
    return train_one(recipe, w["features"], w["y"], train, w["n_labels"], seed, w["mask"], w["references"], w["corpus_of"],
                     lambda: w["epochs_done"].put(1))  # fmt: skip


def train_side_by_side(
    recipe: Recipe, jobs: list[np.ndarray], features: np.ndarray, y: np.ndarray, n_labels: int, seed: int, workers: int,
    mask: np.ndarray | None = None, references: np.ndarray | None = None, corpus_of: np.ndarray | None = None,
) -> list[EmotionNet]:
    """Train ``recipe`` on each set of clip indices in a single-threaded process, ``workers`` at a time,
    in the order given.

    A net this small keeps a second thread poorly busy (one epoch: 17.4 s on one thread, 12.9 s on
    two), so one model per core finishes sooner than one after the other with all cores each.
    Single-threaded and seeded, a job's result does not depend on how many cores the machine has or
    how the jobs are scheduled.
    """
    context = multiprocessing.get_context("spawn")  # a fork of a process that has run torch can deadlock
    epochs_done = context.Queue()  # one item per finished epoch, for the progress bar
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(features, y, mask, references, corpus_of, n_labels, log.getEffectiveLevel(), epochs_done),
    ) as pool:
        running = [pool.submit(_train_in_worker, recipe, train, seed) for train in jobs]
        with bar(recipe.epochs * len(jobs), f"training {len(jobs)} models", unit="epoch") as drawn:
            while not all(job.done() for job in running):
                try:
                    drawn.update(epochs_done.get(timeout=0.5))
                except Empty:
                    pass
        return [job.result() for job in running]
