"""``sera train --model whisper``: a frozen Whisper encoder and two linear heads, the default analyzer's
model. What it brings to the protocol:

1. The encoder (Whisper base unless ``--encoder`` says tiny.en), converted from the installed packages
   (``encoder``), checked against CTranslate2's own encoder.
2. Every clip's embedding with the runtime's own feature function (``sera.model.whisper_input``), as it
   is and as an Opus voice note, trimmed to its speech; cached per corpus (``training.data``).
3. Fits of the plain head and the personal-baseline head (``head``): seconds each, one after another.
4. Its own measurement: the personal baseline under mixed, one-emotion and enrolment references of
   several sizes, which sets how many clips a baseline needs before it is used (``baseline``).
5. Both heads, the encoder and the unfamiliarity (how far an utterance lies from the training clips,
   which the protocol's calibration scales the temperature by) as one ONNX graph, checked against
   torch; the encoder's weight matrices then quantized to int8, the file checked against the float32
   one on Opus voice notes of every corpus and timed on one core.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from argparse import Namespace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sera.baseline import Baseline
from sera.corpora import Clip
from sera.errors import SeraError
from sera.features import WhisperParams
from sera.model import WHISPER_MODEL_FILE, BaselineInfo, ModelInfo, WhisperEmotionModel, softmax, whisper_input
from sera.training.data import OPUS_BITRATE, hear, per_corpus
from sera.training.learners.whisper import baseline
from sera.training.learners.whisper.encoder import (
    ENCODERS, Embedder, Heads, WhisperEmotionNet, export, load_weights, parity_with_ctranslate2, quantize,
)
from sera.training.learners.whisper.head import (
    FAMILIAR_DIMS, L2_GRID, REFERENCE_CLIPS, REFERENCE_DRAWS, Data, fit_baseline, fit_plain, plain_logits, unfamiliarity,
)
from sera.training.protocol import CONDITIONS, OPSET, Split, label_mask
from sera.training.results import Shipped

log = logging.getLogger(__name__)

INT8_CHECK_CLIPS = 150  # per corpus
DEFAULT_ENCODER = "base"  # multilingual: level with tiny.en on RAVDESS, ahead on nEMO and on the corpora left out (docs/models.md)
DEFAULT_TAPS = {
    "tiny.en": (1, 2, 3),  # after blocks 1, 2 and 3 of 4, cross-validated against 2, 1+2, 3 and the last
    "base": (2, 3),  # after blocks 2 and 3 of 6: level with 2-4, 1-4 and 2-6 by CV and corpora left out, and one block cheaper
}


def int8_check(full: WhisperEmotionModel, int8: WhisperEmotionModel, clips: list[tuple[Clip, np.ndarray]]) -> dict[str, Any]:
    """The int8 file against the float32 one on Opus voice notes of every corpus: how often the two name
    the same emotion (over the labels the clip's corpus has), each one's accuracy, the largest change in a
    served probability. (The cross-validated figures are the float32 encoder's.)"""
    rows: dict[str, list[tuple[int, int, int, float]]] = {}
    for clip, speech in clips:
        mel, allowed = whisper_input(speech, full.info.features), label_mask([clip], full.info.labels)[0]
        a, b = full.run(mel), int8.run(mel)
        pa = np.where(allowed, softmax(a.logits, full.info.temperature_for(a.unfamiliar)), 0)
        pb = np.where(allowed, softmax(b.logits, int8.info.temperature_for(b.unfamiliar)), 0)
        rows.setdefault(clip.corpus, []).append((int(pa.argmax()), int(pb.argmax()), full.info.labels.index(clip.label), float(np.abs(pa - pb).max())))
    out = {}
    for corpus, values in rows.items():
        a, b, truth, change = (np.array(v) for v in zip(*values))
        out[corpus] = {"clips": len(a), "same_answer": float(np.mean(a == b)), "accuracy_float32": float(np.mean(a == truth)),
                       "accuracy_int8": float(np.mean(b == truth)), "largest_change": float(change.max())}  # fmt: skip
    return out


class Whisper:
    """The protocol's learner for the Whisper-encoder model (``sera.training.protocol.Learner``)."""

    name = "whisper"
    conditions = CONDITIONS

    def __init__(self, models_dir: Path, cache_dir: Path | None, seed: int, encoder: str = DEFAULT_ENCODER, taps: tuple[int, ...] | None = None) -> None:
        self.models_dir, self.cache_dir, self.seed = models_dir, cache_dir, seed
        self.encoder, self.taps = encoder, taps or DEFAULT_TAPS[encoder]
        self.params = WhisperParams()

    def prepare(self, clips: list[Clip], labels: tuple[str, ...]) -> None:
        self.clips, self.labels = clips, labels
        self.weights = load_weights(self.encoder)
        if max(self.taps) > self.weights.depth:
            raise SeraError(f"--taps {','.join(map(str, self.taps))}: Whisper {self.encoder} has {self.weights.depth} blocks")
        embedder = Embedder(self.weights, self.taps).eval()
        torch.set_num_threads(1)

        heard = dict(zip((c.path for c in clips), hear(clips, self.models_dir, self.cache_dir)))
        rng = np.random.default_rng(self.seed)  # what the int8 file is checked on against the float32 one
        self.check_clips = []
        for corpus in dict.fromkeys(c.corpus for c in clips):
            members = [c for c in clips if c.corpus == corpus]
            self.check_clips += [(members[i], heard[members[i].path].opus24) for i in rng.permutation(len(members))[:INT8_CHECK_CLIPS]]

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

    def unfamiliarity(self, model: Heads, idx: np.ndarray) -> np.ndarray:
        return unfamiliarity(model, self.data["clean"].x[idx])

    def measure(self, folds: list[tuple[Heads, Split]], cv: dict[str, Any]) -> dict[str, Any]:
        return baseline.measure(self.data["clean"], self.clips, self.labels, folds, cv)

    def describe(self) -> dict[str, Any]:
        return {"encoder": f"Whisper {self.encoder}", "blocks": self.weights.depth, "taps": list(self.taps),
                "dims": int(self.data["clean"].x.shape[1]), "l2_grid": list(L2_GRID), "reference_clips": REFERENCE_CLIPS,
                "reference_draws": REFERENCE_DRAWS, "familiar_dims": FAMILIAR_DIMS, "min_clips_grid": list(baseline.MIN_CLIPS_GRID)}  # fmt: skip

    def export(self, heads: Heads, trained: np.ndarray, cv: dict[str, Any], out: Path) -> Shipped:
        """Both heads with the encoder as one graph; temperatures and the baseline size from ``cv``."""
        clean, params, weights = self.data["clean"], self.params, self.weights
        temperature, slope, min_clips = cv["pooled"]["temperature"], cv["pooled"]["temperature_slope"], cv["baseline"]["min_clips"]
        space = hashlib.sha256(f"{weights.sha256}|{self.taps}|{params.to_json()}".encode()).hexdigest()[:16]
        trained_on: dict[str, set[str]] = {}
        for i in trained:
            trained_on.setdefault(self.clips[i].corpus, set()).add(self.clips[i].speaker)
        encoder = weights.provenance(self.taps) | {"precision": "int8 weight matrices in the encoder (from the file's float16), float32 elsewhere"}
        info = ModelInfo(params, self.labels, temperature, encoder, BaselineInfo(space, min_clips, cv["baseline"]["temperature"]),
                         {corpus: sorted(speakers) for corpus, speakers in trained_on.items()}, slope)  # fmt: skip
        path = out / WHISPER_MODEL_FILE
        net = WhisperEmotionNet(Embedder(weights, self.taps).eval(), heads)
        probe = np.random.default_rng(self.seed).normal(0, 0.1, 3 * params.sample_rate).astype(np.float32)
        mel = whisper_input(probe, params)
        reference = Baseline(space, len(self.labels), clean.x[trained[:REFERENCE_CLIPS]].mean(axis=0), np.ones(len(self.labels), dtype=np.int64))
        with torch.no_grad():
            ours = net(*(torch.from_numpy(np.asarray(a, np.float32)[None] if a.ndim == 1 else a) for a in (mel, reference.mean, reference.heard_share)))
        with tempfile.TemporaryDirectory() as folder:
            fp32 = Path(folder) / path.name
            export(net, info.metadata(), fp32, OPSET, params.n_mels, clean.x.shape[1], len(self.labels))
            full = WhisperEmotionModel(fp32)
            heard = full.run(mel, reference)
            theirs = (heard.embedding, heard.logits, heard.against, heard.unfamiliar)
            drift = max(float(np.abs(a.numpy()[0] - b).max()) for a, b in zip(ours, theirs))
            log.info("exported %s: torch vs onnxruntime %.2e; quantizing the encoder", path, drift)
            quantize(fp32, path)
            model = WhisperEmotionModel(path)
            details = {"int8": int8_check(full, model, self.check_clips), "float32_mb": fp32.stat().st_size / 1e6,
                       "float32_ms_per_3s": full.latency_ms()}  # fmt: skip
        return Shipped(path.name, path.stat().st_size / 1e6, model.latency_ms(), drift, temperature,
                       {"parity_ctranslate2": parity_with_ctranslate2(weights, mel), "l2": heads.l2, "min_clips": min_clips,
                        "encoder": info.encoder} | details)  # fmt: skip


def make(args: Namespace, models_dir: Path, cache_dir: Path | None) -> Whisper:
    """The learner ``sera train --model whisper`` asked for: ``--encoder`` (base unless told) and
    ``--taps``, the blocks whose states are pooled (each encoder's cross-validated ones unless told); the
    CNN's options are refused by name."""
    given = [flag for flag, value in (("--recipe", args.recipe), ("--epochs", args.epochs), ("--smoke", args.smoke)) if value]
    if given:
        raise SeraError(f"{', '.join(given)}: the CNN's (--model cnn); the Whisper model's heads have no epochs or recipe steps")
    encoder = args.encoder or DEFAULT_ENCODER
    if encoder not in ENCODERS:
        raise SeraError(f"--encoder {encoder}: sera reads {', '.join(ENCODERS)}")
    try:
        taps = tuple(sorted({int(t) for t in args.taps.split(",")})) if args.taps else DEFAULT_TAPS[encoder]
    except ValueError:
        raise SeraError(f"--taps {args.taps}: block numbers, comma-separated (1 is the first block)") from None
    if min(taps) < 1:
        raise SeraError(f"--taps {args.taps}: block numbers count from 1")
    return Whisper(models_dir, cache_dir, args.seed, encoder, taps)
