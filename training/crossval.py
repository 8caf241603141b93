"""Speaker-grouped K-fold cross-validation: how a recipe does on voices it never heard, with its spread.

Tuning on one small test split makes its speakers the tuning set (a recipe chosen among ~25 on the
same 3 test actors looked 9 points better there than on voices nobody tuned on). Here every speaker of
every chosen corpus is held out exactly once: folds are whole speakers, dealt per corpus and gender so
each fold has a like share of each, and each fold's model is trained on all the others. Figures are
per corpus, as mean and standard deviation over folds; per-class recall and calibration come from the
pooled out-of-fold predictions (thousands of clips, not 120). A difference inside the spread is no
difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.corpora import LABELS, Clip
from bot.metrics import score
from bot.model import softmax
from training.data import OFFSETS_PER_CONDITION
from training.train import Recipe, Split, fit_temperature, label_mask, predict, speaker_references, train_side_by_side

CONDITIONS = {"clean": 0, "opus24": OFFSETS_PER_CONDITION}  # centred window, as it is and as a voice note
REFERENCE_DRAWS, REFERENCE_CLIPS = 4, 5  # personal baselines per clip, each from this many other clips
ENROLMENT_LABELS = {"neutral", "calm"}  # "record a few seconds of your ordinary voice"


def inputs(recipe: Recipe, clips: list[Clip], features: np.ndarray, seed: int) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The training references (None for a "window" recipe) and the held-out inputs scored per condition.

    A "speaker" recipe is scored with a baseline from 5 of the speaker's other clips (any emotion), from
    their other neutral or calm clips only (an enrolment, as real users give), and with none (each window
    against its own mean: a voice heard for the first time)."""
    if recipe.reference != "speaker":
        return None, {name: features[:, variant].astype(np.float32) for name, variant in CONDITIONS.items()}
    references = speaker_references(clips, features, REFERENCE_DRAWS, REFERENCE_CLIPS, seed)
    enrolled = speaker_references(clips, features, 1, REFERENCE_CLIPS, seed, lambda c: c.label in ENROLMENT_LABELS)
    scored = {}
    for name, variant in CONDITIONS.items():
        condition = variant // OFFSETS_PER_CONDITION  # 0 clean, 1 Opus: as in speaker_references
        scored[name] = features[:, variant].astype(np.float32) - references[:, condition, 0, :, None]
    clean = features[:, 0].astype(np.float32)
    scored["clean, neutral enrolment"] = clean - enrolled[:, 0, 0, :, None]
    scored["clean, no baseline"] = clean - clean.mean(axis=2, keepdims=True)
    return references, scored


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


@dataclass
class CrossValidation:
    """What ``sera train --cv K`` reports, and what the model card's cross-validation table shows."""

    recipe: str
    k: int
    seed: int
    folds: list[dict[str, Any]] = field(default_factory=list)  # per fold: speakers and per-corpus scores
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)  # corpus -> condition -> mean/std
    pooled: dict[str, Any] = field(default_factory=dict)  # out-of-fold recall, temperature, ECE before/after
    minutes: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "k": self.k, "seed": self.seed, "folds": self.folds, "summary": self.summary,
                "pooled": self.pooled, "minutes": round(self.minutes, 1)}  # fmt: skip


