"""What one ``sera train`` run measured, typed: ``training-results.json`` and the model card are written
from these, so a field the card reads cannot be misspelt or silently missing.

Kept free of torch, so that the card writer and its tests can be used without the [train] extra.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sera.evaluate import Evaluation
    from sera.features import FeatureParams
    from sera.training.recipe import Recipe


@dataclass(frozen=True)
class Speakers:
    train: list[str]
    val: list[str]
    test: list[str]


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error on the validation speakers, before and after temperature scaling
    (``None`` when the run held none out)."""

    ece_raw: float | None = None
    ece_calibrated: float | None = None


@dataclass(frozen=True)
class TrainingRun:
    """The shipped model's training: data, split, recipe, calibration, timings, and the cross-validation
    that ran beside it."""

    corpus: str  # trained on, comma-separated
    test_corpus: str  # scored only, never trained on
    data_root: str
    clips: int  # trained-on corpora
    speakers: Speakers
    split_sizes: dict[str, int]
    recipe: Recipe
    features: FeatureParams
    labels: tuple[str, ...]
    temperature: float
    val_before_after_calibration: Calibration
    parameters: int
    history: list[dict[str, float]]
    ablation: list[dict[str, Any]]
    seed: int
    feature_minutes: float
    train_minutes: float
    total_minutes: float
    machine: str
    crossval: dict[str, Any] | None
    parity_max_abs_diff: float

    @property
    def corpora(self) -> list[str]:
        """Every corpus the run read: trained on, then only scored on."""
        return [n.strip() for n in f"{self.corpus},{self.test_corpus}".split(",") if n.strip()]


@dataclass(frozen=True)
class ShippedModel:
    """The exported file, as the bot will load it."""

    model_file: str
    size_mb: float
    opset: int
    ms_per_window: float


@dataclass(frozen=True)
class HeldOut:
    """The test speakers through the shipped pipeline, clean and as Opus voice notes."""

    clean: Evaluation
    opus: Evaluation


def results_json(run: TrainingRun, model: ShippedModel, held_out: HeldOut | None) -> dict[str, Any]:
    """``training-results.json``: every field of the run and the file, and the held-out evaluations."""
    tested = {"test_clean": held_out.clean.to_dict(), "test_opus24": held_out.opus.to_dict()} if held_out else {}
    return asdict(run) | asdict(model) | tested
