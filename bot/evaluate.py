"""``sera evaluate``: measure the shipped pipeline on labelled audio it may never have heard.

Every clip goes through exactly what ``sera analyze`` does (decode -> speech segments -> the emotion
analyzer -> duration-weighted mean over segments); only the emotion analyzer measured is loaded, and with
``--baseline K`` every clip is judged against a personal baseline of K other clips of its speaker. A clip that cannot
be read is counted and named, never fatal; a clip in which no speech is heard counts as a wrong answer
(it would get no emotion in the bot either) and is named too.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sera.audio import encode_opus
from sera.baseline import Baseline, Observation
from sera.corpora import load_corpora
from sera.errors import SeraError
from sera.metrics import Scores, score
from sera.pipeline import Pipeline
from sera.plugin import EmotionAnalyzer, EmotionResult
from sera.progress import progress


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    speaker: str = ""
    gender: str = ""


@dataclass(frozen=True)
class Prediction:
    item: Item
    predicted: str


@dataclass
class Evaluation:
    scores: Scores
    predictions: list[Prediction] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason
    no_speech: list[str] = field(default_factory=list)
    analyzer: str = ""
    baseline: int = 0  # K: each clip against a baseline of K other clips of its speaker; 0: none
    baseline_size: float = 0.0  # the baselines' mean number of segments (a clip may hold several)
    heard_in_training: list[str] = field(default_factory=list)  # speakers the model was trained on
    unsure_below: float = 0.0  # the analyzer's threshold: below it a clip's answer is "unsure"
    answered: float = 1.0  # the share of clips answered with an emotion (not "unsure")
    answered_accuracy: float = 0.0  # the accuracy of those answers: selective accuracy

    def accuracy_by(self, group: Callable[[Item], str]) -> dict[str, float]:
        """Accuracy per group of clips (per speaker, per gender...), groups named "" left out."""
        hits: dict[str, list[bool]] = {}
        for prediction in self.predictions:
            key = group(prediction.item)
            if key:
                hits.setdefault(key, []).append(prediction.predicted == prediction.item.label)
        return {key: float(np.mean(values)) for key, values in sorted(hits.items())}

    @property
    def per_speaker(self) -> dict[str, float]:
        return self.accuracy_by(lambda item: item.speaker)

    def to_dict(self) -> dict[str, Any]:
        return {
            "analyzer": self.analyzer,
            "baseline_clips": self.baseline,
            "speakers_heard_in_training": self.heard_in_training,
            **self.scores.to_dict(),
            "selective": {"unsure_below": self.unsure_below, "answered": round(self.answered, 4),
                          "accuracy_of_answered": round(self.answered_accuracy, 4)},  # fmt: skip
            "per_speaker_accuracy": {k: round(v, 4) for k, v in self.per_speaker.items()},
            "unreadable": self.unreadable,
            "no_speech": self.no_speech,
        }


def from_manifest(path: Path) -> list[Item]:
    """A CSV with columns ``path,label[,speaker]``; paths are relative to the CSV's folder."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise SeraError(f"manifest not found: {path}") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise SeraError(f"{path}: a manifest needs a header with at least the columns path,label")
    return [Item(path.parent / row["path"], row["label"].strip(), (row.get("speaker") or "").strip()) for row in rows]


def from_corpus(name: str, root: Path) -> list[Item]:
    """A corpus's clips; ``root`` is its folder, or the folder holding it (``../shared/data``)."""
    return [Item(c.path, c.label, c.speaker, c.gender) for c in load_corpora(name, root)]


def emotion_analyzer(pipeline: Pipeline, name: str | None = None) -> EmotionAnalyzer:
    """The emotion analyzer named, or the first loaded (what replies headline); a clear error otherwise."""
    emotions = [a for a in pipeline.plugins.analyzers if isinstance(a, EmotionAnalyzer)]
    if name is None and emotions:
        return emotions[0]
    chosen = next((a for a in emotions if a.name == name), None)
    if chosen is None:
        known = ", ".join(a.name for a in emotions) or "none is loaded"
        why = next((i.status for i in pipeline.plugins.infos if i.name == name), "not installed")
        raise SeraError(f"no emotion analyzer {name!r} ({why}); emotion analyzers: {known}; `sera plugins --check` says more")
    return chosen


def evaluate(
    pipeline: Pipeline,
    items: Sequence[Item],
    only_present_labels: bool = False,
    opus_bitrate: str | None = None,
    analyzer: str | None = None,
    baseline_clips: int = 0,
    seed: int = 0,
    corpus: str | None = None,
) -> Evaluation:
    """Score one emotion analyzer (``analyzer``, default the first) on labelled clips.

    With ``baseline_clips`` K, each clip is scored against a personal baseline built from K other clips
    of its speaker (never the clip itself), drawn at random with ``seed``: a first pass observes every
    clip, a second scores each against its baseline."""
    chosen = emotion_analyzer(pipeline, analyzer)
    labels = list(chosen.labels)
    unknown = sorted({i.label for i in items} - set(labels))
    if unknown:
        raise SeraError(f"labels {unknown} are not among the model's labels {labels}")
    present = sorted({labels.index(i.label) for i in items})
    mask = np.zeros(len(labels), dtype=bool)
    mask[present if only_present_labels else slice(None)] = True
    baselines = personal_baselines(pipeline, chosen, items, baseline_clips, opus_bitrate, seed) if baseline_clips else {}

    truth, rows = [], []
    predictions: list[Prediction] = []
    unreadable: dict[str, str] = {}
    no_speech: list[str] = []
    for i, item in enumerate(progress(items, f"evaluating{' (Opus ' + opus_bitrate + ')' if opus_bitrate else ''}")):
        try:
            report = pipeline.analyze(source_of(item, opus_bitrate), item.path.name, baseline=baselines.get(i))
        except SeraError as error:
            unreadable[str(item.path)] = str(error)
            continue
        output = report.outputs.get(chosen.name)
        overall = output.overall if output else None
        if isinstance(overall, EmotionResult):
            probs = np.array([overall.probabilities[name] for name in labels])
        else:
            no_speech.append(str(item.path))
            probs = np.full(len(labels), 1.0 / len(labels))
        probs = np.where(mask, probs, 0.0)
        rows.append(probs / probs.sum())
        truth.append(labels.index(item.label))
        predictions.append(Prediction(item, labels[int(np.argmax(rows[-1]))]))
    if not rows:
        raise SeraError("no clip could be read")
    used = [b.count for b in baselines.values() if b is not None]
    probs, truth_ = np.stack(rows), np.array(truth)
    threshold = float(getattr(chosen.options, "unsure_below", 0.0))
    sure = probs.max(axis=1) >= threshold  # what a user is told, not "unsure"
    answered_accuracy = float(np.mean(probs[sure].argmax(axis=1) == truth_[sure])) if sure.any() else 0.0
    return Evaluation(score(truth, probs, labels), predictions, unreadable, no_speech, chosen.name, baseline_clips,
                      float(np.mean(used)) if used else 0.0, heard_in_training(chosen, items, corpus), threshold,
                      float(np.mean(sure)), answered_accuracy)  # fmt: skip


