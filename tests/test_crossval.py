"""Pooling corpora and choosing by cross-validation: the new loaders, the label mask, speaker-grouped
folds (no speaker in two folds) and ``sera train --cv`` end to end on tiny corpora the test makes; the
real corpora's loaders when ../shared/data is there."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training tests need the [train] extra: pip install -e '.[train]'")

from sera.corpora import EMOTIONS, LABELS, Clip, load_corpora
from sera.errors import SeraError
from tests.conftest import SHARED_DATA, say
from tests.test_training import CODES, train
from sera.training.learners.cnn.fit import masked_log_softmax
from sera.training.protocol import label_mask, speaker_folds


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding tiny ``ravdess`` (4 actors) and ``nemo`` (2 speakers) corpora of espeak-ng speech."""
    root = tmp_path_factory.mktemp("data")
    for actor in (1, 2, 3, 4):
        folder = root / "ravdess" / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for i, label in enumerate(EMOTIONS):
            say("Dogs are sitting by the door.", folder / f"03-01-{CODES[label]}-01-01-01-{actor:02d}.wav", speed=120 + 15 * i)
    rows = ["path,label,speaker,gender,age,text"]
    for speaker, gender in (("AA0", "female"), ("BB0", "male")):
        (root / "nemo" / speaker).mkdir(parents=True)
        for i, label in enumerate(LABELS["nemo"]):
            say("Lubię czytać przed snem.", root / "nemo" / speaker / f"{label}.wav", voice="pl", speed=120 + 20 * i)
            rows.append(f"{speaker}/{label}.wav,{label},{speaker},{gender},20,Lubię czytać przed snem.")
    (root / "nemo" / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_corpora_are_pooled_with_their_own_labels(tiny_data: Path) -> None:
    clips = load_corpora("ravdess,nemo", tiny_data)
    assert Counter(c.corpus for c in clips) == {"ravdess": 32, "nemo": 12}
    assert {c.speaker for c in clips if c.corpus == "nemo"} == {"AA0", "BB0"}
    assert all(c.path.is_file() for c in clips)
    assert load_corpora("ravdess", tiny_data / "ravdess") == [c for c in clips if c.corpus == "ravdess"]
    (tiny_data / "broken").mkdir(exist_ok=True)
    (tiny_data / "broken" / "metadata.csv").write_text("path,label,speaker\nx.wav,furious,Z\n")
    with pytest.raises(SeraError, match="unknown label 'furious'"):
        from sera.corpora import from_metadata

        from_metadata("broken", LABELS["nemo"])(tiny_data / "broken")


def test_the_loss_compares_a_clip_only_with_its_corpus_labels() -> None:
    clips = [Clip(Path("a"), "sad", "EB0", "female", "nemo"), Clip(Path("b"), "calm", "01", "male", "ravdess")]
    mask = label_mask(clips, EMOTIONS)
    assert [label for label, ok in zip(EMOTIONS, mask[0]) if not ok] == ["calm", "disgust"]
    assert mask[1].all()
    logits = torch.zeros(2, len(EMOTIONS), requires_grad=True)
    target = torch.nn.functional.one_hot(torch.tensor([EMOTIONS.index("sad"), EMOTIONS.index("calm")]), len(EMOTIONS)).float()
    loss = torch.sum(-target * masked_log_softmax(logits, torch.from_numpy(mask)), dim=1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    calm, disgust = EMOTIONS.index("calm"), EMOTIONS.index("disgust")
    assert logits.grad[0, calm] == 0 and logits.grad[0, disgust] == 0  # nEMO never says "calm does not exist"
    assert logits.grad[1, calm] < 0  # RAVDESS does teach calm


def test_folds_hold_each_speaker_once_balanced_by_corpus_and_gender() -> None:
    clips = [Clip(Path(f"{s}-{i}"), "sad", s, "male" if n % 2 else "female", corpus)
             for corpus, count in (("ravdess", 21), ("nemo", 7)) for n in range(count)
             for s in [f"{corpus}{n}"] for i in range(3)]  # fmt: skip
    fold = speaker_folds(clips, 3, seed=0)
    by_speaker: dict[str, set[int]] = {}
    for clip, f in zip(clips, fold):
        by_speaker.setdefault(clip.speaker, set()).add(int(f))
    assert all(len(folds) == 1 for folds in by_speaker.values())  # no speaker in two folds
    per_fold = Counter((int(f), c.corpus, c.gender) for c, f in zip(clips, fold) if c.path.name.endswith("-0"))
    for corpus, gender in {(c.corpus, c.gender) for c in clips}:
        counts = [per_fold[(f, corpus, gender)] for f in range(3)]
        assert max(counts) - min(counts) <= 1, (corpus, gender, counts)
    assert (speaker_folds(clips, 3, seed=0) == fold).all() and not (speaker_folds(clips, 3, seed=1) == fold).all()
    with pytest.raises(SeraError, match="needs from 2 to 28 folds here"):
        speaker_folds(clips, 29, seed=0)  # said before any clip is decoded: sera train checks its folds first


@pytest.mark.skipif(not (SHARED_DATA / "nemo").is_dir(), reason="../shared/data is not here: the real corpora's loaders are not checked")
def test_the_real_corpora_load_with_speakers_from_their_metadata() -> None:
    clips = load_corpora("ravdess,nemo,emospeech", SHARED_DATA)
    counts = Counter(c.corpus for c in clips)
    assert counts == {"ravdess": 1259, "nemo": 3775, "emospeech": 2019}
    assert len({c.speaker for c in clips if c.corpus == "nemo"}) == 7
    assert len({c.speaker for c in clips if c.corpus == "emospeech"}) == 106
    assert {c.label for c in clips if c.corpus == "emospeech"} == set(LABELS["emospeech"])
    assert not {c.speaker for c in clips if c.corpus == "nemo"} & {c.speaker for c in clips if c.corpus != "nemo"}
    fold = speaker_folds(clips, 3, seed=0)
    for speaker in {c.speaker for c in clips}:
        assert len({int(f) for c, f in zip(clips, fold) if c.speaker == speaker}) == 1


@pytest.mark.slow
def test_sera_train_cross_validates_pooled_corpora(tiny_data: Path, tmp_path: Path) -> None:
    done = train("--corpus", "ravdess,nemo", "--data", str(tiny_data), "--out", str(tmp_path), "--smoke",
               "--no-cache", "--cv", "2", "--cv-only")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "cnn-results.json").read_text())["crossval"]
    assert result["k"] == 2 and len(result["folds"]) == 2
    held_out = [set(f["speakers"]) for f in result["folds"]]
    assert not held_out[0] & held_out[1] and held_out[0] | held_out[1] == {"01", "02", "03", "04", "AA0", "BB0"}
    assert set(result["summary"]) == {"ravdess", "nemo"}
    assert set(result["pooled"]["nemo"]["recall"]) == set(LABELS["nemo"])  # no calm, no disgust for nEMO
    assert result["pooled"]["ravdess"]["n"] == 32 and result["pooled"]["nemo"]["n"] == 12
    table = (tmp_path / "CROSSVAL.md").read_text()
    assert "| ravdess | 32 |" in table and "| nemo | 12 |" in table and "--cv 2 --cv-only" in table
    assert "| ravdess | 32 |" in done.stdout
    assert not (tmp_path / "sera-emotion.onnx").exists()  # --cv-only: no model
    # the cross-corpus cells: one model trained on the other corpus only, over the labels both have
    cross = result["cross_corpus"]
    assert cross["nemo"]["trained_on"] == ["ravdess"] and cross["nemo"]["n"] == 12
    assert cross["ravdess"]["trained_on"] == ["nemo"] and cross["ravdess"]["n"] == 24  # no calm or disgust to learn from nEMO
    assert "| nemo | ravdess | one model trained on the others | 12 |" in table
    # selective accuracy where no model was: the answers given (not "unsure") and how many are right
    assert 0 <= cross["nemo"]["answered"]["mean"] <= 1 and 0 <= cross["nemo"]["answered_accuracy"]["mean"] <= 1
    assert 0 <= result["pooled"]["ravdess"]["answered"] <= 1 and "right when answered" in table  # one epoch may answer nothing
    assert 0.25 <= result["pooled"]["temperature_unheard"] <= 8  # the calibration a corpus never heard would want


