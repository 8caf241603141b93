"""What every learner hears, computed once and shared: each clip decoded by the runtime's own
``sera.audio.decode``, trimmed to its speech by the pipeline's own speech detector, as it is and as an
Opus voice note (Discord voice notes are Opus). Decoding is most of the cost of a first run (five
sandboxed ffmpeg runs a clip), so the trimmed audio is cached per corpus and every learner's inputs
(log-Mel windows, embeddings) are computed from it and cached in turn, keyed by everything they depend
on: pooling a new corpus with ones already done computes only the new one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sera.audio import SAMPLE_RATE, Limits, decode, encode_opus
from sera.corpora import Clip
from sera.progress import progress
from sera.speech import VAD_MODEL, SpeechDetector

log = logging.getLogger(__name__)

OPUS_BITRATE = "24k"
CACHE_WORKERS = 2  # clips worked on at once (ffmpeg, onnxruntime and torch release the GIL)


def opus_round_trip(samples: np.ndarray, bitrate: str = OPUS_BITRATE) -> np.ndarray:
    """What the model hears of ``samples`` sent as an Opus voice note."""
    return decode(encode_opus(samples, bitrate), Limits(max_bytes=1 << 30, max_seconds=3600))[: samples.size]


def speech_span(samples: np.ndarray, detector: SpeechDetector) -> tuple[int, int]:
    """From the first to the last speech sample; the whole clip when the detector hears none."""
    spans = detector.segments(samples)
    return (spans[0][0], spans[-1][1]) if spans else (0, samples.size)



def per_corpus(clips: list[Clip], what: str, key: list[str], compute: Callable[[int, Clip], dict[str, np.ndarray]],
               cache_dir: Path | None) -> dict[str, list[np.ndarray]]:  # fmt: skip
    """``compute`` over every clip, a list per name in the clips' order; each corpus cached as
    ``{what}-{hash}.npz`` under a hash of ``key`` and its clips' paths (arrays may differ in length from
    clip to clip). Clips must come grouped by corpus, as ``load_corpora`` gives them."""
    corpora = [c.corpus for c in clips]
    order = list(dict.fromkeys(corpora))
    if corpora != sorted(corpora, key=order.index):
        raise ValueError("clips must come grouped by corpus, as load_corpora gives them")
    out: dict[str, list[np.ndarray]] = {}
    for corpus in order:
        group = [c for c in clips if c.corpus == corpus]
        digest = hashlib.sha256("|".join(key + [str(c.path) for c in group]).encode()).hexdigest()[:16]
        cache = cache_dir / f"{what}-{digest}.npz" if cache_dir else None
        if cache and cache.is_file():
            log.info("%s %s from cache %s", corpus, what, cache)
            with np.load(cache) as stored:
                done = {name: np.split(stored[name], np.cumsum(stored[f"{name}.lengths"])[:-1]) for name in stored if "." not in name}
        else:
            log.info("%s: %s of %d clips", corpus, what, len(group))
            with ThreadPoolExecutor(CACHE_WORKERS) as pool:
                rows = list(progress(pool.map(lambda ic: compute(*ic), enumerate(group)), f"{corpus}: {what}", total=len(group)))
            done = {name: [row[name] for row in rows] for name in rows[0]}
            if cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, **{name: np.concatenate(arrays) for name, arrays in done.items()},
                         **{f"{name}.lengths": np.array([len(a) for a in arrays]) for name, arrays in done.items()})  # fmt: skip
        for name, arrays in done.items():
            out.setdefault(name, []).extend(arrays)
    return out


@dataclass(frozen=True)
class Heard:
    """A clip's speech (from the first to the last speech sample), at ``SAMPLE_RATE``: as recorded, and
    as it arrives after a round trip through Opus at voice-note bitrate."""

    clean: np.ndarray
    opus24: np.ndarray


def hear(clips: list[Clip], models_dir: Path, cache_dir: Path | None) -> list[Heard]:
    """Every clip as the bot would hear it, trimmed to its speech; cached per corpus."""
    detector: list[SpeechDetector] = []  # loaded once, and only when something is not cached

    def one(_: int, clip: Clip) -> dict[str, np.ndarray]:
        detector[:] = detector or [SpeechDetector(models_dir / VAD_MODEL)]
        samples = decode(clip.path)
        start, end = speech_span(samples, detector[0])
        return {"clean": samples[start:end], "opus24": opus_round_trip(samples)[start:end]}

    heard = per_corpus(clips, "speech", [OPUS_BITRATE, str(SAMPLE_RATE), VAD_MODEL], one, cache_dir)
    return [Heard(clean, opus) for clean, opus in zip(heard["clean"], heard["opus24"])]
