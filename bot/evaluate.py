"""``sera evaluate``: measure the shipped pipeline on labelled audio it may never have heard.

Every clip goes through exactly what ``sera analyze`` does (decode -> speech segments -> windows ->
ONNX -> duration-weighted mean over segments); only the emotion analyzer is loaded. A clip that cannot
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
from sera.corpora import load_corpus
from sera.errors import SeraError
from sera.metrics import Scores, score
from sera.model import EMOTION_PLUGIN
from sera.pipeline import Pipeline
from sera.plugin import EmotionResult
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
            **self.scores.to_dict(),
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
    return [Item(c.path, c.label, c.speaker, c.gender) for c in load_corpus(name, root)]


def evaluate(
    pipeline: Pipeline,
    items: Sequence[Item],
    only_present_labels: bool = False,
    opus_bitrate: str | None = None,
) -> Evaluation:
    analyzer = next((a for a in pipeline.plugins.analyzers if a.name == EMOTION_PLUGIN), None)
    if analyzer is None:
        raise SeraError(f"the {EMOTION_PLUGIN} analyzer is not loaded; `sera plugins --check` says why")
    labels = list(analyzer.labels)
    unknown = sorted({i.label for i in items} - set(labels))
    if unknown:
        raise SeraError(f"labels {unknown} are not among the model's labels {labels}")
    present = sorted({labels.index(i.label) for i in items})
    mask = np.zeros(len(labels), dtype=bool)
    mask[present if only_present_labels else slice(None)] = True

    truth, rows = [], []
    predictions: list[Prediction] = []
    unreadable: dict[str, str] = {}
    no_speech: list[str] = []
    for item in progress(items, f"evaluating{' (Opus ' + opus_bitrate + ')' if opus_bitrate else ''}"):
        try:
            source = encode_opus(item.path, opus_bitrate) if opus_bitrate else item.path
            report = pipeline.analyze(source, item.path.name)
        except SeraError as error:
            unreadable[str(item.path)] = str(error)
        else:
            emotion = report.outputs.get(EMOTION_PLUGIN)
            overall = emotion.overall if emotion else None
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
    return Evaluation(score(truth, np.stack(rows), labels), predictions, unreadable, no_speech)


def format_text(evaluation: Evaluation) -> str:
    s = evaluation.scores
    width = max(len(label) for label in s.labels)
    lines = [
        f"clips: {s.n}   accuracy: {s.accuracy:.1%}   macro-F1: {s.macro_f1:.3f}   ECE: {s.ece:.3f}",
        "",
        "per-class recall:",
        *(f"  {label:<{width}}  {v['recall']:6.1%}  (n={v['support']})" for label, v in s.per_class.items()),
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
