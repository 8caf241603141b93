"""The personal baseline of the Whisper model, cross-validated: each held-out clip judged against a
baseline drawn from other clips of its speaker (never the clip itself) of several kinds and sizes, the
temperature of the baseline head fitted on those out-of-fold logits, and the smallest baseline size
that helps and never hurts, which the shipped model's metadata carries (``min_clips``). Beside it, what
a speaker standardised by their own voice would reach, measured and not served (``standardised``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from sera.corpora import Clip
from sera.model import softmax
from sera.training.learners.whisper.encoder import Heads
from sera.metrics import expected_calibration_error
from sera.training.learners.whisper.head import (
    REFERENCE_CLIPS, Data, Picker, Plain, baseline_head, baseline_logits, fit_baseline, fit_plain, pick_mixed, plain_logits, unfamiliarity,
)  # fmt: skip
from sera.training.protocol import ENROLMENT, Split, fit_temperature, masked_logits, masked_probabilities, speaker_folds, spread, unfamiliar_scale

MIN_CLIPS_GRID = (3, 5, 10, 20)  # baseline sizes cross-validated; the smallest that helps and never hurts is served
SWEPT = ("mixed", "own emotion only")  # the kinds of baseline measured at every size of MIN_CLIPS_GRID
RAVDESS_FOLDS = 7  # 3 actors a fold: the protocol of the side run that proposed this model


def kinds(data: Data, labels: tuple[str, ...]) -> dict[str, Picker]:
    """How a held-out clip's baseline is drawn from the other clips of its speaker (never the clip):
    a random mix; all of the clip's own emotion (a user who only sends angry notes, scored on an angry
    one: the case that must never be worse than no baseline); all of one other emotion; an enrolment of
    neutral or calm clips."""
    neutral = [labels.index(label) for label in ENROLMENT if label in labels]

    def same(others: np.ndarray, clip: int, rng: np.random.Generator, k: int) -> np.ndarray:
        return pick_mixed(others[data.y[others] == data.y[clip]], clip, rng, k)

    def other_one(others: np.ndarray, clip: int, rng: np.random.Generator, k: int) -> np.ndarray:
        choices = sorted(set(data.y[others].tolist()) - {int(data.y[clip])})
        return pick_mixed(others[data.y[others] == rng.choice(choices)], clip, rng, k) if choices else others[:0]

    def enrolment(others: np.ndarray, clip: int, rng: np.random.Generator, k: int) -> np.ndarray:
        return pick_mixed(others[np.isin(data.y[others], neutral)], clip, rng, k)

    return {"mixed": pick_mixed, "own emotion only": same, "one other emotion only": other_one, "neutral enrolment": enrolment}


def against_baselines(heads: Heads, data: Data, held: np.ndarray, heard: np.ndarray, pick: Picker, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits against a baseline, the baseline's clip count) for each held-out clip; count 0 where the
    speaker has no clip of that kind to draw."""
    rng = np.random.default_rng(seed)
    labels = data.mask.shape[1]
    out = np.zeros((len(held), labels))
    counts = np.zeros(len(held), dtype=int)
    for row, i in enumerate(held):
        others = held[(data.speaker[held] == data.speaker[i]) & (held != i)]
        chosen = pick(others, i, rng, k)
        counts[row] = len(chosen)
        if len(chosen):
            share = np.bincount(heard[chosen], minlength=labels) / len(chosen)
            out[row] = baseline_logits(heads, data.x[i][None], data.x[chosen].mean(axis=0)[None], share[None])[0]
    return out, counts


def measure(data: Data, clips: list[Clip], labels: tuple[str, ...], folds: list[tuple[Heads, Split]], cv: dict[str, Any]) -> dict[str, Any]:
    """Every fold's heads against baselines of every kind and size drawn from its held-out speakers; the
    baseline head's temperature (pooled out-of-fold, a mixed baseline of ``REFERENCE_CLIPS``); the table
    and the size served; RAVDESS alone in 7 folds, as the side run that proposed this model measured it."""
    seed, temperature, slope, corpora = cv["seed"], cv["pooled"]["temperature"], cv["pooled"]["temperature_slope"], list(cv["summary"])
    pickers = kinds(data, labels)
    plain = np.zeros((len(data.y), len(labels)))
    mixed = np.zeros((len(data.y), len(labels)))
    heard = np.zeros(len(data.y), dtype=int)
    sweep: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for f, (heads, split) in enumerate(folds):
        held = split.test
        plain[held] = calibrated_plain(heads, data.x[held], slope)
        heard[held] = plain[held].argmax(axis=1)  # what the plain head hears, unmasked, as when serving
        for kind, pick in pickers.items():
            for size in MIN_CLIPS_GRID if kind in SWEPT else (REFERENCE_CLIPS,):
                against, counts = against_baselines(heads, data, held, heard, pick, size, seed + f)
                if kind == "mixed" and size == REFERENCE_CLIPS:
                    mixed[held] = against
                sweep.setdefault((kind, size), []).append({"held": held, "against": against, "counts": counts})
    trained = np.concatenate([split.test for _, split in folds])
    baseline_temperature = fit_temperature(masked_logits(mixed[trained], data.mask[trained]), data.y[trained])
    table = baseline_table(sweep, data, plain, temperature, baseline_temperature, corpora, len(folds))
    table |= {"temperature": baseline_temperature, "reference_clips": REFERENCE_CLIPS}
    result: dict[str, Any] = {"baseline": table}
    swept = {kind: pickers[kind] for kind in SWEPT}
    table["unheard"] = {c: unheard_language(data, [heads for heads, _ in folds], np.flatnonzero(data.corpus == c), swept, slope,
                                            temperature, baseline_temperature, seed) for c in cv["test_only"]}  # fmt: skip
    table["standardised"] = standardised(data, folds, pickers, corpora, cv["test_only"], seed)
    if "ravdess" in corpora:
        result["ravdess7"] = ravdess_folds(data, clips, np.sort(trained), seed, temperature, baseline_temperature, slope)
    return result


