"""One small loader per corpus: its files or metadata -> labelled clips with speaker, gender and corpus.

It lives in the core, not in training, because `sera evaluate` measures the shipped model on corpora too.

Loaders only parse; they never copy or download. ``CORPORA`` is every corpus sera knows, each with what
a model card must say of it (its language, its licence) and whether it may ever be trained on: the
test-only corpora measure "a language never heard" and are refused as training data. ``LABELS`` gives
the emotions each corpus has: only RAVDESS has all eight, so a pooled model must compare a clip only
with its own corpus's labels.
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


NON_COMMERCIAL = "attribution, non-commercial use only, share-alike"


@dataclass(frozen=True)
class Corpus:
    """A corpus sera can read: its loader, its emotions, and what a model card says of it."""

    name: str
    language: str
    labels: tuple[str, ...]
    licence: str  # the card's line: the corpus, its citation, its terms
    load: Callable[[Path], list[Clip]]
    test_only: bool = False  # evaluation of a language never heard: never trained or tuned on
    speech: str = ""  # what is spoken, by whom: the card's limits name it

    @property
    def described(self) -> str:
        return self.speech or self.language


def metadata_corpus(name: str, language: str, labels: tuple[str, ...], licence: str, test_only: bool = False, speech: str = "") -> Corpus:
    return Corpus(name, language, labels, licence, from_metadata(name, labels), test_only, speech)


CORPORA: dict[str, Corpus] = {corpus.name: corpus for corpus in (
    Corpus("ravdess", "English", EMOTIONS, "RAVDESS (Livingstone & Russo 2018, PLoS ONE 13(5): e0196391, doi:10.5281/zenodo.1188976), "
           f"licensed **CC BY-NC-SA 4.0**. This model is trained on it and carries the same terms: {NON_COMMERCIAL}.", ravdess,
           speech="English, 21 North-American actors, two sentences"),
    metadata_corpus("nemo", "Polish", ("neutral", "happy", "sad", "angry", "fearful", "surprised"),  # no calm, no disgust
                    f"nEMO: Dataset of Emotional Speech in Polish (Christop, LREC-COLING 2024), licensed **CC BY-NC-SA 4.0**: {NON_COMMERCIAL}.",
                    speech="Polish, 7 young adult speakers, many sentences"),
    metadata_corpus("emospeech", "Indian English (phones)", ("calm", "happy", "angry", "fearful"),
                    f"Indian EmoSpeech Command Dataset v0.1 (Banga et al., arXiv:1910.13801), licensed **CC BY-NC-SA 4.0**: {NON_COMMERCIAL}.",
                    speech="Indian English one-word commands on phones"),
    metadata_corpus("emovo", "Italian", ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
                    "EMOVO (Costantini et al., LREC 2014): non-commercial research with acknowledgement; evaluation only.", True),
    metadata_corpus("casia", "Mandarin", ("neutral", "happy", "sad", "angry", "fearful", "surprised"),
                    "CASIA (Institute of Automation, Chinese Academy of Sciences), public 1,200-clip subset: no licence given; evaluation only.", True),
    metadata_corpus("turev", "Turkish", ("calm", "happy", "sad", "angry"),
                    "TurEV-DB (CC BY-NC-ND 4.0 by its README, GPL-3.0 by its LICENSE file): evaluation only.", True),
)}  # fmt: skip
LABELS: dict[str, tuple[str, ...]] = {name: corpus.labels for name, corpus in CORPORA.items()}


def load_corpus(name: str, root: Path) -> list[Clip]:
    if name not in CORPORA:
        raise SeraError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    if not root.is_dir():
        raise SeraError(f"corpus folder not found: {root}")
    clips = CORPORA[name].load(root)
    if not clips:
        raise SeraError(f"no {name} clips found under {root}")
    return clips


def corpus_names(text: str | None) -> list[str]:
    """The corpus names a comma-separated list (``--corpus ravdess,nemo``) gives, in its order."""
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def load_corpora(names: str, root: Path, training: bool = False) -> list[Clip]:
    """``names`` comma-separated; ``root`` is the corpus folder for one name, or the folder that holds
    each corpus in a folder of its name (``../shared/data``) for one or several. ``training``: a
    test-only corpus is refused (it measures languages never heard; training on it would end that)."""
    wanted = corpus_names(names)
    barred = [name for name in wanted if training and name in CORPORA and CORPORA[name].test_only]
    if barred:
        raise SeraError(f"{', '.join(barred)} {'is' if len(barred) == 1 else 'are'} test only (a language never heard): "
                        "score it with --test-corpus, never train on it")  # fmt: skip
    if len(wanted) == 1 and not (root / wanted[0]).is_dir():
        return load_corpus(wanted[0], root)
    return [clip for name in wanted for clip in load_corpus(name, root / name)]
