"""``sera train``: the training recipe, its ablation, the ONNX export and the model card.

The split is by speaker, as ``../shared/data/README.md`` requires: test speakers and validation
speakers are whole actors that never appear in training. Calibration (temperature scaling) uses the
validation speakers only; the test speakers are touched once, at the end, through the shipped pipeline
(``sera.evaluate``), clean and re-encoded as a 24 kbit/s Opus voice note.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from sera.corpora import LABELS, Clip
from sera.features import FeatureParams
from sera.metrics import score
from sera.model import INPUT_NAME, MODEL_FILE, OUTPUT_NAME, ModelInfo, softmax
from sera.pipeline import VAD_MODEL
from sera.progress import bar
from sera.training.data import OFFSETS_PER_CONDITION, build_features
from sera.training.net import EmotionNet
from sera.training.results import Calibration, Speakers, TrainingRun

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

    from sera.training.crossval import Plan

log = logging.getLogger(__name__)

OPSET = 17
REFERENCE_DRAWS, REFERENCE_CLIPS = 4, 5  # personal baselines per clip, each from this many other clips


@dataclass(frozen=True)
class Recipe:
    """One way to train; the ablation is a list of these, each adding one idea to the last."""

    name: str
    head: str = "stats"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.1
    epochs: int = 120
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-3
    shift: bool = True  # train on the speech at random places in its window
    opus: bool = True  # train on Opus round-trips too
    specaugment: bool = True
    mixup: float = 0.2  # Beta(alpha, alpha) mixing; 0 turns it off
    time_pool: int = 2  # average this many 10 ms frames before the first convolution
    band_norm: bool = True  # subtract each Mel band's mean over the window: the voice's long-term spectrum
    # "window": that mean, inside the net. "speaker": subtracted before the net, half the draws the window's
    # own mean, half the speaker's long-term mean from a few of their other clips (a personal baseline).
    reference: str = "window"


FINAL = Recipe("sera: stats pooling + 20 ms frames + band norm + shift + SpecAugment + mixup + Opus")
PERSONAL = replace(FINAL, name="sera with a personal baseline: band means of the window or of the speaker's other clips",
                   band_norm=False, reference="speaker")  # fmt: skip
ABLATION = (
    Recipe("paper: 4 conv + flatten/dense, Adam", head="flatten", time_pool=1, band_norm=False, shift=False,
           opus=False, specaugment=False, mixup=0.0, weight_decay=0.0),
    Recipe("+ statistics pooling head, AdamW", time_pool=1, band_norm=False, shift=False, opus=False,
           specaugment=False, mixup=0.0),
    Recipe("+ frames averaged in pairs (20 ms)", band_norm=False, shift=False, opus=False,
           specaugment=False, mixup=0.0),
    Recipe("+ per-band mean normalisation", shift=False, opus=False, specaugment=False, mixup=0.0),
    Recipe("+ time-shift", opus=False, specaugment=False, mixup=0.0),
    Recipe("+ SpecAugment", opus=False, mixup=0.0),
    Recipe("+ mixup", opus=False),
    FINAL,
)  # fmt: skip


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


def label_mask(clips: list[Clip], labels: tuple[str, ...]) -> np.ndarray:
    """``(clips, labels)``: True where the clip's corpus has that label (all of them for an unknown corpus)."""
    return np.array([[label in LABELS.get(c.corpus, labels) for label in labels] for c in clips])


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