def heard_in_training(analyzer: EmotionAnalyzer, items: Sequence[Item], corpus: str | None) -> list[str]:
    """The speakers of ``items`` (of ``corpus``) that the analyzer's model was trained on: figures on
    them say how well it remembers, not how it hears a voice it never heard."""
    if not corpus or not analyzer.trained_on:
        return []
    return sorted({item.speaker for item in items} & set(analyzer.trained_on.get(corpus, ())))


def source_of(item: Item, opus_bitrate: str | None) -> bytes | Path:
    return encode_opus(item.path, opus_bitrate) if opus_bitrate else item.path


def personal_baselines(
    pipeline: Pipeline, analyzer: EmotionAnalyzer, items: Sequence[Item], k: int, opus_bitrate: str | None, seed: int
) -> dict[int, Baseline | None]:
    """For each item, a baseline of ``k`` other clips of its speaker, drawn with ``seed``; never the item."""
    if analyzer.baseline_info is None:
        raise SeraError(f"the {analyzer.name} analyzer does not serve personal baselines")
    if not analyzer.baseline_info.min_clips:
        raise SeraError(f"the {analyzer.name} model in use uses no personal baseline (its cross-validation found no size that helps "
                        f"without ever hurting): set plugins.{analyzer.name}.baseline_from to measure one")  # fmt: skip
    if any(not item.speaker for item in items):
        raise SeraError("--baseline draws each clip's baseline from other clips of its speaker: the manifest needs a speaker column")
    observed: dict[int, list[Observation]] = {}
    for i, item in enumerate(progress(items, "observing for baselines")):
        try:
            report = pipeline.analyze(source_of(item, opus_bitrate), item.path.name)
        except SeraError:
            continue
        observed[i] = report.observations()
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if observed.get(i):
            by_speaker.setdefault(item.speaker, []).append(i)
    baselines: dict[int, Baseline | None] = {}
    for i, item in enumerate(items):
        others = [j for j in by_speaker.get(item.speaker, []) if j != i]
        chosen = rng.choice(others, size=min(k, len(others)), replace=False) if others else []
        found = [o for j in chosen for o in observed[j]]
        baselines[i] = Baseline.of(found) if found else None
    return baselines


def format_text(evaluation: Evaluation) -> str:
    s = evaluation.scores
    width = max(len(label) for label in s.labels)
    against = f", each clip against a baseline of {evaluation.baseline} other clips of its speaker" if evaluation.baseline else ""
    trained = evaluation.heard_in_training
    lines = [
        *([f"WARNING: the model was trained on speakers {', '.join(trained)}: these figures are not on voices it never heard "
           "(its card has the cross-validated ones)", ""] if trained else []),
        f"analyzer: {evaluation.analyzer}{against}",
        f"clips: {s.n}   accuracy: {s.accuracy:.1%}   macro-F1: {s.macro_f1:.3f}   ECE: {s.ece:.3f}",
        f"answered (the rest \"unsure\", under {evaluation.unsure_below:.0%}): {evaluation.answered:.1%} of clips, "
        f"{evaluation.answered_accuracy:.1%} of them right",
        "",
        "per-class recall:",
        *(f"  {label:<{width}}  {v['recall']:6.1%}  (n={v['support']})" if v["support"] else f"  {label:<{width}}       -  (none in the data)"
          for label, v in s.per_class.items()),  # fmt: skip
        "",
        "confusion (rows: true, columns: predicted):",
        " " * (width + 2) + " ".join(f"{label[:4]:>4}" for label in s.labels),
        *(f"  {label:<{width}}" + " ".join(f"{c:4d}" for c in row) for label, row in zip(s.labels, s.confusion)),
    ]
    if evaluation.per_speaker:
        lines += ["", "per-speaker accuracy:"]
        lines += [f"  {k}: {v:.1%}" for k, v in sorted(evaluation.per_speaker.items())]
    if evaluation.no_speech:
        lines += ["", f"no speech heard in {len(evaluation.no_speech)} clips (counted as wrong):"]
        lines += [f"  {p}" for p in evaluation.no_speech]
    if evaluation.unreadable:
        lines += ["", f"{len(evaluation.unreadable)} clips could not be read (left out):"]
        lines += [f"  {p}: {reason}" for p, reason in evaluation.unreadable.items()]
    return "\n".join(lines)
