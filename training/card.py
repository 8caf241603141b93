"""The model card and ``CROSSVAL.md``, written from the results records alone (never by hand), one writer
for every model. What is the same for every model (the file, calibration, data, the cross-validation,
the cells of a corpus never heard, reproduce, limits, licences) is written here; what a model adds
(its architecture, its own measurements) comes from its learner's ``card`` module, which like this
one imports no torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from sera.corpora import CORPORA, corpus_names
from sera.training.protocol import CONDITIONS
from sera.training.results import Results, every_results, meanstd

CV_TABLE_FILE = "CROSSVAL.md"


def card_file(model: str) -> str:
    return f"MODEL_CARD_{model.upper()}.md"


def learner_card(model: str) -> ModuleType:
    """The learner's card module: ``PLUGIN``, ``TITLE``, and ``summary``, ``crossval``, ``sections``,
    ``limits``, ``licences`` (each a list of lines)."""
    return importlib.import_module(f"sera.training.learners.{model}.card")


def licence(corpus: str) -> str:
    return CORPORA[corpus].licence if corpus in CORPORA else f"{corpus}: see the corpus licence."


def write(out: Path, results: Results, order: tuple[str, ...]) -> list[Path]:
    """The results record, ``CROSSVAL.md`` rebuilt from every model's record in ``out`` (``order``: the
    models' names, the default first) and, for a shipped model, its card."""
    written = [results.write(out), out / CV_TABLE_FILE]
    (out / CV_TABLE_FILE).write_text(crossval_file(every_results(out), order))
    if results.shipped:
        written.append(out / card_file(results.model))
        written[-1].write_text(card(results, every_results(out), order))
    return written


def ordered(records: list[Results], order: tuple[str, ...]) -> list[Results]:
    return sorted(records, key=lambda r: (order.index(r.model) if r.model in order else len(order), r.model))


def crossval_file(records: list[Results], order: tuple[str, ...]) -> str:
    """``CROSSVAL.md``: every model's cross-validation, side by side and then each in full. Every run
    writes it from every record present, so training one model never drops another's table."""
    records = ordered(records, order)
    lines = ["# Cross-validation", ""]
    if len(records) > 1:
        seeds = sorted({r.crossval["seed"] for r in records})
        lines += [f"Every emotion model, on speaker-grouped folds (seed {', '.join(map(str, seeds))}): every speaker held out once; "
                  "mean ± standard deviation over folds.", "", *side_by_side(records), ""]  # fmt: skip
    for r in records:
        learner = learner_card(r.model)
        default = " (the default)" if order and r.model == order[0] else ""
        lines += [f"## {learner.PLUGIN}{default}: {learner.TITLE}", "", *crossval_section(r.crossval, learner), f"Reproduce: `{r.command}`", ""]
    return "\n".join(lines) + "\n"


def side_by_side(records: list[Results]) -> list[str]:
    rows = [
        "| corpus | model | accuracy clean | macro-F1 clean | accuracy Opus 24k | ECE calibrated (pooled) |",
        "|---|---|---|---|---|---|",
    ]
    corpora = sorted({corpus for r in records for corpus in r.crossval["summary"]})
    for corpus in corpora:
        for r in records:
            if corpus not in r.crossval["summary"]:
                continue
            clean, opus = r.crossval["summary"][corpus]["clean"], r.crossval["summary"][corpus]["opus24"]
            rows.append(f"| {corpus} | {learner_card(r.model).PLUGIN} | {meanstd(clean['accuracy'])} | {clean['macro_f1']['mean']:.3f} ± "
                        f"{clean['macro_f1']['std']:.3f} | {meanstd(opus['accuracy'])} | {r.crossval['pooled'][corpus]['ece_calibrated']:.3f} |")  # fmt: skip
    return rows