def corpus_ids(clips: list[Clip]) -> np.ndarray:
    """A small integer per clip naming its corpus, for ``balanced_batches``."""
    return np.unique([c.corpus for c in clips], return_inverse=True)[1]


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
    recipe: Recipe, features: np.ndarray, y: np.ndarray, split: Split, n_labels: int, seed: int, mask: np.ndarray | None = None,
    references: np.ndarray | None = None, corpus_of: np.ndarray | None = None, on_epoch: Callable[[], None] | None = None,
) -> tuple[EmotionNet, list[dict]]:
    """Train for the whole schedule and keep the final weights.

    The validation speakers are scored after every epoch for the log and the card, but do not pick the
    epoch: 120 clips are too few to choose among 120 epochs (one seed's best-F1 epoch scored 54 % on the
    test speakers where its final weights, at the end of the one-cycle decay, scored 62 %). ``mask``
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
    steps_per_epoch = -(-len(split.train) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    allowed = variants_of(recipe)
    val_x = features[split.val, 0].astype(np.float32)
    if recipe.reference == "speaker":  # validation without a baseline: each window against its own mean
        val_x = val_x - val_x.mean(axis=2, keepdims=True)
    history = []
    batches = balanced_batches(split.train, corpus_of, recipe.batch_size, rng)
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
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses))})
        if len(split.val):
            val = score(y[split.val], softmax(predict(model, val_x)), range(n_labels))
            history[-1].update(val_acc=val.accuracy, val_f1=val.macro_f1)
        log.info("%s, %d training clips, epoch %d/%d: %s", recipe.name, len(split.train), epoch + 1, recipe.epochs, history[-1])
        if on_epoch:
            on_epoch()
    model.eval()
    return model, history


@dataclass(frozen=True)
class Trained:
    model: EmotionNet
    history: list[dict]
    minutes: float


_worker: dict = {}


def _start_worker(
    features: np.ndarray, y: np.ndarray, mask: np.ndarray | None, references: np.ndarray | None, corpus_of: np.ndarray | None,
    n_labels: int, log_level: int, epochs_done: Queue,
) -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(message)s")
    _worker.update(features=features, y=y, mask=mask, references=references, corpus_of=corpus_of, n_labels=n_labels,
                   epochs_done=epochs_done)  # fmt: skip


def _train_in_worker(recipe: Recipe, split: Split, seed: int) -> Trained:
    started = time.perf_counter()
    w = _worker
    model, history = train_one(recipe, w["features"], w["y"], split, w["n_labels"], seed, w["mask"], w["references"], w["corpus_of"],
                               lambda: w["epochs_done"].put(1))  # fmt: skip
    return Trained(model, history, (time.perf_counter() - started) / 60)


def train_side_by_side(
    jobs: list[tuple[Recipe, Split]], features: np.ndarray, y: np.ndarray, n_labels: int, seed: int, workers: int,
    mask: np.ndarray | None = None, references: np.ndarray | None = None, corpus_of: np.ndarray | None = None,
) -> list[Trained]:
    """Train each (recipe, split) in a single-threaded process, ``workers`` at a time, in the order given.

    A net this small keeps a second thread poorly busy (one epoch: 17.4 s on one thread, 12.9 s on
    two), so the shipped recipe on one core and the ablation rows on the others finish sooner than one
    after the other with all cores each. Single-threaded and seeded, a job's result does not depend on
    how many cores the machine has or how the jobs are scheduled.
    """
    context = multiprocessing.get_context("spawn")  # a fork of a process that has run torch can deadlock
    epochs_done = context.Queue()  # one item per finished epoch, for the progress bar
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(features, y, mask, references, corpus_of, n_labels, log.getEffectiveLevel(), epochs_done),
    ) as pool:
        running = [pool.submit(_train_in_worker, recipe, split, seed) for recipe, split in jobs]
        with bar(sum(recipe.epochs for recipe, _ in jobs), f"training {len(jobs)} models", unit="epoch") as drawn:
            while not all(job.done() for job in running):
                try:
                    drawn.update(epochs_done.get(timeout=0.5))
                except Empty:
                    pass
        return [job.result() for job in running]


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """Temperature minimising validation negative log-likelihood (Guo et al. 2017), by grid search."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 200))
    nll = [-np.mean(np.log(softmax(logits, t)[np.arange(len(truth)), truth] + 1e-12)) for t in grid]
    return float(grid[int(np.argmin(nll))])


def export_onnx(model: EmotionNet, info: ModelInfo, path: Path) -> None:
    """ONNX with a dynamic batch axis and sera's metadata (features, labels, temperature)."""
    dummy = torch.zeros(1, info.features.n_mels, info.features.window_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )  # fmt: skip
    graph = onnx.load(str(path))
    for key, value in info.metadata().items():
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name = "sera"
    onnx.save(graph, str(path))


def held_out_scores(model: EmotionNet, features: np.ndarray, y: np.ndarray, idx: np.ndarray, n_labels: int) -> dict:
    """Quick feature-level figures (centred window, clean and Opus) used for the ablation table."""
    out = {}
    for name, variant in (("clean", 0), ("opus24", OFFSETS_PER_CONDITION)):
        s = score(y[idx], softmax(predict(model, features[idx, variant])), range(n_labels))
        out[name] = {"accuracy": s.accuracy, "macro_f1": s.macro_f1}
    return out


