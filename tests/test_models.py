"""The model files themselves: the shipped ones are the bytes sera shipped, described by the records and
cards their training wrote, and a model whose metadata no trained model could have, or a broken
onnxruntime, is refused in one line, never run or a traceback."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sera.config import DEFAULT_MODELS_DIR
from sera.errors import ModelError
from sera.features import FeatureParams, WhisperParams, from_json
from sera.model import BaselineInfo, ModelInfo
from sera.shipped import SUMS, sha256, sums
from tests.conftest import ROOT, SAMPLE_NOTE, sera

LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def test_every_shipped_model_is_listed_with_its_sha256() -> None:
    listed = sums(DEFAULT_MODELS_DIR)
    assert sorted(listed) == sorted(path.name for path in DEFAULT_MODELS_DIR.glob("*.onnx"))
    assert all(sha256(DEFAULT_MODELS_DIR / name) == digest for name, digest in listed.items())


def test_a_changed_model_file_is_refused_in_one_line(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(DEFAULT_MODELS_DIR, models, ignore=shutil.ignore_patterns("*.json", "*.md", "__*"))
    model = models / "sera-emotion-whisper.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: the graph would still load
    model.write_bytes(bytes(data))
    config = tmp_path / "sera.yaml"
    config.write_text(f"models_dir: {models}\n")
    done = sera("--config", str(config), "analyze", str(SAMPLE_NOTE))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{model} is not the file sera shipped (its sha256 differs)" in done.stderr
    (models / SUMS).unlink()  # an operator's own folder, without a list: not checked
    assert sera("--config", str(config), "analyze", str(SAMPLE_NOTE)).returncode == 0


@pytest.mark.parametrize(
    ("info", "outputs", "why"),
    [
        (ModelInfo(WhisperParams(), LABELS, temperature=0.0), 8, "temperature must be a finite number above 0"),
        (ModelInfo(WhisperParams(), LABELS, temperature=math.nan), 8, "temperature must be a finite number above 0"),
        (ModelInfo(WhisperParams(), LABELS, baseline=BaselineInfo("s", 10, math.inf)), 8, "temperature must be a finite number above 0"),
        (ModelInfo(WhisperParams(), ("happy", "happy", "sad")), 3, "labels must be distinct names"),
        (ModelInfo(WhisperParams(), ("happy", "")), 2, "labels must be distinct names"),
        (ModelInfo(WhisperParams(), LABELS), 7, "it names 8 labels for 7 outputs"),
        (ModelInfo(WhisperParams(), LABELS, baseline=BaselineInfo("s", -1)), 8, "min_clips must be a whole number"),
        (ModelInfo(WhisperParams(), LABELS, temperature_slope=-0.5), 8, "temperature slope must be a finite number, 0 or more"),
        (ModelInfo(WhisperParams(), LABELS, temperature_slope=math.inf), 8, "temperature slope must be a finite number, 0 or more"),
    ],
)
def test_metadata_no_trained_model_has_is_refused(info: ModelInfo, outputs: int, why: str) -> None:
    with pytest.raises(ModelError, match=why):
        info.check(outputs, Path("model.onnx"))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"sample_rate": 8000}, "trained at 8000 Hz; sera decodes at 16000 Hz"),
        ({"n_mels": 0}, "n_mels must be between 1 and 512"),
        ({"hop_length": 10**9}, "hop_length must be between"),
        ({"top_db": float("nan")}, "top_db must be a finite number"),
        ({"loudness_dbfs": "loud"}, "loudness_dbfs must be a finite number"),
    ],
)
def test_feature_parameters_out_of_range_are_refused(change: dict, why: str) -> None:
    import json

    values = {**json.loads(FeatureParams().to_json()), **change}
    with pytest.raises(ValueError, match=why):
        from_json(json.dumps(values))


@pytest.mark.parametrize("command", ["analyze", "doctor"])
def test_without_onnxruntime_a_command_says_so_in_one_line(command: str) -> None:
    """A broken install (onnxruntime missing or unimportable): one line, not an ImportError's traceback."""
    script = ("import sys; sys.modules['onnxruntime'] = None\n"  # what a missing module looks like to `import`
              "from sera.adapters.cli import main\nsys.exit(main(sys.argv[1:]))")  # fmt: skip
    args = [command, str(SAMPLE_NOTE)] if command == "analyze" else [command]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in done.stderr + done.stdout
    assert "onnxruntime cannot be imported" in done.stderr + done.stdout
    assert done.returncode != 0


def test_one_loader_builds_each_model_as_its_own_metadata_says(tmp_path: Path) -> None:
    from sera.model import MODEL_FILE, WHISPER_MODEL_FILE, load_emotion_model

    assert load_emotion_model(DEFAULT_MODELS_DIR / WHISPER_MODEL_FILE).kind == "whisper_log_mel"
    assert load_emotion_model(DEFAULT_MODELS_DIR / MODEL_FILE).kind == "log_mel"
    config = tmp_path / "sera.yaml"  # the CNN's file where the Whisper analyzer's model goes: one line, not a crash later
    config.write_text(f"plugins:\n  emotion_whisper:\n    model: {DEFAULT_MODELS_DIR / MODEL_FILE}\n")
    done = sera("--config", str(config), "doctor")
    assert "✘ emotion_whisper analyzer: failed:" in done.stdout and "holds a log_mel model; this analyzer serves whisper_log_mel models" in done.stdout


