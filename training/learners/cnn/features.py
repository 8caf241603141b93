"""The CNN's inputs: log-Mel windows of every clip, computed from what it heard (``training.data.hear``)
with the runtime's own ``sera.model.model_input``, at several placements of the speech in its window,
as it is and after an Opus round trip. Training draws one of those variants per clip and epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sera.corpora import Clip
from sera.features import FeatureParams
from sera.model import model_input
from sera.training.data import OPUS_BITRATE, Heard, hear, per_corpus

OFFSETS_PER_CONDITION = 3  # centred, then random placements of the speech in its window


def clip_features(heard: Heard, params: FeatureParams, seed: int) -> np.ndarray:
    """``(2 * OFFSETS_PER_CONDITION, n_mels, frames)``: clean variants first, then Opus ones."""
    rng = np.random.default_rng(seed)
    variants = []
    for utterance in (heard.clean, heard.opus24):
        free = max(params.window_samples - utterance.size, 0)
        for k in range(OFFSETS_PER_CONDITION):
            offset = -1 if k == 0 else int(rng.integers(0, free + 1))
            batch = model_input(utterance, params, offset)
            variants.append(batch[len(batch) // 2] if k == 0 else batch[rng.integers(len(batch))])
    return np.stack(variants).astype(np.float16)


def build_features(clips: list[Clip], params: FeatureParams, models_dir: Path, cache_dir: Path | None, seed: int) -> np.ndarray:
    """``(clips, variants, n_mels, frames)`` float16, cached per corpus."""
    heard = dict(zip((c.path for c in clips), hear(clips, models_dir, cache_dir)))
    key = [params.to_json(), OPUS_BITRATE, str(OFFSETS_PER_CONDITION), str(seed)]
    features = per_corpus(clips, "features", key, lambda i, clip: {"features": clip_features(heard[clip.path], params, seed + i)[None]},
                          cache_dir)["features"]  # fmt: skip
    return np.concatenate(features)