def run(
    clips: list[Clip],
    out_dir: Path,
    models_dir: Path,
    val_speakers: set[str],
    test_speakers: set[str],
    labels: tuple[str, ...],
    cache_dir: Path | None,
    seed: int = 0,
    epochs: int | None = None,
    ablation_epochs: int | None = None,
    corpus: str = "ravdess",
    data_root: str = "",
    crossval: Plan | None = None,
) -> tuple[Split, TrainingRun]:
    """Features, training and export; returns the split and what the run measured.

    With a cross-validation ``Plan``, its models train in the same process pool as the shipped one (the
    recipe is fixed before either starts), and with no validation speakers the shipped model takes the
    temperature fitted on the cross-validation's out-of-fold logits. Clips of the plan's test-only
    corpora are never trained on."""
    started = time.perf_counter()
    params = FeatureParams()
    features = build_features(clips, params, models_dir / VAD_MODEL, cache_dir, seed)
    y = np.array([labels.index(c.label) for c in clips])
    split = split_by_speaker(clips, val_speakers, test_speakers)
    if crossval:
        split = replace(split, train=split.train[[clips[i].corpus not in crossval.test_only for i in split.train]])
    feature_seconds = time.perf_counter() - started
    recipe = replace(FINAL, epochs=epochs) if epochs else FINAL
    steps = [replace(step, epochs=ablation_epochs) for step in ABLATION] if ablation_epochs else []
    jobs = [(r, split) for r in (recipe, *steps)] + (crossval.jobs(clips) if crossval else [])
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    mask = label_mask(clips, labels)
    references = training_references(crossval.recipe, clips, features, seed) if crossval else None
    trained = train_side_by_side(jobs, features, y, len(labels), seed, workers, mask, references, corpus_ids(clips))
    final, history = trained[0].model, trained[0].history
    train_seconds = time.perf_counter() - started - feature_seconds
    cv = crossval.result(clips, features, y, labels, trained[1 + len(steps) :], train_seconds / 60) if crossval else None
    trained = trained[: 1 + len(steps)]
    table = [
        {"recipe": step.name, "epochs": step.epochs, "minutes": done.minutes}
        | held_out_scores(done.model, features, y, split.test, len(labels))
        for step, done in zip(steps, trained[1:])
    ]
    if table:
        shipped = {"recipe": f"shipped: {recipe.name}", "epochs": recipe.epochs, "minutes": trained[0].minutes}
        table.append(shipped | held_out_scores(final, features, y, split.test, len(labels)))
    temperature, calibration = 1.0, Calibration()
    if cv and not len(split.val):
        temperature = cv.pooled["temperature"]
    if len(split.val):
        val_logits = predict(final, features[split.val, 0])
        temperature = fit_temperature(val_logits, y[split.val])
        calibration = Calibration(
            ece_raw=score(y[split.val], softmax(val_logits), labels).ece,
            ece_calibrated=score(y[split.val], softmax(val_logits, temperature), labels).ece,
        )
    info = ModelInfo(features=params, labels=labels, temperature=temperature)
    model_path = out_dir / MODEL_FILE
    export_onnx(final, info, model_path)
    return split, TrainingRun(
        corpus=corpus,
        test_corpus=",".join(sorted(crossval.test_only)) if crossval else "",
        data_root=data_root,
        clips=len(clips) - (sum(c.corpus in crossval.test_only for c in clips) if crossval else 0),
        speakers=Speakers(sorted({clips[i].speaker for i in split.train}), sorted(val_speakers), sorted(test_speakers)),
        split_sizes={"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        recipe=recipe,
        features=params,
        labels=labels,
        temperature=temperature,
        val_before_after_calibration=calibration,
        parameters=sum(p.numel() for p in final.parameters()),
        history=history,
        ablation=table,
        seed=seed,
        feature_minutes=feature_seconds / 60,
        train_minutes=train_seconds / 60,
        total_minutes=(time.perf_counter() - started) / 60,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {workers} single-threaded training processes",
        crossval=cv.to_dict() if cv else None,
        parity_max_abs_diff=parity(final, model_path, features[split.test if len(split.test) else split.train, 0]),
    )


def parity(model: EmotionNet, onnx_path: Path, mel: np.ndarray) -> float:
    """Largest absolute difference between torch's and onnxruntime's logits on the same windows."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run([OUTPUT_NAME], {INPUT_NAME: mel.astype(np.float32)})[0]
    return float(np.abs(ours - predict(model, mel)).max())