@pytest.mark.slow
def test_the_shipped_model_trains_beside_the_folds_and_takes_their_temperature(tiny_data: Path, tmp_path: Path) -> None:
    """One run: the folds and the model on every speaker share the pool; a test-only corpus is scored by
    every fold's model and never trained on; the shipped temperature is the out-of-fold one."""
    from sera.model import EmotionModel

    done = train("--corpus", "ravdess", "--test-corpus", "nemo", "--data", str(tiny_data), "--out", str(tmp_path),
               "--smoke", "--no-cache", "--cv", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    training = json.loads((tmp_path / "cnn-results.json").read_text())
    result = training["crossval"]
    assert set(result["summary"]) == {"ravdess"}  # nEMO is in no fold
    assert {s for f in result["folds"] for s in f["speakers"]} == {"01", "02", "03", "04"}
    assert result["cross_corpus"]["nemo"]["how"] == "each fold's model" and result["cross_corpus"]["nemo"]["n"] == 12
    assert training["speakers"] == ["01", "02", "03", "04"] and training["clips"] == 32
    assert EmotionModel(tmp_path / "sera-emotion.onnx").info.temperature == pytest.approx(result["pooled"]["temperature"])
    card = (tmp_path / "MODEL_CARD_CNN.md").read_text()
    assert "## Cross-validation (voices never heard)" in card and "| nemo | ravdess | each fold's model | 12 |" in card
    assert f"- Calibration: temperature {result['pooled']['temperature']:.2f}, fitted on the pooled out-of-fold logits" in card and "never trained on: nemo" in card
    assert "- nEMO: Dataset of Emotional Speech in Polish" in card  # a corpus only scored on is attributed too
    assert "--test-corpus nemo" in (tmp_path / "CROSSVAL.md").read_text()


def test_batches_give_every_corpus_an_equal_share() -> None:
    from sera.training.learners.cnn.fit import balanced_batches

    corpus_of = np.array([0] * 30 + [1] * 90)
    train = np.arange(120)
    batches = balanced_batches(train, corpus_of, 16, np.random.default_rng(0))
    drawn = np.concatenate([next(batches) for _ in range(15)])  # 240 clips: 120 of each corpus
    assert all(Counter(corpus_of[b].tolist()) == {0: 8, 1: 8} for b in [next(batches) for _ in range(5)])
    assert (np.bincount(drawn[corpus_of[drawn] == 0], minlength=30)[:30] == 4).all()  # four whole passes over the small corpus
    assert sorted(drawn[corpus_of[drawn] == 1][:90]) == list(range(30, 120))  # one pass over the large one
    odd = balanced_batches(train, corpus_of, 15, np.random.default_rng(0))
    assert sorted(len(b[corpus_of[b] == 0]) for b in (next(odd), next(odd))) == [7, 8]  # the remainder goes in turn


def test_a_personal_baseline_never_uses_the_clip_itself() -> None:
    from sera.training.learners.cnn.fit import speaker_references

    clips = [Clip(Path(str(i)), "neutral" if i % 4 == 0 else "sad", f"s{i // 4}", "female", "ravdess") for i in range(8)]
    features = np.zeros((8, 6, 4, 10), dtype=np.float16)
    for i in range(8):
        features[i] = i  # each clip's band means are its own index
    refs = speaker_references(clips, features, draws=3, per_draw=5, seed=0)
    for i in range(8):
        others = [j for j in range(8) if j // 4 == i // 4 and j != i]
        assert np.allclose(refs[i, :, :, :], np.mean(others))  # all three of the speaker's other clips
    enrolled = speaker_references(clips, features, 1, 5, 0, lambda c: c.label == "neutral")
    assert np.allclose(enrolled[1, 0, 0], 0) and np.allclose(enrolled[5, 0, 0], 4)  # their neutral clip
    assert np.allclose(enrolled[0, 0, 0], 0)  # no other neutral clip: the clip's own window


@pytest.mark.slow
def test_sera_train_cross_validates_the_personal_baseline(tiny_data: Path, tmp_path: Path) -> None:
    done = train("--corpus", "ravdess", "--data", str(tiny_data), "--out", str(tmp_path), "--smoke",
               "--no-cache", "--cv", "2", "--cv-only", "--recipe", "personal")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "cnn-results.json").read_text())["crossval"]
    assert set(result["summary"]["ravdess"]) == {"clean", "opus24", "clean, neutral enrolment", "clean, no baseline"}
    assert "- ravdess, clean, no baseline: accuracy" in (tmp_path / "CROSSVAL.md").read_text()


