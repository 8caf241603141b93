"""What ``sera train`` runs: the recipe, the parity check, the held-out evaluation and the model card.

Importing this module must stay cheap (no torch, librosa or onnxruntime): ``sera train``'s argument
parser reads ``add_arguments``; everything heavy is imported inside the functions that use it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from sera.errors import SeraError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sera.config import Config
    from sera.training.crossval import Plan

log = logging.getLogger(__name__)

RESULTS_FILE = "training-results.json"
CV_RESULTS_FILE = "crossval-results.json"
CV_TABLE_FILE = "CROSSVAL.md"
CNN_PLUGIN = "emotion_cnn"
CNN_VAL, CNN_TEST = "17,18", "19,20,21"  # the CNN's held-out speakers unless told otherwise


def cache_folder(args: argparse.Namespace) -> Path | None:
    """Where features and embeddings are cached between runs: ``--cache``, else the user's cache folder."""
    if args.no_cache:
        return None
    import platformdirs

    return Path(args.cache).expanduser() if args.cache else platformdirs.user_cache_path("sera")


def speakers(text: str) -> set[str]:
    return {f"{int(s):02d}" if s.strip().isdigit() else s.strip() for s in text.split(",") if s.strip()}


def main(args: argparse.Namespace, config: Config) -> int:
    try:
        importlib.import_module("torch")  # training imports it where it is used; this says at once what is missing
    except ImportError as exc:
        raise SeraError(f"training needs the [train] extra (pip install 'sera-voice[train]'; -e '.[train]' in a checkout): {exc}") from None
    from sera.corpora import load_corpora

    progress = logging.getLogger("sera.training")
    if progress.getEffectiveLevel() > logging.INFO:
        progress.setLevel(logging.INFO)  # half an hour of training says how far it got, without -v
    data = Path(args.data)
    clips = load_corpora(args.corpus, data, training=True)
    if args.test_corpus:
        if not args.cv:
            raise SeraError("--test-corpus names corpora the cross-validation scores: give --cv K too")
        clips += load_corpora(args.test_corpus, data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return LEARNERS[args.model](args, config, clips, out)


def train_whisper(args: argparse.Namespace, config: Config, clips: list, out: Path) -> int:
    """The Whisper-encoder model: every speaker is trained on; its figures, calibration and baseline
    size all come from the cross-validation, which it therefore needs."""
    from sera.emotions import EMOTIONS
    from sera.training import whisper_card, whisper_train

    if not args.cv:
        raise SeraError("the Whisper model takes its calibration and baseline size from cross-validation: give --cv K (3 is what the card reports)")
    if args.val_speakers or args.test_speakers or args.ablation_epochs:
        raise SeraError("--val-speakers, --test-speakers and --ablation-epochs are the CNN's (--model cnn); the Whisper model trains on every speaker")
    test_only = frozenset(n.strip() for n in (args.test_corpus or "").split(",") if n.strip())
    cache = cache_folder(args)
    cv, shipped, minutes = whisper_train.run(clips, out, config.models_dir, EMOTIONS, cache, args.cv, args.seed, test_only, args.cv_only)
    results = whisper_card.Results(args.corpus, args.test_corpus or "", args.data, len(clips) - sum(c.corpus in test_only for c in clips),
                                   sorted({c.speaker for c in clips if c.corpus not in test_only}), cv.to_dict(), shipped, minutes,
                                   reproduce(args))  # fmt: skip
    for path in whisper_card.write(out, results):
        print(path)
    return 0


def train_cnn(args: argparse.Namespace, config: Config, clips: list, out: Path) -> int:
    """The seed paper's CNN: held-out validation and test speakers, or every speaker with ``--cv``."""
    from sera.audio import SAMPLE_RATE
    from sera.config import Config
    from sera.emotions import EMOTIONS
    from sera.evaluate import Item, evaluate
    from sera.model import EmotionModel
    from sera.pipeline import Pipeline
    from sera.registry import PluginSet
    from sera.training import card
    from sera.training.export import OPSET
    from sera.training.results import HeldOut, ShippedModel, results_json
    from sera.training.train import MODEL_FILE, run

    if args.cv_only:
        run_crossval(args, clips, config, out)
        return 0
    val = speakers(CNN_VAL if args.val_speakers is None else args.val_speakers)
    test = speakers(CNN_TEST if args.test_speakers is None else args.test_speakers)
    if args.ablation_epochs and not test:
        raise SeraError("--ablation-epochs scores every step on the test speakers: give some with --test-speakers")
    split, trained = run(
        clips,
        out,
        config.models_dir,
        val,
        test,
        EMOTIONS,
        cache_folder(args),
        seed=args.seed,
        epochs=1 if args.smoke else args.epochs,
        ablation_epochs=args.ablation_epochs,
        corpus=args.corpus,
        data_root=args.data,
        crossval=plan(args) if args.cv else None,
    )
    if trained.crossval:
        write_crossval(args, trained.crossval, out)
    model_path = out / MODEL_FILE
    shipped = ShippedModel(MODEL_FILE, model_path.stat().st_size / 1e6, OPSET, EmotionModel(model_path).window_latency_ms())
    held_out = None
    if len(split.test):
        plugin_config = Config(models_dir=config.models_dir, plugins={CNN_PLUGIN: {"enabled": True, "model": str(model_path.resolve())}})
        pipeline = Pipeline(plugin_config, PluginSet(plugin_config, SAMPLE_RATE, only={CNN_PLUGIN}))
        try:
            items = [Item(clips[i].path, clips[i].label, clips[i].speaker, clips[i].gender) for i in split.test]
            held_out = HeldOut(
                evaluate(pipeline, items, analyzer=CNN_PLUGIN),
                evaluate(pipeline, items, opus_bitrate="24k", analyzer=CNN_PLUGIN),
            )
        finally:
            pipeline.close()
    command = reproduce(args)
    (out / RESULTS_FILE).write_text(json.dumps(results_json(trained, shipped, held_out), indent=2, default=str) + "\n")
    card_path = card.write(out, trained, shipped, held_out, command)
    print(f"model: {model_path}\ncard:  {card_path}")
    if held_out:
        print(f"held-out speakers {sorted(test)}: accuracy {held_out.clean.scores.accuracy:.1%} clean, "
              f"{held_out.opus.scores.accuracy:.1%} Opus 24k")  # fmt: skip
    return 0


def plan(args: argparse.Namespace) -> Plan:
    """``--cv K``: the shipped recipe (or its personal-baseline variant) over K speaker-grouped folds."""
    from dataclasses import replace

    from sera.training.crossval import Plan
    from sera.training.recipe import FINAL, PERSONAL

    base = PERSONAL if args.reference == "speaker" else FINAL
    recipe = replace(base, epochs=1 if args.smoke else args.epochs or base.epochs)
    test_only = frozenset(n.strip() for n in (args.test_corpus or "").split(",") if n.strip())
    return Plan(recipe, args.cv, args.seed, test_only)


def run_crossval(args: argparse.Namespace, clips: list, config: Config, out: Path) -> None:
    """``--cv-only``: the cross-validation without training the shipped model."""
    import os

    import numpy as np

    from sera.emotions import EMOTIONS
    from sera.features import FeatureParams
    from sera.speech import VAD_MODEL
    from sera.training.crossval import cross_validate
    from sera.training.data import build_features

    cache = cache_folder(args)
    features = build_features(clips, FeatureParams(), config.models_dir / VAD_MODEL, cache, args.seed)
    y = np.array([EMOTIONS.index(c.label) for c in clips])
    cv = plan(args)
    workers = max(1, min(len(cv.jobs(clips)), os.cpu_count() or 1))
    write_crossval(args, cross_validate(cv, clips, features, y, EMOTIONS, workers).to_dict(), out)


def write_crossval(args: argparse.Namespace, result: dict, out: Path) -> None:
    """The CNN's cross-validation results, then ``CROSSVAL.md`` rebuilt from every model's results in
    ``out`` (the Whisper model's table stays beside it)."""
    from sera.training.crossval import markdown
    from sera.training.whisper_card import crossval_file

    (out / CV_RESULTS_FILE).write_text(json.dumps({**result, "command": reproduce(args)}, indent=2) + "\n")
    (out / CV_TABLE_FILE).write_text(crossval_file(out))
    print(markdown(result))


# The models ``sera train --model NAME`` trains, the default first: a new model is a new learner and a line here.
LEARNERS: dict[str, Callable[[argparse.Namespace, Config, list, Path], int]] = {"whisper": train_whisper, "cnn": train_cnn}


def reproduce(args: argparse.Namespace) -> str:
    """The command line that reruns this training, for the model card."""
    words = ["sera", "train", "--model", args.model, "--corpus", args.corpus, "--data", args.data, "--out", args.out]
    for flag, value in (("--val-speakers", args.val_speakers), ("--test-speakers", args.test_speakers)):
        words += [flag, value] if value is not None else []
    words += ["--seed", str(args.seed)]
    if args.smoke:
        words.append("--smoke")
    elif args.epochs:
        words += ["--epochs", str(args.epochs)]
    if args.ablation_epochs:
        words += ["--ablation-epochs", str(args.ablation_epochs)]
    if args.cv:
        words += ["--cv", str(args.cv)] + (["--cv-only"] if args.cv_only else [])
        words += ["--reference", args.reference] if args.reference != "window" else []
        words += ["--test-corpus", args.test_corpus] if args.test_corpus else []
    return " ".join(shlex.quote(w) for w in words)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=tuple(LEARNERS), default=next(iter(LEARNERS)),
        help="whisper (the default): the Whisper-encoder model, the default analyzer's (needs --cv); cnn: the seed paper's CNN",
    )  # fmt: skip
    parser.add_argument(
        "--corpus", default="ravdess", help="corpus names, comma-separated: ravdess, nemo, emospeech (see ../shared/data/README.md)"
    )
    parser.add_argument(
        "--data", required=True, help="the corpus folder (../shared/data/ravdess), or the folder holding each corpus (../shared/data)"
    )
    parser.add_argument("--out", default="models", help="where the .onnx, the card and the results go")
    parser.add_argument("--val-speakers", help=f"the CNN's held-out validation speakers (default {CNN_VAL})")
    parser.add_argument("--test-speakers", help=f"the CNN's held-out test speakers (default {CNN_TEST})")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ablation-epochs", type=int, metavar="N", help="first train and score every ablation step for N epochs each"
    )
    parser.add_argument("--cache", help="feature and embedding cache folder (default: the user's cache folder, ~/.cache/sera)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument("--smoke", action="store_true", help="one epoch: checks that the recipe runs end to end")
    parser.add_argument("--cv", type=int, metavar="K", help="first cross-validate the recipe over K speaker-grouped folds")
    parser.add_argument("--cv-only", action="store_true", help="with --cv: stop after the cross-validation")
    parser.add_argument(
        "--test-corpus", metavar="NAMES", help="with --cv: corpora never trained on, only scored (cross-corpus cells)"
    )
    parser.add_argument(
        "--reference", choices=("window", "speaker"), default="window",
        help="with --cv: the shipped recipe (window) or its personal-baseline variant (speaker)",
    )  # fmt: skip
