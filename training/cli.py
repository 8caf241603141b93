"""``sera train``: one command for every model. It reads the corpora, picks the learner ``--model``
names from ``LEARNERS``, runs the protocol (``training.protocol.train``) and writes the results record,
``CROSSVAL.md`` and the model card.

Importing this module must stay cheap (no torch, librosa or onnxruntime): ``sera train``'s argument
parser reads ``add_arguments``; everything heavy is imported inside ``main``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from sera.errors import SeraError
from sera.training.learners.cnn.recipe import RECIPES

if TYPE_CHECKING:
    from sera.config import Config

# The models ``sera train --model NAME`` trains, the default first. Each is a folder,
# ``training/learners/NAME/``, whose ``learner.make(args, models_dir, cache_dir)`` gives the protocol its
# learner and whose ``card`` module its card's own lines: a new model is a new folder and a line here.
LEARNERS: dict[str, str] = {
    "whisper": "a frozen Whisper encoder and linear heads: the default analyzer's model",
    "cnn": "the seed paper's CNN, trained from scratch",
}
DEFAULT_FOLDS = 3


def cache_folder(args: argparse.Namespace) -> Path | None:
    """Where features and embeddings are cached between runs: ``--cache``, else the user's cache folder."""
    if args.no_cache:
        return None
    import platformdirs

    return Path(args.cache).expanduser() if args.cache else platformdirs.user_cache_path("sera")


def main(args: argparse.Namespace, config: Config) -> int:
    try:
        importlib.import_module("torch")  # training imports it where it is used; this says at once what is missing
    except ImportError as exc:
        raise SeraError(f"training needs the [train] extra (pip install 'sera-voice[train]'; -e '.[train]' in a checkout): {exc}") from None
    from sera.corpora import corpus_names, load_corpora
    from sera.emotions import EMOTIONS
    from sera.training import card, protocol
    from sera.training.results import Results

    progress = logging.getLogger("sera.training")
    if progress.getEffectiveLevel() > logging.INFO:
        progress.setLevel(logging.INFO)  # half an hour of training says how far it got, without -v
    learner = importlib.import_module(f"sera.training.learners.{args.model}.learner").make(args, config.models_dir, cache_folder(args))
    data = Path(args.data)
    clips = load_corpora(args.corpus, data, training=True)
    test_only = frozenset(corpus_names(args.test_corpus))
    if test_only & set(corpus_names(args.corpus)):
        raise SeraError(f"{', '.join(sorted(test_only & set(corpus_names(args.corpus))))}: in --corpus and --test-corpus; a corpus is trained on or only scored")
    clips += load_corpora(args.test_corpus, data) if test_only else []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cv, shipped, minutes = protocol.train(learner, clips, EMOTIONS, args.cv, args.seed, test_only, None if args.cv_only else out)
    trained = [c for c in clips if c.corpus not in test_only]
    results = Results(args.model, args.corpus, args.test_corpus or "", args.data, len(trained), sorted({c.speaker for c in trained}),
                      learner.describe(), cv, shipped, minutes, f"{platform.machine()}, {os.cpu_count()} cores", reproduce(args))  # fmt: skip
    print("\n".join(card.crossval_section(cv, card.learner_card(args.model))))
    for path in card.write(out, results, tuple(LEARNERS)):
        print(path)
    return 0


def reproduce(args: argparse.Namespace) -> str:
    """The command line that reruns this training, for the model card."""
    words = ["sera", "train", "--model", args.model, "--corpus", args.corpus, "--data", args.data, "--out", args.out,
             "--seed", str(args.seed), "--cv", str(args.cv)]  # fmt: skip
    words += ["--cv-only"] if args.cv_only else []
    words += ["--test-corpus", args.test_corpus] if args.test_corpus else []
    words += ["--encoder", args.encoder] if args.encoder else []
    words += ["--taps", args.taps] if args.taps else []
    words += ["--recipe", args.recipe] if args.recipe else []
    words += ["--smoke"] if args.smoke else ["--epochs", str(args.epochs)] if args.epochs else []
    return " ".join(shlex.quote(w) for w in words)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default = next(iter(LEARNERS))
    parser.add_argument("--model", choices=tuple(LEARNERS), default=default,
                        help="; ".join(f"{name}{' (the default)' if name == default else ''}: {what}" for name, what in LEARNERS.items()))  # fmt: skip
    parser.add_argument(
        "--corpus", default="ravdess", help="corpora trained on, comma-separated: ravdess, nemo, emospeech (see ../shared/data/README.md)"
    )
    parser.add_argument(
        "--data", required=True, help="the corpus folder (../shared/data/ravdess), or the folder holding each corpus (../shared/data)"
    )
    parser.add_argument("--out", default="models", help="where the .onnx, the card and the results go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cv", type=int, metavar="K", default=DEFAULT_FOLDS,
                        help=f"speaker-grouped folds: every speaker held out once (default {DEFAULT_FOLDS})")  # fmt: skip
    parser.add_argument("--cv-only", action="store_true", help="stop after the cross-validation: no model is exported")
    parser.add_argument("--test-corpus", metavar="NAMES", help="corpora never trained on, only scored (emospeech; emovo, casia, turev)")
    parser.add_argument("--cache", help="feature and embedding cache folder (default: the user's cache folder, ~/.cache/sera)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    whisper = parser.add_argument_group("the Whisper model's options (--model whisper)")
    whisper.add_argument("--encoder", help="whose encoder: base (99 languages, the default) or tiny.en (English)")
    whisper.add_argument("--taps", metavar="BLOCKS", help="the blocks whose hidden states are pooled, e.g. 1,2,3 (tiny.en's default)")
    cnn = parser.add_argument_group("the CNN's options (--model cnn)")
    cnn.add_argument("--recipe", choices=tuple(RECIPES),
                     help="sera (the shipped recipe, the default), personal (its personal-baseline variant, with --cv-only), or a "
                          "step of the ablation from the paper's recipe: " + ", ".join(list(RECIPES)[2:]))  # fmt: skip
    cnn.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    cnn.add_argument("--smoke", action="store_true", help="one epoch: checks that the recipe runs end to end")
