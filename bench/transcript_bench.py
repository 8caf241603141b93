"""How well and how cheaply does the transcript plugin write down speech, on one CPU core?

Word error rate (word-level edits over the reference's words, after lower-casing and dropping
punctuation) and cost (CPU seconds per minute of speech, and the real-time factor's inverse) of each
Whisper model the plugin offers, on speech whose words are known:

- espeak-ng: English sentences, two voices, made here;
- RAVDESS (English actors): its two statements, said with every emotion, clips drawn over all actors;
- nEMO (Polish): the sentence in its ``text`` column (base only: tiny.en hears English alone).

Each clip goes the way a voice note's speech does in sera: decoded, cut into speech segments by the
speech detector, each segment through the plugin (one thread, int8, greedy). Corpora under ``--data``
that are missing are skipped, saying so. The models run one after the other in one process, on the
same segments, so their ratios are comparable on a noisy machine.

    python bench/transcript_bench.py --data ../shared/data --clips 40
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path

from sera.audio import SAMPLE_RATE, decode
from sera.config import Config
from sera.plugin import Segment, TranscriptResult
from sera.registry import PluginSet
from sera.speech import VAD_MODEL, SpeechDetector

SENTENCES = [
    "I still don't get the second proof, can we go over it again tomorrow?",
    "The library closes early on Fridays, so let us meet in the kitchen instead.",
    "She finally finished the assignment and honestly she is so relieved.",
    "Please share the slides from the lecture on Monday with everyone.",
    "Nothing I study ever seems to stick, and the exam is next week.",
    "We should go through the practice exam before Friday, question by question.",
]
VOICES = ("en-us", "en-gb")
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


def words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]", " ", text.lower()).replace("_", " ").split()


def edits(reference: list[str], heard: list[str]) -> int:
    """Word-level Levenshtein distance."""
    row = list(range(len(heard) + 1))
    for i, r in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(heard, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


def espeak(folder: Path) -> list[tuple[Path, str]]:
    items = []
    for v, voice in enumerate(VOICES):
        for s, text in enumerate(SENTENCES):
            path = folder / f"{v}-{s}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
            items.append((path, text))
    return items


def ravdess(root: Path, count: int, rng: random.Random) -> list[tuple[Path, str]]:
    clips = [p for p in sorted(root.glob("Actor_*/03-01-*")) if p.stem.split("-")[4] in RAVDESS_STATEMENTS]
    return [(p, RAVDESS_STATEMENTS[p.stem.split("-")[4]]) for p in rng.sample(clips, min(count, len(clips)))]


def nemo(root: Path, count: int, rng: random.Random) -> list[tuple[Path, str]]:
    with (root / "metadata.csv").open(newline="", encoding="utf-8") as rows:
        clips = [(root / row["path"], row["text"]) for row in csv.DictReader(rows)]
    return rng.sample(clips, min(count, len(clips)))


def segments_of(items: list[tuple[Path, str]], detector: SpeechDetector) -> list[tuple[list[Segment], str]]:
    out = []
    for path, text in items:
        samples = decode(path)
        spans = detector.segments(samples) or [(0, samples.size)]
        out.append(([Segment(samples[a:b], SAMPLE_RATE, a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in spans], text))
    return out


def measure(model: str, clips: list[tuple[list[Segment], str]]) -> dict[str, float]:
    plugins = PluginSet(Config(plugins={"transcript": {"enabled": True, "model": model}}), SAMPLE_RATE, only={"transcript"})
    (plugin,) = plugins.analyzers
    errors = total = 0
    speech = cpu = wall = 0.0
    for segments, text in clips:
        started, ticked = time.process_time(), time.perf_counter()
        heard = [r for r in plugin.analyze(segments) if isinstance(r, TranscriptResult)]
        cpu += time.process_time() - started
        wall += time.perf_counter() - ticked
        speech += sum(s.duration for s in segments)
        reference = words(text)
        errors += edits(reference, words(" ".join(r.text for r in heard)))
        total += len(reference)
    plugins.close()
    return {"wer": errors / total, "cpu_per_minute": cpu / speech * 60, "speed": speech / wall, "clips": len(clips), "speech_s": speech}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--clips", type=int, default=40, help="clips drawn from each corpus (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    detector = SpeechDetector(Config().models_dir / VAD_MODEL, Config().speech)
    sets: dict[str, tuple[list, tuple[str, ...]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets["espeak-ng, English"] = (segments_of(espeak(Path(tmp)), detector), ("tiny.en", "base"))
    for name, loader, models in (("RAVDESS, English actors", ravdess, ("tiny.en", "base")), ("nEMO, Polish", nemo, ("base",))):
        folder = args.data / name.split(",")[0].lower()
        if not folder.is_dir():
            print(f"SKIPPED {name}: no {folder} (pass --data)")
            continue
        sets[name] = (segments_of(loader(folder, args.clips, rng), detector), models)
    print("one thread, int8, greedy decoding; cost: CPU seconds per minute of speech (lower is cheaper); speed: speech seconds per wall second")
    print(f"{'speech':<26} {'model':<8} {'clips':>5} {'speech s':>9} {'WER':>7} {'CPU s/min':>10} {'speed':>7}")
    for name, (clips, models) in sets.items():
        for model in models:
            m = measure(model, clips)
            print(f"{name:<26} {model:<8} {m['clips']:>5} {m['speech_s']:>9.1f} {m['wer']:>7.1%} {m['cpu_per_minute']:>10.1f} {m['speed']:>6.1f}x")


if __name__ == "__main__":
    main()
