"""One small loader per corpus: its files or metadata -> labelled clips with speaker, gender and corpus.

It lives in the core, not in training, because `sera evaluate` measures the shipped model on corpora too.

Loaders only parse; they never copy or download. ``CORPORA`` maps the names ``sera train --corpus``
and ``sera evaluate --corpus`` accept to their loaders, and ``LABELS`` to the emotions each corpus has:
only RAVDESS has all eight, so a pooled model must compare a clip only with its own corpus's labels.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sera.emotions import EMOTIONS
from sera.errors import SeraError

RAVDESS_EMOTIONS = {f"{code:02d}": label for code, label in enumerate(EMOTIONS, 1)}  # file name code -> label
AUDIO_SUFFIXES = {".flac", ".wav", ".ogg", ".opus", ".mp3", ".m4a", ".webm"}


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    speaker: str  # unique across the corpora sera knows (each corpus's ids have their own shape)
    gender: str  # "female", "male" or "" when the corpus does not say
    corpus: str = ""


def ravdess(root: Path) -> list[Clip]:
    """RAVDESS speech: ``Actor_NN/03-01-EE-II-SS-RR-NN.ext``; odd actors are male, even female."""
    clips = []
    for path in sorted(root.glob("Actor_*/*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        fields = path.stem.split("-")
        if len(fields) != 7 or fields[1] != "01" or fields[2] not in RAVDESS_EMOTIONS:
            continue  # not a speech clip (song, or a stray file)
        actor = int(fields[6])
        clips.append(Clip(path, RAVDESS_EMOTIONS[fields[2]], f"{actor:02d}", "male" if actor % 2 else "female", "ravdess"))
    return clips


def from_metadata(corpus: str, labels: tuple[str, ...]) -> Callable[[Path], list[Clip]]:
    """A loader for a corpus laid out as ``metadata.csv`` (``path,label,speaker[,gender,...]``) beside its files."""

    def load(root: Path) -> list[Clip]:
        table = root / "metadata.csv"
        if not table.is_file():
            raise SeraError(f"{corpus}: no metadata.csv in {root}")
        clips = []
        with table.open(newline="", encoding="utf-8") as rows:
            for row in csv.DictReader(rows):
                if row.get("label") not in labels:
                    raise SeraError(f"{table}: unknown label {row.get('label')!r} for {row.get('path')}")
                clips.append(Clip(root / row["path"], row["label"], row["speaker"], row.get("gender", ""), corpus))
        return clips

    load.__doc__ = f"{corpus}: clips listed in ``metadata.csv``, labels {', '.join(labels)}."
    return load


LABELS: dict[str, tuple[str, ...]] = {
    "ravdess": EMOTIONS,
    "nemo": ("neutral", "happy", "sad", "angry", "fearful", "surprised"),  # no calm, no disgust
    "emospeech": ("calm", "happy", "angry", "fearful"),
}
CORPORA: dict[str, Callable[[Path], list[Clip]]] = {
    "ravdess": ravdess,
    "nemo": from_metadata("nemo", LABELS["nemo"]),
    "emospeech": from_metadata("emospeech", LABELS["emospeech"]),
}


def load_corpus(name: str, root: Path) -> list[Clip]:
    if name not in CORPORA:
        raise SeraError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    if not root.is_dir():
        raise SeraError(f"corpus folder not found: {root}")
    clips = CORPORA[name](root)
    if not clips:
        raise SeraError(f"no {name} clips found under {root}")
    return clips


def load_corpora(names: str, root: Path) -> list[Clip]:
    """``names`` comma-separated; ``root`` is the corpus folder for one name, or the folder that holds
    each corpus in a folder of its name (``../shared/data``) for one or several."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if len(wanted) == 1 and not (root / wanted[0]).is_dir():
        return load_corpus(wanted[0], root)
    return [clip for name in wanted for clip in load_corpus(name, root / name)]
