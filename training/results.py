"""What one ``sera train`` run measured, typed, for every model alike: ``NAME-results.json`` is this
record, and the model card and ``CROSSVAL.md`` are written from it alone (so a test can rebuild the
shipped card from the shipped record and compare). Free of torch, as the card writer is."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sera.corpora import corpus_names

RESULTS_SUFFIX = "-results.json"


@dataclass(frozen=True)
class Shipped:
    """The exported file, as the bot loads it."""

    model_file: str
    size_mb: float
    ms_per_3s: float  # 3 s of speech through the graph on one core (onnxruntime, one thread)
    parity_onnx: float  # torch vs onnxruntime, the largest absolute difference in the logits
    temperature: float
    details: dict[str, Any]  # the learner's own facts about the file (an encoder's provenance, a baseline size)


@dataclass(frozen=True)
class Results:
    """One run: what it read and trained, the cross-validation record (``protocol.cross_validate``), the
    exported file (None with ``--cv-only``), the minutes each step took and the command that reruns it."""

    model: str  # the learner's name: ``sera train --model NAME``
    corpus: str  # trained on, comma-separated
    test_corpus: str  # only scored, never trained on
    data_root: str
    clips: int  # of the trained corpora
    speakers: list[str]  # every trained speaker
    recipe: dict[str, Any]  # the learner's description of what it trains
    crossval: dict[str, Any]
    shipped: Shipped | None
    minutes: dict[str, float]
    machine: str
    command: str

    @property
    def corpora(self) -> list[str]:
        """Every corpus the run read: trained on, then only scored on."""
        return corpus_names(f"{self.corpus},{self.test_corpus}")

    @classmethod
    def read(cls, path: Path) -> Results:
        values = json.loads(path.read_text())
        shipped = values.get("shipped")
        return cls(**{**values, "shipped": Shipped(**shipped) if shipped else None})

    def write(self, out: Path) -> Path:
        path = out / f"{self.model}{RESULTS_SUFFIX}"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def every_results(out: Path) -> list[Results]:
    """The record of every model trained into ``out``."""
    return [Results.read(path) for path in sorted(out.glob(f"*{RESULTS_SUFFIX}"))]


def meanstd(value: dict[str, float]) -> str:
    """A figure's mean and spread over folds, as every table shows it."""
    return f"{value['mean']:.1%} ± {value['std']:.1%}"
