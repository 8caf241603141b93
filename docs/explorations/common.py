"""What every exploration here starts from: the corpora ``sera train`` uses for the shipped Whisper
model, their cached embeddings (run that training once first, with the same ``--cache``), and the
protocol's speaker folds. Run from the checkout root with the ``[train]`` extra, e.g.
``python docs/explorations/cold_start.py --data ../shared/data --cache ~/.cache/sera``."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sera.corpora import Clip, load_corpora
from sera.emotions import EMOTIONS
from sera.training import protocol
from sera.training.learners.whisper.head import Data
from sera.training.learners.whisper.learner import Whisper

TRAINED = ("ravdess", "nemo")  # as the shipped model
COLUMNS = ("ravdess", "nemo", "emovo", "casia", "turev", "emospeech")


@dataclass(frozen=True)
class Setting:
    """Every corpus's clips, in the order of their embeddings' rows."""

    clips: list[Clip]
    data: Data

    def folds(self, trained: tuple[str, ...] = TRAINED) -> tuple[np.ndarray, list[protocol.Split], dict[str, protocol.Split]]:
        """The protocol's 3 speaker folds (seed 0) over ``trained``, every other corpus test-only."""
        return protocol.splits(self.clips, 3, 0, frozenset(c for c in COLUMNS if c not in trained))


def setting(description: str) -> Setting:
    """Every corpus's clips and clean embeddings, from the command line's ``--data`` and ``--cache``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", required=True, help="the folder holding each corpus (../shared/data)")
    parser.add_argument("--cache", required=True, help="the cache folder sera train wrote the embeddings to")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    clips = load_corpora("ravdess,nemo,emospeech", Path(args.data), training=True) + load_corpora("emovo,casia,turev", Path(args.data))
    learner = Whisper(Path("models"), Path(args.cache).expanduser(), 0)
    learner.prepare(clips, EMOTIONS)
    return Setting(clips, learner.data["clean"])


def groups(data: Data, split: protocol.Split, trained: tuple[str, ...] = TRAINED) -> dict[str, np.ndarray]:
    """A fold's held-out clips of each trained corpus, and every clip of each test-only one."""
    return {c: split.test[data.corpus[split.test] == c] for c in trained} | {
        c: np.flatnonzero(data.corpus == c) for c in COLUMNS if c not in trained
    }


def table(rows: dict[str, dict[str, list[float]]]) -> None:
    """Mean ± spread over folds, in percent, one row per variant."""
    print(f"{'variant':48s}" + "".join(f"{c:>13s}" for c in COLUMNS))
    for name, cells in rows.items():
        print(f"{name:48s}" + "".join(f"{100 * np.mean(cells[c]):7.1f}±{100 * np.std(cells[c]):4.1f}" if c in cells else f"{'-':>13s}" for c in COLUMNS))