def crossval_section(cv: dict[str, Any], learner: ModuleType) -> list[str]:
    corpora = list(cv["summary"])
    lines = [
        f"Speaker-grouped {cv['k']}-fold cross-validation, seed {cv['seed']}. Argmax over the labels each corpus has; Opus: the same "
        "clips sent as 24 kbit/s voice notes. Confidently wrong: wrong answers above the \"unsure\" threshold (pooled out-of-fold, "
        "calibrated).",
        "",
        "| corpus | clips | accuracy clean | macro-F1 clean | accuracy Opus 24k | ECE raw -> calibrated | confidently wrong |",
        "|---|---|---|---|---|---|---|",
    ]
    for corpus in corpora:
        s, p = cv["summary"][corpus], cv["pooled"][corpus]
        lines.append(f"| {corpus} | {p['n']} | {meanstd(s['clean']['accuracy'])} | {s['clean']['macro_f1']['mean']:.3f} ± "
                     f"{s['clean']['macro_f1']['std']:.3f} | {meanstd(s['opus24']['accuracy'])} | {p['ece_raw']:.3f} -> "
                     f"{p['ece_calibrated']:.3f} | {p['confident_wrong']:.1%} |")  # fmt: skip
    others = [(corpus, name, values) for corpus in corpora for name, values in cv["summary"][corpus].items() if name not in CONDITIONS]
    lines += [""] if others else []
    for corpus, name, values in others:
        lines.append(f"- {corpus}, {name}: accuracy {meanstd(values['accuracy'])}, "
                     f"macro-F1 {values['macro_f1']['mean']:.3f} ± {values['macro_f1']['std']:.3f}.")  # fmt: skip
    lines += learner.crossval(cv)
    if cv["cross_corpus"]:
        lines += [
            "",
            "Cross-corpus: each corpus scored by models that never heard it (clean, calibrated; over the labels both it and the "
            "training data have). Answered: the share of clips given an emotion rather than \"unsure\", and how many of those "
            "answers are right (selective accuracy).",
            "",
            "| corpus | trained on | scored by | clips | accuracy | macro-F1 | ECE | confidently wrong | answered | right when answered |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for corpus, c in cv["cross_corpus"].items():
            lines.append(f"| {corpus} | {' + '.join(c['trained_on'])} | {c['how']} | {c['n']} | {meanstd(c['accuracy'])} | "
                         f"{c['macro_f1']['mean']:.3f} | {c['ece']['mean']:.3f} | {c['confident_wrong']['mean']:.1%} | "
                         f"{c['answered']['mean']:.1%} | {c['answered_accuracy']['mean']:.1%} |")  # fmt: skip
    lines += ["", calibration(cv), ""]
    for corpus in corpora:
        recall = ", ".join(f"{label} {value:.0%}" for label, value in cv["pooled"][corpus]["recall"].items())
        lines.append(f"- {corpus}, out-of-fold recall per class: {recall}.")
    lines += ["", "| fold | held-out speakers | " + " | ".join(f"{c} accuracy" for c in corpora) + " |", "|---|---|" + "---|" * len(corpora)]
    for row in cv["folds"]:
        cells = " | ".join(f"{row[c]['clean']['accuracy']:.1%}" if c in row else "-" for c in corpora)
        shown = ", ".join(row["speakers"][:12]) + (f" (+{len(row['speakers']) - 12})" if len(row["speakers"]) > 12 else "")
        lines.append(f"| {row['fold']} | {shown} | {cells} |")
    return [*lines, ""]


def calibration(cv: dict[str, Any]) -> str:
    """How the served probabilities are calibrated, in words."""
    pooled = cv["pooled"]
    unheard, slope = pooled.get("temperature_unheard"), pooled.get("temperature_slope", 0.0)
    if slope:
        return (f"temperature {pooled['temperature']:.2f} x unfamiliarity ^ {slope:.2f} (unfamiliarity: how far an utterance lies "
                "from the training clips, 1 for a typical one), fitted on the pooled out-of-fold logits together with each trained "
                "corpus as scored by the model that never heard it" + (f" (one temperature for those alone: {unheard:.2f})." if unheard else "."))  # fmt: skip
    return (f"temperature {pooled['temperature']:.2f}, fitted on the pooled out-of-fold logits"
            + (f" (fitted instead on each corpus by the model that never heard it: {unheard:.2f})." if unheard else "."))


def card(results: Results, records: list[Results], order: tuple[str, ...]) -> str:
    shipped, cv, learner = results.shipped, results.crossval, learner_card(results.model)
    assert shipped is not None
    trained = corpus_names(results.corpus)
    lines = [
        f"# sera emotion model: {learner.TITLE}",
        "",
        f"*Written by `sera train --model {results.model}` from the numbers it measured; rerun the command below to reproduce it.*",
        "",
        "## Summary",
        "",
        f"- File: `{shipped.model_file}` ({shipped.size_mb:.2f} MB), served by the `{learner.PLUGIN}` analyzer.",
        *learner.summary(results),
        f"- Calibration: {calibration(cv)}",
        f"- torch vs onnxruntime, largest difference in any output: {shipped.parity_onnx:.2e}.",
        "",
        "## Data and split",
        "",
        f"- Trained on {results.corpus} ({results.clips} clips), every speaker: {', '.join(results.speakers)}; read from "
        f"`{results.data_root}`" + (f"; scored on, never trained on: {results.test_corpus}." if results.test_corpus else "."),
        "- The figures on voices the model never heard are the cross-validation's: each fold's model trained without its speakers.",
        "- Each clip trimmed to its speech by the pipeline's own speech detector; heard as it is and after a 24 kbit/s Opus round trip.",
        "",
        "## Cross-validation (voices never heard)",
        "",
        *(side_by_side(ordered(records, order)) + [""] if len(records) > 1 else []),
        *crossval_section(cv, learner),
        *learner.sections(results),
        "## Reproduce",
        "",
        "```",
        results.command,
        "```",
        "",
        f"On {results.machine}: inputs {results.minutes['prepare']:.1f} min (cached per corpus after the first run), fitting "
        f"{results.minutes['fit']:.1f} min, the whole run {results.minutes['total']:.1f} min.",
        "",
        "## Limits",
        "",
        f"- Trained on acted speech read in a studio ({', '.join(CORPORA[n].described if n in CORPORA else n for n in trained)}): real, "
        "spontaneous voices are harder, and confidence on them is lower than these figures suggest (see the cross-corpus cells). "
        "Below the configured confidence the bot answers \"unsure\" rather than naming an emotion.",
        *learner.limits(results),
        "- Emotion recognition is not a measure of anyone's state of mind; do not use it to judge people.",
        "",
        "## Licence",
        "",
        *learner.licences(results),
        *[f"- {licence(name)}" for name in results.corpora],
        "",
        "The model is trained on the corpora, so the file as a whole carries their terms: CC BY-NC-SA 4.0 (non-commercial).",
        "",
    ]
    return "\n".join(lines)
