"""What the CNN's card says that no other model's does: its architecture and recipe. No torch."""

from __future__ import annotations

from typing import Any

from sera.training.results import Results

PLUGIN = "emotion_cnn"
TITLE = "the seed paper's CNN"
HEADS = {"stats": "statistics pooling: mean and std over time", "flatten": "flatten and dense, as in the paper"}


def summary(results: Results) -> list[str]:
    shipped, recipe = results.shipped, results.recipe
    assert shipped is not None
    return [
        f"- {shipped.details['parameters']:,} parameters; {len(recipe['labels'])}-class speech emotion: {', '.join(recipe['labels'])}.",
        f"- Input: log-Mel windows, parameters in the file's metadata: `{recipe['features']}`.",
        f"- Speed: {shipped.ms_per_3s:.2f} ms per {recipe['features']['window_seconds']:.0f} s window through the graph on one CPU "
        "core (onnxruntime, one thread, median of 200 runs; the log-Mel not included).",
    ]


def crossval(cv: dict[str, Any]) -> list[str]:
    return []


def sections(results: Results) -> list[str]:
    rec = results.recipe["recipe"]
    inputs = ["each Mel band's mean over the window subtracted"] if rec["band_norm"] else []
    inputs += ["standardised (mean 0, standard deviation 1)"]
    inputs += [f"frames averaged in groups of {rec['time_pool']}"] if rec["time_pool"] > 1 else []
    return [
        "## Architecture and training",
        "",
        f"- Recipe: {rec['name']}.",
        f"- Inside the graph, each log-Mel window is first: {'; '.join(inputs)}.",
        f"- Four conv blocks (3x3 conv, batch norm, 2x2 max-pool, ELU, dropout {rec['dropout']}), channels {tuple(rec['channels'])}, "
        f"head `{rec['head']}` ({HEADS[rec['head']]}).",
        f"- AdamW, lr {rec['lr']} (one-cycle), weight decay {rec['weight_decay']}, batch {rec['batch_size']} "
        f"({'an equal share from each corpus, ' if ',' in results.corpus else ''}each clip's loss over its corpus's labels), "
        f"{rec['epochs']} epochs, categorical cross-entropy; the final weights are kept (no epoch is picked on held-out speakers).",
        f"- Augmentation: time shift {rec['shift']}, Opus 24 kbit/s round trip {rec['opus']}, SpecAugment {rec['specaugment']}, "
        f"mixup alpha {rec['mixup']}.",
        f"- Every model of the run (the folds, the corpora left out, the shipped one) trained side by side in "
        f"{results.recipe['processes']} single-threaded processes.",
        "",
    ]


def limits(results: Results) -> list[str]:
    return []


def licences(results: Results) -> list[str]:
    return []
