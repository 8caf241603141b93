"""What the Whisper model's card says that no other model's does: its encoder, its heads and the
personal baseline it serves. No torch."""

from __future__ import annotations

from typing import Any

from sera.corpora import CORPORA, corpus_names
from sera.training.results import Results, meanstd

PLUGIN = "emotion_whisper"
TITLE = "Whisper encoder + linear heads"


def summary(results: Results) -> list[str]:
    shipped, recipe = results.shipped, results.recipe
    assert shipped is not None
    details, encoder, taps = shipped.details, shipped.details["encoder"], recipe["taps"]
    return [
        "- One ONNX graph: Whisper log-Mel of one utterance -> its pooled embedding, the logits, and the logits against a speaker's baseline.",
        f"- Front end: the encoder of OpenAI's {recipe['encoder']}, blocks 1-{max(taps)} of {recipe['blocks']}, frozen; the embedding is the mean and "
        f"standard deviation over time of the hidden states after blocks {', '.join(map(str, taps))} ({recipe['dims']} numbers).",
        f"- Weights from the `{encoder['package']}` {encoder['version']} package, file `{encoder['file']}`, sha256 `{encoder['sha256']}`, "
        f"{encoder['precision']}, read by `training/learners/whisper/encoder.py` (no CTranslate2 at run time). Rebuilt encoder vs "
        f"CTranslate2's own, last layer: max abs diff {details['parity_ctranslate2']:.2e} (the file holds float16).",
        f"- Heads: multinomial logistic regression on the standardised embedding (L2 {details['l2']:g}, chosen among "
        f"{', '.join(f'{v:g}' for v in recipe['l2_grid'])} by speaker-grouped CV inside the training data); the baseline head on the "
        "embedding minus the speaker's reference (below), its temperature "
        f"{results.crossval['baseline']['temperature']:.3f}.",
        f"- Personal baseline: used from {details['min_clips']} clips on." if details["min_clips"] else "- Personal baseline: not used.",
        f"- Speed: {shipped.ms_per_3s:.1f} ms per 3 s of speech on one CPU core, log-Mel included (onnxruntime, one thread).",
        *int8(shipped.size_mb, shipped.ms_per_3s, details),
    ]


def int8(size_mb: float, ms: float, details: dict[str, Any]) -> list[str]:
    if "int8" not in details:
        return []
    cells = details["int8"]
    same = [c["same_answer"] for c in cells.values()]
    each = "; ".join(f"{corpus} {c['accuracy_int8']:.1%} (float32 {c['accuracy_float32']:.1%})" for corpus, c in cells.items())
    return [f"- int8: the encoder's weight matrices quantized (onnxruntime dynamic quantization), the rest float32: {size_mb:.1f} MB and "
            f"{ms:.1f} ms against {details['float32_mb']:.1f} MB and {details['float32_ms_per_3s']:.1f} ms in float32. On "
            f"{next(iter(cells.values()))['clips']} Opus voice notes of each corpus the two files name the same emotion for "
            f"{min(same):.1%}-{max(same):.1%} of clips; accuracy int8 (float32): {each}. The cross-validated figures are the float32 encoder's."]  # fmt: skip


def crossval(cv: dict[str, Any]) -> list[str]:
    lines = []
    if cv.get("ravdess7"):
        r7 = cv["ravdess7"]
        lines += ["", f"RAVDESS alone, {r7['folds']} folds of 3 actors (the side run's protocol): accuracy {meanstd(r7['accuracy'])} "
                  f"without a baseline, {meanstd(r7['with_baseline'])} with a baseline of {r7['reference_clips']} mixed clips."]  # fmt: skip
    return [*lines, "", *baseline_section(cv, list(cv["summary"]))]


def sections(results: Results) -> list[str]:
    return [
        "## How the baseline is served",
        "",
        "A user's baseline is the count of their clips, the mean of their embeddings and how many of those clips the plain head heard "
        "as each emotion (never audio). The baseline head sees the clip's standardised embedding minus a reference: the baseline's "
        "mean, less each emotion's average offset from a speaker's mean voice weighted by the share of the baseline heard as that "
        "emotion. Without that correction a baseline of one emotion subtracts that emotion away; with it, and with the two heads' "
        f"probabilities averaged, {never_worse(results.crossval)}",
        "",
    ]


