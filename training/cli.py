"""What ``sera train`` runs: the recipe, the parity check, the held-out evaluation and the model card.

Importing this module must stay cheap and torch-free: ``sera``'s argument parser reads ``add_arguments``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path


from bot.audio import SAMPLE_RATE
from bot.config import Config
from bot.corpora import EMOTIONS, load_corpora
from bot.errors import SeraError
from bot.evaluate import Item, evaluate, terminal_progress
from bot.model import EmotionModel
from bot.pipeline import Pipeline
from bot.registry import PluginSet
from training import card

log = logging.getLogger(__name__)

RESULTS_FILE = "training-results.json"
CV_RESULTS_FILE = "crossval-results.json"
CV_TABLE_FILE = "CROSSVAL.md"


def speakers(text: str) -> set[str]:
    return {f"{int(s):02d}" if s.strip().isdigit() else s.strip() for s in text.split(",") if s.strip()}


def main(args: argparse.Namespace, config: Config) -> int:
    from training.train import MODEL_FILE, OPSET, run  # torch: imported only when training

    data = Path(args.data)
    clips = load_corpora(args.corpus, data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    crossval = None
    if args.cv:
        crossval = run_crossval(args, clips, config, out)
        if args.cv_only:
            return 0
    val, test = speakers(args.val_speakers), speakers(args.test_speakers)
    if args.ablation_epochs and not test:
        raise SeraError("--ablation-epochs scores every step on the test speakers: give some with --test-speakers")
    model, split, results = run(
        clips,
        out,
        config.models_dir,
        val,
        test,
        EMOTIONS,
        None if args.no_cache else Path(args.cache).expanduser(),
        seed=args.seed,
        epochs=1 if args.smoke else args.epochs,
        ablation_epochs=args.ablation_epochs,
        corpus=args.corpus,
        data_root=str(data),
    )
    model_path = out / MODEL_FILE
    results.update(
        model_file=MODEL_FILE,
        size_mb=model_path.stat().st_size / 1e6,
        opset=OPSET,
        ms_per_window=EmotionModel(model_path).window_latency_ms(),
    )
    clean = opus = None
    if len(split.test):
        plugin_config = Config(models_dir=config.models_dir, plugins={"emotion_cnn": {"model": str(model_path.resolve())}})
        pipeline = Pipeline(plugin_config, PluginSet(plugin_config, SAMPLE_RATE, only={"emotion_cnn"}))
        try:
            items = [Item(clips[i].path, clips[i].label, clips[i].speaker, clips[i].gender) for i in split.test]
            clean = evaluate(pipeline, items, progress=terminal_progress)
            opus = evaluate(pipeline, items, opus_bitrate="24k", progress=terminal_progress)
        finally:
            pipeline.close()
        results["test_clean"] = clean.to_dict()
        results["test_opus24"] = opus.to_dict()
    command = reproduce(args)
    if crossval is not None:
        results["crossval"] = crossval
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2, default=str) + "\n")
    card_path = card.write(out, results, clean, opus, command)
    print(f"model: {model_path}\ncard:  {card_path}")
    if clean and opus:
        print(f"held-out speakers {sorted(test)}: accuracy {clean.scores.accuracy:.1%} clean, {opus.scores.accuracy:.1%} Opus 24k")
    return 0


def run_crossval(args: argparse.Namespace, clips: list, config: Config, out: Path) -> dict:
    """``--cv K``: the recipe cross-validated over every speaker; its table in ``CROSSVAL.md``."""
    import os
    from dataclasses import replace

    import numpy as np

    from bot.features import FeatureParams
    from bot.pipeline import VAD_MODEL
    from training.crossval import cross_validate, markdown
    from training.data import build_features
    from training.train import FINAL, PERSONAL

    cache = None if args.no_cache else Path(args.cache).expanduser()
    features = build_features(clips, FeatureParams(), config.models_dir / VAD_MODEL, cache, args.seed)
    y = np.array([EMOTIONS.index(c.label) for c in clips])
    base = PERSONAL if args.reference == "speaker" else FINAL
    recipe = replace(base, epochs=1 if args.smoke else args.epochs or base.epochs)
    workers = max(1, min(args.cv, os.cpu_count() or 1))
    result = cross_validate(recipe, clips, features, y, EMOTIONS, args.cv, args.seed, workers).to_dict()
    table = markdown(result)
    (out / CV_RESULTS_FILE).write_text(json.dumps(result, indent=2) + "\n")
    (out / CV_TABLE_FILE).write_text(f"# Cross-validation\n\n{table}\nReproduce: `{reproduce(args)}`\n")
    print(table)
    return result


def reproduce(args: argparse.Namespace) -> str:
    """The command line that reruns this training, for the model card."""
    words = ["sera", "train", "--corpus", args.corpus, "--data", args.data, "--out", args.out,
             "--val-speakers", args.val_speakers, "--test-speakers", args.test_speakers, "--seed", str(args.seed)]  # fmt: skip
    if args.smoke:
        words.append("--smoke")
    elif args.epochs:
        words += ["--epochs", str(args.epochs)]
    if args.ablation_epochs:
        words += ["--ablation-epochs", str(args.ablation_epochs)]
    if args.cv:
        words += ["--cv", str(args.cv)] + (["--cv-only"] if args.cv_only else [])
        words += ["--reference", args.reference] if args.reference != "window" else []
    return " ".join(shlex.quote(w) for w in words)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus", default="ravdess", help="corpus names, comma-separated: ravdess, nemo, emospeech (see ../shared/data/README.md)"
    )
    parser.add_argument(
        "--data", required=True, help="the corpus folder (../shared/data/ravdess), or the folder holding each corpus (../shared/data)"
    )
    parser.add_argument("--out", default="models", help="where the .onnx, the card and the results go")
    parser.add_argument("--val-speakers", default="17,18", help="held-out validation speakers (default 17,18)")
    parser.add_argument("--test-speakers", default="19,20,21", help="held-out test speakers (default 19,20,21)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ablation-epochs", type=int, metavar="N", help="first train and score every ablation step for N epochs each"
    )
    parser.add_argument("--cache", default="~/.cache/sera", help="feature cache folder")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument("--smoke", action="store_true", help="one epoch: checks that the recipe runs end to end")
    parser.add_argument("--cv", type=int, metavar="K", help="first cross-validate the recipe over K speaker-grouped folds")
    parser.add_argument("--cv-only", action="store_true", help="with --cv: stop after the cross-validation")
    parser.add_argument(
        "--reference", choices=("window", "speaker"), default="window",
        help="with --cv: the shipped recipe (window) or its personal-baseline variant (speaker)",
    )  # fmt: skip
