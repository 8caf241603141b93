"""The model card, written by the training run from the numbers it measured (never by hand)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from sera.corpora import CORPORA

if TYPE_CHECKING:
    from sera.evaluate import Evaluation
    from sera.training.results import HeldOut, ShippedModel, TrainingRun

CARD_FILE = "MODEL_CARD.md"
CONFUSION_FILE = "confusion.png"


def licence(corpus: str) -> str:
    """What the card says of a corpus's licence: ``sera.corpora`` knows each corpus's terms."""
    return CORPORA[corpus].licence if corpus in CORPORA else f"{corpus}: see the corpus licence."

def confusion_png(evaluation: Evaluation, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = evaluation.scores.labels
    matrix = np.array(evaluation.scores.confusion, dtype=float)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=110)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


SPEECH = {
    "ravdess": "English, 21 North-American actors, two sentences",
    "nemo": "Polish, 7 young adult speakers, many sentences",
    "emospeech": "Indian English one-word commands on phones",
}


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def summary(run: TrainingRun, model: ShippedModel) -> list[str]:
    return [
        "## Summary",
        "",
        f"- File: `{model.model_file}` ({model.size_mb:.2f} MB, {run.parameters:,} parameters), ONNX opset {model.opset}.",
        f"- Task: {len(run.labels)}-class speech emotion: {', '.join(run.labels)}.",
        f"- Input: log-Mel windows, parameters in the file's metadata: `{asdict(run.features)}`.",
        calibration_line(run),
        f"- Inference: {model.ms_per_window:.2f} ms per {run.features.window_seconds:.0f} s window on one CPU core "
        "(onnxruntime, one thread, median of 200 runs).",
        f"- torch vs onnxruntime logits, max abs diff over the {'test' if run.speakers.test else 'training'} windows: "
        f"{run.parity_max_abs_diff:.2e}.",
        "",
    ]


def calibration_line(run: TrainingRun) -> str:
    if run.speakers.val:
        return f"- Calibration: temperature {run.temperature:.3f} (fitted on the validation speakers)."
    if run.crossval:
        return f"- Calibration: temperature {run.temperature:.3f}, fitted on the cross-validation's pooled out-of-fold logits."
    return "- Calibration: none (no validation speakers were held out)."


def data_and_split(run: TrainingRun) -> list[str]:
    s = run.speakers
    lines = [
        "## Data and split",
        "",
        f"- Corpus: {run.corpus} ({run.clips} clips), read from `{run.data_root}`"
        + (f"; scored on, never trained on: {run.test_corpus}." if run.test_corpus else "."),
        f"- Speaker-independent split (whole actors): train {', '.join(s.train)}; "
        f"validation {', '.join(s.val) or 'none'}; test {', '.join(s.test) or 'none'}.",
        f"- Clips: train {run.split_sizes['train']}, validation {run.split_sizes['val']}, test {run.split_sizes['test']}.",
    ]
    if s.val:
        lines += ["- Validation speakers set the temperature and are scored after every epoch (`history` in",
                  "  `training-results.json`); they do not pick the epoch."]  # fmt: skip
    if s.test:
        lines += ["- Test speakers are used once, below."]
    if not s.val and not s.test:
        lines += ["- Every speaker is trained on; the figures on voices the model never heard are the cross-validation's."]
    return [*lines, ""]


def held_out(run: TrainingRun, tested: HeldOut | None) -> list[str]:
    if not tested:
        calib = run.val_before_after_calibration
        if calib.ece_raw is None:
            return []
        return [f"Validation ECE before / after temperature scaling: {calib.ece_raw:.3f} / {calib.ece_calibrated:.3f}.", ""]
    clean, opus = tested.clean, tested.opus
    cs, os_ = clean.scores, opus.scores
    lines = [
        "## Results on the held-out test speakers",
        "",
        "Measured with `sera evaluate` (the shipped pipeline: decode, speech detection, windows, ONNX, mean over segments).",
        "",
        "| condition | clips | accuracy | macro-F1 | ECE |",
        "|---|---|---|---|---|",
        f"| clean (FLAC, 16 kHz) | {cs.n} | {pct(cs.accuracy)} | {cs.macro_f1:.3f} | {cs.ece:.3f} |",
        f"| Opus 24 kbit/s voice note | {os_.n} | {pct(os_.accuracy)} | {os_.macro_f1:.3f} | {os_.ece:.3f} |",
        "",
        "Per-class recall (clean / Opus):",
        "",
        "| emotion | recall clean | recall Opus | support |",
        "|---|---|---|---|",
        *(f"| {k} | {pct(v['recall'])} | {pct(os_.per_class[k]['recall'])} | {v['support']} |" for k, v in cs.per_class.items()),
        "",
        "Per-speaker accuracy (clean): " + ", ".join(f"actor {k} {pct(v)}" for k, v in clean.per_speaker.items()),
        "",
        "Per-gender accuracy (clean): " + ", ".join(f"{k} {pct(v)}" for k, v in clean.accuracy_by(lambda item: item.gender).items()),
        "",
        f"Confusion matrix (clean): ![confusion]({CONFUSION_FILE})",
        "",
    ]
    if clean.no_speech or clean.unreadable:
        lines += [f"No speech heard in {len(clean.no_speech)} clips, {len(clean.unreadable)} unreadable.", ""]
    calib = run.val_before_after_calibration
    if calib.ece_raw is not None:
        lines += [f"Validation ECE before / after temperature scaling: {calib.ece_raw:.3f} / {calib.ece_calibrated:.3f}.", ""]
    return lines


def ablation(run: TrainingRun) -> list[str]:
    if not run.ablation:
        return []
    n_test = run.split_sizes["test"]
    lines = [
        "## Ablation",
        "",
        f"Each row adds one idea to the row above, trained for {run.ablation[0]['epochs']} epochs with the same seed and split;",
        "the last row is the shipped model at its full epoch count. All are scored on the test speakers at feature",
        "level (one centred window per clip, no calibration), clean and after an Opus round trip. Steps that",
        "regularise (SpecAugment, mixup, Opus) slow early training and pay off, if at all, over the full",
        "schedule: read the short rows as what each step does at equal short training, and the last row as what",
        f"the full recipe reaches. {n_test} test clips: one clip is {100 / max(n_test, 1):.1f} points, and runs that differ",
        "only in their seed differ by several points.",
        "",
        "| recipe | epochs | acc clean | F1 clean | acc Opus | F1 Opus | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in run.ablation:
        c, o = row.get("clean", {}), row.get("opus24", {})
        lines.append(
            f"| {row['recipe']} | {row['epochs']} | {pct(c.get('accuracy'))} | {c.get('macro_f1', 0):.3f} | "
            f"{pct(o.get('accuracy'))} | {o.get('macro_f1', 0):.3f} | {row['minutes']:.1f} |"
        )
    return [*lines, ""]


def crossval(run: TrainingRun) -> list[str]:
    if not run.crossval:
        return []
    from sera.training.crossval import markdown

    return ["## Cross-validation (voices never heard)", "", markdown(run.crossval), ""]


def architecture(run: TrainingRun) -> list[str]:
    rec = run.recipe
    heads = {"stats": "statistics pooling: mean and std over time", "flatten": "flatten and dense, as in the paper"}
    inputs = ["each Mel band's mean over the window subtracted"] if rec.band_norm else []
    inputs += ["standardised (mean 0, standard deviation 1)"]
    inputs += [f"frames averaged in groups of {rec.time_pool}"] if rec.time_pool > 1 else []
    return [
        "## Architecture and training",
        "",
        f"- Inside the graph, each log-Mel window is first: {'; '.join(inputs)}.",
        f"- Four conv blocks (3x3 conv, batch norm, 2x2 max-pool, ELU, dropout {rec.dropout}), channels {rec.channels},",
        f"  head `{rec.head}` ({heads[rec.head]}).",
        f"- AdamW, lr {rec.lr} (one-cycle), weight decay {rec.weight_decay}, batch {rec.batch_size} "
        f"({'an equal share from each corpus, ' if ',' in run.corpus else ''}each clip's loss over its corpus's labels), "
        f"{rec.epochs} epochs, categorical cross-entropy; the final weights are kept (no epoch is picked on validation).",
        f"- Augmentation: time shift {rec.shift}, Opus 24 kbit/s round trip {rec.opus}, "
        f"SpecAugment {rec.specaugment}, mixup alpha {rec.mixup}.",
        f"- Seed {run.seed}; on {run.machine}: features {run.feature_minutes:.1f} min (cached after the first run), "
        f"training{' and ablation side by side' if run.ablation else ''} {run.train_minutes:.1f} min, "
        f"the whole run {run.total_minutes:.1f} min.",
        "",
    ]


def limits_and_licence(run: TrainingRun, command: str) -> list[str]:
    return [
        "## Reproduce",
        "",
        "```",
        command,
        "```",
        "",
        "## Limits",
        "",
        f"- Trained on acted speech read in a studio ({', '.join(SPEECH.get(n.strip(), n) for n in run.corpus.split(','))}):",
        "  real, spontaneous voices are harder, and confidence on them is lower than these figures suggest (see the",
        "  cross-corpus cells). Below the configured confidence the bot answers \"unsure\" rather than naming an emotion.",
        "- Emotion recognition is not a measure of anyone's state of mind; do not use it to judge people.",
        "",
        "## Licence",
        "",
        *[f"- {licence(name)}" for name in run.corpora],
        "The model carries the corpora's terms: CC BY-NC-SA 4.0.",
        "",
    ]


def write(out_dir: Path, run: TrainingRun, model: ShippedModel, tested: HeldOut | None, command: str) -> Path:
    """``MODEL_CARD.md`` (and the confusion matrix when test speakers were held out) in ``out_dir``."""
    header = ["# sera emotion model", "", "*Written by `sera train` from the numbers it measured; rerun the command below to reproduce it.*", ""]
    sections = [summary(run, model), data_and_split(run), held_out(run, tested), ablation(run), crossval(run),
                architecture(run), limits_and_licence(run, command)]  # fmt: skip
    path = out_dir / CARD_FILE
    path.write_text("\n".join(header + [line for section in sections for line in section]))
    if tested:
        confusion_png(tested.clean, out_dir / CONFUSION_FILE, "held-out speakers, clean")
    return path