def limits(results: Results) -> list[str]:
    english = results.recipe["encoder"].endswith(".en")
    heads = " and ".join(dict.fromkeys(CORPORA[n].language for n in corpus_names(results.corpus) if n in CORPORA))
    return [f"- {results.recipe['encoder']} was trained on {'English' if english else '99 languages'}, the heads on {heads}. "
            "On languages they never heard the model is worse (the cross-corpus cells); the further an utterance lies from its training "
            "clips, the higher its temperature, so more of those answers are \"unsure\", but not all of the wrong ones."]  # fmt: skip


def licences(results: Results) -> list[str]:
    encoder = results.shipped.details["encoder"] if results.shipped else {}
    return [f"- Whisper's weights: {encoder.get('model', results.recipe['encoder'])} (github.com/openai/whisper), shipped in "
            f"the {encoder.get('package', '?')} package (MIT); **MIT**, `WHISPER.LICENSE` beside the model."]


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
        lines.append(f"| {b['reference_clips']} clips, {kind} | " + " | ".join(meanstd(cells[c]) for c in corpora) + " |")
    lines += ["", "By baseline size (the smallest size that beats no baseline with a mixed baseline and is no worse when every "
              "clip is of the scored clip's own emotion, on every corpus, is the least a baseline needs before it is used):", "",
              "| clips | " + " | ".join(f"{c} mixed | {c} own emotion only" for c in corpora) + " |",
              "|---|" + "---|---|" * len(corpora)]  # fmt: skip
    for size in b["sizes"]["mixed"]:
        mixed, own = b["sizes"]["mixed"][size], b["sizes"]["own emotion only"][size]
        lines.append(f"| {size} | " + " | ".join(f"{meanstd(mixed[c])} | {meanstd(own[c])}" for c in corpora) + " |")
    chosen = b["min_clips"]
    lines += ["", f"Served: a baseline is used from {chosen} clips on." if chosen else
              "Served: no size qualified, so baselines are kept but never used."]  # fmt: skip
    if b.get("unheard"):
        lines += ["", f"On languages never heard (test-only corpora, scored by every fold's model): the served answer with no baseline and "
                  f"with one of {b['reference_clips']} other clips of the speaker; accuracy, ECE (mean ± spread over the fold models):", "",
                  f"| corpus | no baseline | {b['reference_clips']} mixed clips | {b['reference_clips']} clips of the clip's own emotion |",
                  "|---|---|---|---|"]  # fmt: skip
        for corpus, cells in b["unheard"].items():
            lines.append(f"| {corpus} | " + " | ".join(f"{meanstd(cells[kind]['accuracy'])}, {cells[kind]['ece']['mean']:.3f}"
                                                       for kind in ("none", "mixed", "own emotion only")) + " |")  # fmt: skip
    return lines + standardised_section(b)


def standardised_section(b: dict[str, Any]) -> list[str]:
    """The speaker-standardised heads: measured, not served (``baseline.standardised``)."""
    if not b.get("standardised"):
        return []
    columns = list(next(iter(b["standardised"].values())))
    none = {c: b["none"][c] if c in b["none"] else b["unheard"][c]["none"]["accuracy"] for c in columns}
    lines = ["", f"Measured, not served: a head trained on each clip minus the plain mean of {b['reference_clips']} other clips of its "
             "speaker (no correction for the emotions in them), answering alone; what a speaker's own voice could give, and what "
             "a baseline of one emotion then costs. Accuracy, mean ± spread over the fold models (the test-only corpora by each):", "",
             "| reference | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns),
             "| none (the plain head) | " + " | ".join(meanstd(none[c]) for c in columns) + " |"]  # fmt: skip
    for kind, cells in b["standardised"].items():
        lines.append(f"| {kind} | " + " | ".join(meanstd(cells[c]) for c in columns) + " |")
    return lines


def never_worse(cv: dict[str, Any]) -> str:
    """Whether every kind of baseline measured scored at least no baseline's mean, on every corpus, in words."""
    b = cv["baseline"]
    worse = [f"{kind} on {corpus}" for kind, cells in b["kinds"].items() for corpus, cell in cells.items()
             if cell["mean"] < b["none"][corpus]["mean"]]  # fmt: skip
    if not worse:
        return "none of the kinds of baseline above scored below no baseline."
    return f"these scored below no baseline: {', '.join(worse)}."
