"""One small loader per corpus: file names -> labelled clips with speaker and gender.

It lives in the core, not in training, because `sera evaluate` measures the shipped model on corpora too.

Loaders only parse; they never copy or download. ``CORPORA`` maps the names ``sera train --corpus``
and ``sera evaluate --corpus`` accept to their loaders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.errors import SeraError

RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
EMOTIONS = tuple(RAVDESS_EMOTIONS.values())  # the model's label order
AUDIO_SUFFIXES = {".flac", ".wav", ".ogg", ".opus", ".mp3", ".m4a", ".webm"}


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    speaker: str
    gender: str  # "female", "male" or "" when the corpus does not say


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
        clips.append(Clip(path, RAVDESS_EMOTIONS[fields[2]], f"{actor:02d}", "male" if actor % 2 else "female"))
    return clips


CORPORA: dict[str, Callable[[Path], list[Clip]]] = {"ravdess": ravdess}


def load_corpus(name: str, root: Path) -> list[Clip]:
    if name not in CORPORA:
        raise SeraError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    if not root.is_dir():
        raise SeraError(f"corpus folder not found: {root}")
    clips = CORPORA[name](root)
    if not clips:
        raise SeraError(f"no {name} clips found under {root}")
    return clips
