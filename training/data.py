"""Turning a corpus into training tensors with the runtime's own functions.

Each clip is decoded (``sera.audio.decode``), trimmed to its speech by the same speech detector the
pipeline uses, and featurised with the runtime's own ``sera.model.model_input`` at several time offsets, as it is and after an Opus
round trip at voice-note bitrate (Discord voice notes are Opus). Training then draws one of those
variants per clip and epoch. The result is cached on disk, keyed by everything it depends on.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sera.audio import Limits, decode, encode_opus
from sera.corpora import Clip
from sera.features import FeatureParams
from sera.model import model_input
from sera.progress import progress
from sera.speech import SpeechDetector

log = logging.getLogger(__name__)

OPUS_BITRATE = "24k"
OFFSETS_PER_CONDITION = 3  # centred, then random placements of the speech in its window


def opus_round_trip(samples: np.ndarray, bitrate: str = OPUS_BITRATE) -> np.ndarray:
    """What the model hears of ``samples`` sent as an Opus voice note."""
    return decode(encode_opus(samples, bitrate), Limits(max_bytes=1 << 30, max_seconds=3600))[: samples.size]


def speech_span(samples: np.ndarray, detector: SpeechDetector) -> tuple[int, int]:
    """From the first to the last speech sample; the whole clip when the detector hears none."""
    spans = detector.segments(samples)
    return (spans[0][0], spans[-1][1]) if spans else (0, samples.size)


def clip_features(clip: Clip, params: FeatureParams, detector: SpeechDetector, seed: int) -> np.ndarray:
    """``(2 * OFFSETS_PER_CONDITION, n_mels, frames)``: clean variants first, then Opus ones."""
    rng = np.random.default_rng(seed)
    samples = decode(clip.path)
    start, end = speech_span(samples, detector)
    variants = []
    for audio in (samples, opus_round_trip(samples)):
        utterance = audio[start:end]
        free = max(params.window_samples - utterance.size, 0)
        for k in range(OFFSETS_PER_CONDITION):
            offset = -1 if k == 0 else int(rng.integers(0, free + 1))
            batch = model_input(utterance, params, offset)
            variants.append(batch[len(batch) // 2] if k == 0 else batch[rng.integers(len(batch))])
    return np.stack(variants).astype(np.float16)


def build_features(
    clips: list[Clip], params: FeatureParams, vad_model: Path, cache_dir: Path | None, seed: int, workers: int = 2
) -> np.ndarray:
    """Features of every clip, ``(clips, variants, n_mels, frames)`` float16, cached per corpus by content
    key, so pooling a new corpus with ones already featurised computes only the new one."""
    corpora = [c.corpus for c in clips]
    order = list(dict.fromkeys(corpora))
    if corpora != sorted(corpora, key=order.index):
        raise ValueError("clips must come grouped by corpus, as load_corpora gives them")
    detector: list[SpeechDetector] = []  # loaded once, and only when something is not cached
    parts = []
    for corpus in order:
        group = [c for c in clips if c.corpus == corpus]
        key = hashlib.sha256(
            "|".join([params.to_json(), OPUS_BITRATE, str(OFFSETS_PER_CONDITION), str(seed)] + [str(c.path) for c in group]).encode()
        ).hexdigest()[:16]
        cache = cache_dir / f"features-{key}.npy" if cache_dir else None
        if cache and cache.is_file():
            log.info("%s features from cache %s", corpus or "corpus", cache)
            parts.append(np.load(cache))
            continue
        detector = detector or [SpeechDetector(vad_model)]
        log.info("%s: featurising %d clips", corpus or "corpus", len(group))
        with ThreadPoolExecutor(workers) as pool:
            work = pool.map(lambda ic: clip_features(ic[1], params, detector[0], seed + ic[0]), enumerate(group))
            done = list(progress(work, f"{corpus or 'corpus'}: features", total=len(group)))
        parts.append(np.stack(done))
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, parts[-1])
    return np.concatenate(parts)