def cross_validate(
    recipe: Recipe, clips: list[Clip], features: np.ndarray, y: np.ndarray, labels: tuple[str, ...], k: int, seed: int, workers: int
) -> CrossValidation:
    """Train one model per fold (``workers`` single-threaded processes at a time) and score each on its
    held-out speakers, per corpus and condition, with argmax over the labels each corpus has."""
    started = time.perf_counter()
    fold = speaker_folds(clips, k, seed)
    mask = label_mask(clips, labels)
    empty = np.zeros(0, dtype=int)
    splits = [Split(np.flatnonzero(fold != i), empty, np.flatnonzero(fold == i)) for i in range(k)]
    references, scored = inputs(recipe, clips, features, seed)
    trained = train_side_by_side([(recipe, split) for split in splits], features, y, len(labels), seed, workers, mask, references)
    logits = {name: np.zeros((len(clips), len(labels)), dtype=np.float32) for name in scored}
    result = CrossValidation(recipe.name, k, seed)
    corpora = sorted({c.corpus for c in clips})
    for i, (split, done) in enumerate(zip(splits, trained)):
        row: dict[str, Any] = {"fold": i + 1, "speakers": sorted({clips[j].speaker for j in split.test}), "minutes": round(done.minutes, 1)}
        for name, x in scored.items():
            logits[name][split.test] = predict(done.model, x[split.test])
            for corpus in corpora:
                idx = split.test[[clips[j].corpus == corpus for j in split.test]]
                if len(idx):
                    s = score(y[idx], masked_probabilities(logits[name][idx], mask[idx]), labels)
                    row.setdefault(corpus, {})[name] = {"n": s.n, "accuracy": s.accuracy, "macro_f1": s.macro_f1, "ece": s.ece}
        result.folds.append(row)
    for corpus in corpora:
        for name in scored:
            values = [f[corpus][name] for f in result.folds if corpus in f]
            result.summary.setdefault(corpus, {})[name] = {
                metric: {"mean": float(np.mean([v[metric] for v in values])), "std": float(np.std([v[metric] for v in values]))}
                for metric in ("accuracy", "macro_f1", "ece")
            }
    clean = logits["clean"]
    temperature = fit_temperature(clean.astype(np.float64) - np.where(mask, 0.0, 1e9), y)
    for corpus in corpora:
        idx = np.flatnonzero([c.corpus == corpus for c in clips])
        before = score(y[idx], masked_probabilities(clean[idx], mask[idx]), labels)
        after = score(y[idx], masked_probabilities(clean[idx], mask[idx], temperature), labels)
        present = [label for label in labels if label in LABELS.get(corpus, labels)]
        result.pooled[corpus] = {
            "n": before.n,
            "accuracy": before.accuracy,
            "recall": {label: before.per_class[label]["recall"] for label in present},
            "ece_raw": before.ece,
            "ece_calibrated": after.ece,
        }
    result.pooled["temperature"] = temperature
    result.minutes = (time.perf_counter() - started) / 60
    return result


def masked_probabilities(logits: np.ndarray, mask: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the labels each clip's corpus has (the others get probability 0)."""
    return softmax(np.where(mask, logits, -np.inf), temperature)


def markdown(cv: dict[str, Any]) -> str:
    """The table for the README and the model card, from ``CrossValidation.to_dict()``."""
    lines = [
        f"Speaker-grouped {cv['k']}-fold cross-validation, seed {cv['seed']}, recipe: {cv['recipe']}. Mean ± standard "
        "deviation over folds; argmax over the labels each corpus has.",
        "",
        "| corpus | clips | accuracy clean | macro-F1 clean | accuracy Opus 24k | ECE raw -> calibrated (pooled) |",
        "|---|---|---|---|---|---|",
    ]
    for corpus, conditions in cv["summary"].items():
        pooled = cv["pooled"][corpus]
        clean, opus = conditions["clean"], conditions["opus24"]
        lines.append(
            f"| {corpus} | {pooled['n']} | {clean['accuracy']['mean']:.1%} ± {clean['accuracy']['std']:.1%} | "
            f"{clean['macro_f1']['mean']:.3f} ± {clean['macro_f1']['std']:.3f} | "
            f"{opus['accuracy']['mean']:.1%} ± {opus['accuracy']['std']:.1%} | "
            f"{pooled['ece_raw']:.3f} -> {pooled['ece_calibrated']:.3f} |"
        )
    others = [(corpus, name, values) for corpus, conditions in cv["summary"].items() for name, values in conditions.items()
              if name not in CONDITIONS]  # fmt: skip
    lines += [""] if others else []
    for corpus, name, values in others:
        lines.append(f"- {corpus}, {name}: accuracy {values['accuracy']['mean']:.1%} ± {values['accuracy']['std']:.1%}, "
                     f"macro-F1 {values['macro_f1']['mean']:.3f} ± {values['macro_f1']['std']:.3f}.")  # fmt: skip
    lines += ["", f"Temperature fitted on the pooled out-of-fold logits: {cv['pooled']['temperature']:.2f}.", ""]
    for corpus in cv["summary"]:
        recall = ", ".join(f"{label} {value:.0%}" for label, value in cv['pooled'][corpus]["recall"].items())
        lines.append(f"- {corpus}, out-of-fold recall per class: {recall}.")
    lines += ["", "| fold | held-out speakers | " + " | ".join(f"{c} accuracy" for c in cv['summary']) + " |",
              "|---|---|" + "---|" * len(cv["summary"])]  # fmt: skip
    for row in cv["folds"]:
        cells = " | ".join(f"{row[c]['clean']['accuracy']:.1%}" if c in row else "-" for c in cv['summary'])
        shown = ", ".join(row["speakers"][:12]) + (f" (+{len(row['speakers']) - 12})" if len(row["speakers"]) > 12 else "")
        lines.append(f"| {row['fold']} | {shown} | {cells} |")
    lines.append(f"\nWhole run: {cv['minutes']:.0f} min.")
    return "\n".join(lines) + "\n"