STANDARDISED = {  # the reference a head was trained against -> the references it is scored against
    "mixed": ("mixed", "own emotion only", "all of the speaker's other clips"),
    "neutral enrolment": ("neutral enrolment",),
}


def standardised(data: Data, folds: list[tuple[Heads, Split]], pickers: dict[str, Picker], corpora: list[str], test_only: list[str],
                 seed: int) -> dict[str, Any]:  # fmt: skip
    """What a speaker's own voice could give, measured and not served: a head trained on each clip minus
    the plain mean of ``REFERENCE_CLIPS`` other clips of its speaker (no correction for the emotions in
    them), answering alone. Trained on mixed references and scored with mixed ones, with ones all of
    the clip's own emotion (the case the served design must survive) and with every other clip of the
    speaker; trained and scored on a neutral enrolment. Held-out speakers of each trained corpus and every
    test-only corpus, by each fold's heads; accuracy over the labels the corpus has, mean ± spread."""
    pickers = pickers | {"all of the speaker's other clips": lambda others, clip, rng, k: others}
    cells: dict[str, dict[str, list[float]]] = {}
    unused = np.zeros(len(data.y), dtype=int)  # what the plain head heard: no correction uses it
    for f, (heads, split) in enumerate(folds):
        plain = Plain(heads.center, heads.scale, heads.plain_w, heads.plain_b, heads.l2)
        groups = {c: split.test[data.corpus[split.test] == c] for c in corpora} | {c: np.flatnonzero(data.corpus == c) for c in test_only}
        alone = {corpus: plain.logits(data.x[idx]) for corpus, idx in groups.items()}  # where a speaker has no such clips
        for trained, scored in STANDARDISED.items():
            w, b, shifts = baseline_head(data, split.train, plain, seed + f, pickers[trained], corrected=False)
            head = replace(heads, baseline_w=w, baseline_b=b, shifts=shifts)
            for kind in scored:
                for corpus, idx in groups.items():
                    against, counts = against_baselines(head, data, idx, unused, pickers[kind], REFERENCE_CLIPS, seed + f)
                    logits = np.where((counts > 0)[:, None], against, alone[corpus])
                    hits = masked_logits(logits, data.mask[idx]).argmax(axis=1) == data.y[idx]
                    cells.setdefault(f"{kind} (trained on {trained})", {}).setdefault(corpus, []).append(float(hits.mean()))
    return {kind: {c: {"mean": float(np.mean(v)), "std": float(np.std(v))} for c, v in per.items()} for kind, per in cells.items()}


def calibrated_plain(heads: Heads, x: np.ndarray, slope: float) -> np.ndarray:
    """The plain head's logits divided by each clip's unfamiliarity to the power ``slope``: what the
    temperature then applies to, as served."""
    return plain_logits(heads, x) / unfamiliar_scale(unfamiliarity(heads, x), slope)


def served(probs: np.ndarray, against: np.ndarray, mask: np.ndarray, counts: np.ndarray, baseline_temperature: float) -> np.ndarray:
    """The answer as served: the plain probabilities averaged with those against the baseline, where the
    clip had one (``counts`` > 0)."""
    with_baseline = (probs + softmax(masked_logits(against, mask), baseline_temperature)) / 2
    return np.where((counts > 0)[:, None], with_baseline, probs)