def test_languages_kept_for_testing_are_read_and_never_trained_on(tmp_path: Path) -> None:
    """EMOVO, CASIA and TurEV measure a language never heard: `sera train --corpus` refuses them (before
    it needs torch or reads a file); they are read for scoring, each clip with its label and speaker."""
    from sera.corpora import CORPORA, load_corpora
    from sera.errors import SeraError

    test_only = sorted(name for name, corpus in CORPORA.items() if corpus.test_only)
    assert test_only == ["casia", "emovo", "turev"]
    with pytest.raises(SeraError, match="emovo is test only"):
        load_corpora("ravdess,emovo", tmp_path, training=True)
    data = ROOT.parent / "shared" / "data"
    if not (data / "emovo").is_dir():
        pytest.skip("../shared/data is not here: the test-only corpora's loaders are not checked")
    clips = load_corpora(",".join(test_only), data)
    assert {c.corpus for c in clips} == set(test_only) and all(c.path.is_file() for c in clips[:50])
    assert len({c.speaker for c in clips if c.corpus == "casia"}) == 4


def test_training_one_model_keeps_the_others_cross_validation(tmp_path: Path) -> None:
    """The README's two reproduce commands in either order leave one CROSSVAL.md with both models (each
    run rebuilds it from every record in the folder), the default model first."""
    from sera.training import card
    from sera.training.cli import LEARNERS
    from sera.training.results import Results

    whisper, cnn = Results.read(ROOT / "models" / "whisper-results.json"), Results.read(ROOT / "models" / "cnn-results.json")
    for first, second in ((whisper, cnn), (cnn, whisper)):
        out = tmp_path / first.model
        out.mkdir()
        for results in (first, second):
            card.write(out, replace(results, shipped=None), tuple(LEARNERS))
        table = (out / "CROSSVAL.md").read_text()
        assert "| ravdess | emotion_whisper |" in table and "| ravdess | emotion_cnn |" in table
        assert table.index("## emotion_whisper (the default)") < table.index("## emotion_cnn: the seed paper's CNN")
        assert f"Reproduce: `{cnn.command}`" in table and f"Reproduce: `{whisper.command}`" in table


@pytest.mark.parametrize("model", ["whisper", "cnn"])
def test_the_shipped_card_is_what_the_card_writer_makes_of_the_shipped_record(model: str, tmp_path: Path) -> None:
    """Nobody edits a card or CROSSVAL.md by hand: rebuilt from the shipped records they are the same
    text; the file is the one the record describes, and its metadata carries the record's calibration."""
    from sera.model import load_emotion_model
    from sera.training import card
    from sera.training.cli import LEARNERS
    from sera.training.results import Results, every_results

    models = ROOT / "models"
    results, records = Results.read(models / f"{model}-results.json"), every_results(models)
    assert {r.model for r in records} == set(LEARNERS)
    assert card.card(results, records, tuple(LEARNERS)) == (models / card.card_file(model)).read_text()
    assert card.crossval_file(records, tuple(LEARNERS)) == (models / card.CV_TABLE_FILE).read_text()
    loaded = load_emotion_model(models / results.shipped.model_file)
    assert results.shipped.temperature == results.crossval["pooled"]["temperature"]
    assert loaded.info.temperature == pytest.approx(results.shipped.temperature)
    assert loaded.info.temperature_slope == pytest.approx(results.crossval["pooled"].get("temperature_slope", 0.0))
    assert (models / results.shipped.model_file).stat().st_size / 1e6 == pytest.approx(results.shipped.size_mb)


def test_the_temperature_grows_with_unfamiliarity_as_the_metadata_says() -> None:
    info = ModelInfo.from_metadata(ModelInfo(WhisperParams(), LABELS, 1.5, temperature_slope=0.5).metadata(), Path("m.onnx"))
    assert (info.temperature, info.temperature_slope) == (1.5, 0.5)
    assert info.temperature_for(1.0) == 1.5 and info.temperature_for(4.0) == pytest.approx(3.0)
    assert info.temperature_for(1e9) == pytest.approx(15.0) and info.temperature_for(0.0) == pytest.approx(1.5 * 0.1**0.5)  # clipped
    older = ModelInfo(WhisperParams(), LABELS, 1.5).metadata()
    del older["sera.temperature_slope"]  # a file from before unfamiliarity: one temperature
    assert ModelInfo.from_metadata(older, Path("m.onnx")).temperature_for(50.0) == 1.5


def test_the_shipped_whisper_model_hears_a_tone_as_far_more_unfamiliar_than_speech(speech_wav: Path) -> None:
    """The graph's own unfamiliarity, as served: speech (even espeak-ng's) nearer what the model was
    trained on than a steady tone, and the temperature, so the doubt, growing with it."""
    import numpy as np

    from sera.audio import decode
    from sera.model import WHISPER_MODEL_FILE, WhisperEmotionModel, whisper_input

    model = WhisperEmotionModel(DEFAULT_MODELS_DIR / WHISPER_MODEL_FILE)
    params, info = model.info.features, model.info
    speech = model.run(whisper_input(decode(speech_wav), params)).unfamiliar
    tone = model.run(whisper_input((0.3 * np.sin(2 * np.pi * 440 * np.arange(48_000) / 16_000)).astype(np.float32), params)).unfamiliar
    assert info.temperature_slope > 0 and 3 * speech < tone
    assert info.temperature_for(tone) > 1.5 * info.temperature_for(speech)