def test_selective_accuracy_counts_only_the_answers_given() -> None:
    from sera.training.protocol import selective

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.35, 0.3]])  # the last one is "unsure" (below 0.4)
    assert selective(probs, np.array([0, 0, 0, 1])) == {"answered": 0.75, "answered_accuracy": 2 / 3}
    assert selective(np.full((2, 3), 1 / 3), np.array([0, 1])) == {"answered": 0.0, "answered_accuracy": 0.0}


def test_calibration_flattens_what_lies_far_from_the_training_clips() -> None:
    """Clips far from the training data (unfamiliarity 4) are right half as often but as confident as the
    near ones: one temperature cannot fit both, a temperature growing with unfamiliarity can."""
    from sera.training.protocol import fit_calibration, fit_temperature, nll, unfamiliar_scale

    rng = np.random.default_rng(0)
    n = 4000
    far = np.arange(n) >= n // 2
    truth = rng.integers(0, 4, n)
    logits = rng.normal(0, 0.5, (n, 4))
    right = np.where(far, rng.random(n) < 0.45, rng.random(n) < 0.9)
    logits[np.arange(n), np.where(right, truth, (truth + 1) % 4)] += 3.0
    unfamiliar = np.where(far, 4.0, 1.0) * rng.uniform(0.9, 1.1, n)
    temperature, slope = fit_calibration(logits, truth, unfamiliar)
    assert slope > 0.3
    one = fit_temperature(logits, truth)
    assert nll(logits / unfamiliar_scale(unfamiliar, slope), truth, temperature) < nll(logits, truth, one) - 0.05
    for part in (far, ~far):  # each part's confidence now near its accuracy; with one temperature the far part is overconfident
        probs = softmax_rows(logits[part] / unfamiliar_scale(unfamiliar[part], slope) / temperature)
        assert abs(probs.max(axis=1).mean() - right[part].mean()) < 0.05
    assert softmax_rows(logits[far] / one).max(axis=1).mean() - right[far].mean() > 0.15
    same = np.ones(n)  # no unfamiliarity to go by: the slope does nothing, the temperature is the one temperature
    assert fit_calibration(logits, truth, same)[0] == pytest.approx(one)


def softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