def unheard_language(data: Data, fold_heads: list[Heads], idx: np.ndarray, pickers: dict[str, Picker], slope: float, temperature: float,
                     baseline_temperature: float, seed: int) -> dict[str, Any]:  # fmt: skip
    """A test-only corpus (a language never heard) by every fold's heads: no baseline, and a baseline of
    ``REFERENCE_CLIPS`` clips of the speaker drawn by each of ``pickers``; the served answer's accuracy
    and ECE, mean and spread over the fold models."""
    cells: dict[str, list[dict[str, float]]] = {}
    mask, truth = data.mask[idx], data.y[idx]
    for f, heads in enumerate(fold_heads):
        plain = calibrated_plain(heads, data.x[idx], slope)
        heard = np.zeros(len(data.y), dtype=int)
        heard[idx] = plain.argmax(axis=1)
        probs = softmax(masked_logits(plain, mask), temperature)
        cells.setdefault("none", []).append(figures(truth, probs))
        for kind, pick in pickers.items():
            against, counts = against_baselines(heads, data, idx, heard, pick, REFERENCE_CLIPS, seed + f)
            cells.setdefault(kind, []).append(figures(truth, served(probs, against, mask, counts, baseline_temperature)))
    return {kind: spread(values, ("accuracy", "ece")) for kind, values in cells.items()}


def figures(truth: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(np.mean(probs.argmax(axis=1) == truth)), "ece": expected_calibration_error(truth, probs)}


def baseline_table(sweep: dict, data: Data, plain: np.ndarray, temperature: float, baseline_temperature: float, corpora: list[str], k: int) -> dict[str, Any]:
    """Accuracy of the served answer (plain and baseline probabilities averaged) per kind of baseline
    and size, mean and spread over folds per corpus, beside no baseline; and the smallest size that
    helps with a mixed baseline and is never worse with a one-emotion one, on every corpus."""
    table: dict[str, Any] = {"sizes": {}, "kinds": {}}
    none = {corpus: [] for corpus in corpora}
    for f in range(k):
        held = sweep[("mixed", REFERENCE_CLIPS)][f]["held"]
        for corpus in corpora:
            idx = held[data.corpus[held] == corpus]
            hits = masked_probabilities(plain[idx], data.mask[idx]).argmax(axis=1) == data.y[idx]
            none[corpus].append(float(hits.mean()))
    table["none"] = {corpus: {"mean": float(np.mean(v)), "std": float(np.std(v))} for corpus, v in none.items()}
    for (kind, size), runs in sorted(sweep.items()):
        cells: dict[str, dict[str, float]] = {}
        for corpus in corpora:
            values, used = [], []
            for run in runs:
                held, against, counts = run["held"], run["against"], run["counts"]
                rows = np.flatnonzero(data.corpus[held] == corpus)
                idx = held[rows]
                probs = softmax(masked_logits(plain[idx], data.mask[idx]), temperature)
                answer = served(probs, against[rows], data.mask[idx], counts[rows], baseline_temperature)
                values.append(float(np.mean(answer.argmax(axis=1) == data.y[idx])))
                used.append(float(np.mean(counts[rows])))
            cells[corpus] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "clips": float(np.mean(used))}
        if kind in SWEPT:
            table["sizes"].setdefault(kind, {})[str(size)] = cells
        if size == REFERENCE_CLIPS:
            table["kinds"][kind] = cells
    table["min_clips"] = 0
    for size in MIN_CLIPS_GRID:
        mixed, own = table["sizes"]["mixed"][str(size)], table["sizes"]["own emotion only"][str(size)]
        if all(mixed[c]["mean"] > table["none"][c]["mean"] and own[c]["mean"] >= table["none"][c]["mean"] for c in corpora):
            table["min_clips"] = size
            break
    return table


def ravdess_folds(data: Data, clips: list[Clip], trained: np.ndarray, seed: int, temperature: float, baseline_temperature: float,
                  slope: float) -> dict[str, Any]:  # fmt: skip
    """RAVDESS alone in 7 folds of 3 actors, without a baseline and with one of 10 mixed clips: the
    protocol of the side run that proposed this front end, to read beside its table."""
    idx = trained[data.corpus[trained] == "ravdess"]
    k = min(RAVDESS_FOLDS, len(set(data.speaker[idx].tolist())))
    fold = speaker_folds([clips[i] for i in idx], k, seed)
    plain_acc, baseline_acc = [], []
    for f in range(k):
        train, held = idx[fold != f], idx[fold == f]
        heads = fit_baseline(data, train, fit_plain(data, train), seed)
        logits = calibrated_plain(heads, data.x[held], slope)
        plain_acc.append(float(np.mean(logits.argmax(axis=1) == data.y[held])))
        heard = np.zeros(len(data.y), dtype=int)
        heard[held] = logits.argmax(axis=1)
        against, counts = against_baselines(heads, data, held, heard, pick_mixed, REFERENCE_CLIPS, seed + f)
        probs = (softmax(logits, temperature) + softmax(against, baseline_temperature)) / 2
        baseline_acc.append(float(np.mean(probs.argmax(axis=1) == data.y[held])))
    return {"folds": k, "reference_clips": REFERENCE_CLIPS, "accuracy": {"mean": float(np.mean(plain_acc)), "std": float(np.std(plain_acc))},
            "with_baseline": {"mean": float(np.mean(baseline_acc)), "std": float(np.std(baseline_acc))}}  # fmt: skip
