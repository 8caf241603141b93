"""The personal baseline: its maths, its storage on both engines, the analyzer that serves it, and the
roads a baseline takes (``sera analyze --baseline``, ``sera evaluate --baseline K``, live sessions)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sera.baseline import Baseline, Observation
from sera.baseline_store import BaselineStore
from sera.config import Config, LiveOptions
from sera.evaluate import Item, personal_baselines
from sera.model import BaselineInfo
from sera.pipeline import Pipeline
from sera.plugin import EmotionResult, PluginOutput, Report, Segment
from sera.sessions import SessionStore
from tests.conftest import BASELINE_FROM, SAMPLE_NOTE, SHARED_DATA, say, sera
from tests.postgres import postgres_server, postgres_url, target  # noqa: F401  (fixtures)


def observation(values: list[float], heard: int = 0, space: str = "space") -> Observation:
    return Observation(space, np.array(values, dtype=np.float32), heard, 3)


def test_a_baseline_grows_clip_by_clip_to_the_mean_of_all_and_counts_what_was_heard() -> None:
    rng = np.random.default_rng(0)
    seen = [observation(list(rng.normal(size=4)), heard=int(rng.integers(3))) for _ in range(12)]
    one_by_one = Baseline.empty(seen[0])
    for o in seen:
        one_by_one = one_by_one.add([o])
    at_once = Baseline.of(seen)
    np.testing.assert_allclose(one_by_one.mean, np.mean([o.embedding for o in seen], axis=0), rtol=1e-6)
    np.testing.assert_allclose(at_once.mean, one_by_one.mean, rtol=1e-9)
    assert at_once.count == 12 and list(at_once.heard) == list(np.bincount([o.heard for o in seen], minlength=3))
    np.testing.assert_allclose(at_once.heard_share.sum(), 1.0)
    restored = Baseline.from_bytes("space", at_once.to_bytes())
    assert restored.count == 12 and np.allclose(restored.mean, at_once.mean, atol=1e-6) and list(restored.heard) == list(at_once.heard)
    with pytest.raises(ValueError, match="another embedding space"):
        at_once.add([observation([0, 0, 0, 0], space="another encoder")])


def test_baselines_are_stored_learnt_forgotten_and_expire_on_both_engines(target: str | Path) -> None:
    store = BaselineStore(target)
    assert store.get("7", "space") is None and not store.learning("7")
    store.add("7", [observation([1, 1, 1, 1], 0), observation([3, 3, 3, 3], 1)])
    store.add("7", [observation([5, 5, 5, 5], 1)])
    store.add("8", [observation([0, 0, 0, 0])])
    stored = store.get("7", "space")
    assert stored.count == 3 and np.allclose(stored.mean, 3.0) and list(stored.heard) == [1, 2, 0]
    assert store.get("7", "another encoder") is None  # a baseline belongs to the embedding space it was made in
    store.set_learning("7", True)
    store.set_learning("7", True)  # twice: one row
    assert store.learning("7") and not store.learning("8")
    store.close()
    reopened = BaselineStore(target)  # a restart keeps it
    assert reopened.get("7", "space").count == 3
    assert reopened.db.forget_user("7") == {"baselines": 1}  # /forget: the baseline and the choice to learn
    assert reopened.get("7", "space") is None and not reopened.learning("7") and reopened.get("8", "space").count == 1
    assert reopened.delete_older_than(0) == 0 and reopened.delete_older_than(2e9) == 1
    assert reopened.clear("8") == 0
    reopened.close()


class Recorder:
    """Stands in for a pipeline in ``personal_baselines``: each clip's observation is a one-hot vector
    naming the clip, so a baseline's mean says exactly which clips it was made of."""

    def __init__(self, items: list[Item]) -> None:
        self.index = {item.path.name: i for i, item in enumerate(items)}
        self.n = len(items)

    def analyze(self, source: Path, name: str, baseline: Baseline | None = None) -> Report:
        i = self.index[name]
        seen = Observation("space", np.eye(self.n, dtype=np.float32)[i], 0, 2)
        result = EmotionResult(0.0, 1.0, "calm", 1.0, {"calm": 1.0, "sad": 0.0}, observation=seen)
        return Report(name, 1.0, [(0.0, 1.0)], {"emotion_whisper": PluginOutput([result], result)})


def test_evaluate_draws_each_baseline_from_k_other_clips_of_the_speaker_never_the_clip_itself() -> None:
    items = [Item(Path(f"/clips/{speaker}-{n}.ogg"), "calm", speaker) for speaker in ("a", "b") for n in range(6)]
    analyzer = type("Analyzer", (), {"name": "emotion_whisper", "baseline_info": BaselineInfo("space", BASELINE_FROM), "labels": ("calm", "sad")})()
    baselines = personal_baselines(Recorder(items), analyzer, items, 4, None, seed=0)
    for i, item in enumerate(items):
        members = np.flatnonzero(baselines[i].mean > 0)
        assert baselines[i].count == 4 and len(members) == 4
        assert i not in members and all(items[j].speaker == item.speaker for j in members)
    again = personal_baselines(Recorder(items), analyzer, items, 4, None, seed=0)
    assert all(np.array_equal(again[i].mean, baselines[i].mean) for i in baselines)  # a fixed seed draws the same clips
    few = personal_baselines(Recorder(items), analyzer, items, 10, None, seed=0)
    assert {b.count for b in few.values()} == {5}  # all the others there are


def test_evaluate_baseline_needs_a_speaker_column_and_a_model_that_uses_baselines(tmp_path: Path) -> None:
    manifest = tmp_path / "clips.csv"
    manifest.write_text(f"path,label\n{SAMPLE_NOTE},calm\n")
    config = tmp_path / "sera.yaml"
    config.write_text(f"plugins:\n  emotion_whisper:\n    baseline_from: {BASELINE_FROM}\n")
    done = sera("-c", str(config), "evaluate", "--manifest", str(manifest), "--baseline", "5")
    assert done.returncode == 2 and "the manifest needs a speaker column" in done.stderr
    shipped = sera("evaluate", "--manifest", str(manifest), "--baseline", "5")
    assert shipped.returncode == 2 and "uses no personal baseline" in shipped.stderr and "baseline_from" in shipped.stderr


def test_evaluate_leaves_classes_absent_from_the_data_without_a_recall(tmp_path: Path) -> None:
    manifest = tmp_path / "clips.csv"
    manifest.write_text(f"path,label\n{SAMPLE_NOTE},calm\n")
    done = sera("evaluate", "--manifest", str(manifest))
    assert done.returncode == 0 and "0.0% (n=0)" not in done.stdout
    assert "angry" in done.stdout and "-  (none in the data)" in done.stdout
    assert 'answered (the rest "unsure", under 40%): ' in done.stdout


def test_evaluate_reports_selective_accuracy(tmp_path: Path) -> None:
    """How often the analyzer answers at all (not "unsure") and how often those answers are right: what
    a member is told matters more than what is merely computed."""
    manifest = tmp_path / "clips.csv"
    manifest.write_text(f"path,label\n{SAMPLE_NOTE},calm\n{SAMPLE_NOTE},neutral\n")
    done = sera("evaluate", "--manifest", str(manifest), "--json")
    selective = json.loads(done.stdout)["selective"]
    assert selective["unsure_below"] == 0.4 and selective["answered"] in (0.0, 1.0)  # both clips are the same note
    assert selective["accuracy_of_answered"] == (0.5 if selective["answered"] else 0.0)


@pytest.mark.skipif(not (SHARED_DATA / "ravdess").is_dir(), reason="../shared/data/ravdess is not here: the training-speaker warning is not checked")
def test_evaluate_warns_once_on_speakers_the_model_was_trained_on() -> None:
    done = sera("evaluate", "--corpus", "ravdess", "--data", str(SHARED_DATA / "ravdess"), "--speakers", "01")
    assert done.returncode == 0 and (done.stdout + done.stderr).count("trained on speakers") == 1


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("speech")
    lines = ["I went to the market this morning.", "The weather is quite mild today.", "We will meet again next week.",
             "Please put the books on the shelf.", "My brother plays the piano well."]  # fmt: skip
    return [say(line, folder / f"{i}.wav") for i, line in enumerate(lines)]


def test_the_analyzer_serves_a_baseline_once_it_rests_on_enough_clips(pipeline: Pipeline, speech: list[Path]) -> None:
    """Below the model's minimum the answer is the plain one; from it on, the answer is judged against the
    baseline and says how many clips it rests on; every result carries its observation, none prints it."""
    info = pipeline.baseline_info
    assert info is not None and info.min_clips >= 1
    seen = [o for path in speech for o in pipeline.analyze(path).observations()]
    assert seen and all(o.space == info.space for o in seen)
    plain = pipeline.analyze(SAMPLE_NOTE)
    short = Baseline.of(seen[: info.min_clips - 1]) if info.min_clips > 1 else None
    enough = Baseline.of((seen * info.min_clips)[: max(info.min_clips, len(seen))])
    if short is not None:
        assert pipeline.analyze(SAMPLE_NOTE, baseline=short).emotion().probabilities == plain.emotion().probabilities
    judged = pipeline.analyze(SAMPLE_NOTE, baseline=enough)
    assert judged.emotion().baseline_clips == enough.count and plain.emotion().baseline_clips == 0
    assert judged.emotion().probabilities != plain.emotion().probabilities
    assert abs(sum(judged.emotion().probabilities.values()) - 1) < 1e-5
    alien = replace(enough, space="another encoder")  # a baseline of another model is never applied
    assert pipeline.analyze(SAMPLE_NOTE, baseline=alien).emotion().baseline_clips == 0
    printed = json.dumps(judged.to_dict())
    assert "observation" not in printed and '"baseline_clips": ' in printed


def test_the_shipped_model_serves_no_baseline_unless_the_operator_sets_a_size(pipeline: Pipeline, speech: list[Path]) -> None:
    """The shipped model's cross-validation found no baseline size that never hurts (min_clips 0): its
    baselines are kept and learned, never applied; ``baseline_from`` applies them from that many clips."""

    shipped = Pipeline(Config())
    try:
        assert shipped.baseline_info.min_clips == 0 and pipeline.baseline_info.min_clips == BASELINE_FROM
        assert shipped.baseline_info.space == pipeline.baseline_info.space
        baseline = Baseline.of([o for path in speech for o in shipped.analyze(path).observations()] * BASELINE_FROM)
        assert shipped.analyze(SAMPLE_NOTE, baseline=baseline).emotion().baseline_clips == 0
        assert pipeline.analyze(SAMPLE_NOTE, baseline=baseline).emotion().baseline_clips == baseline.count
    finally:
        shipped.close()


def test_sera_analyze_judges_files_against_a_baseline_of_other_files(speech: list[Path], tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text(f"plugins:\n  emotion_whisper:\n    baseline_from: {BASELINE_FROM}\n")
    done = sera("-c", str(config), "analyze", str(SAMPLE_NOTE), "--json", "--baseline", *map(str, speech * 3))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["analyzers"]["emotion_whisper"]["overall"]["baseline_clips"] >= len(speech) * 3
    assert "a baseline of" in done.stderr
    shipped = sera("analyze", str(SAMPLE_NOTE), "--json", "--baseline", *map(str, speech * 3))  # the shipped model's own choice: none
    assert shipped.returncode == 0 and json.loads(shipped.stdout)["analyzers"]["emotion_whisper"]["overall"]["baseline_clips"] == 0
    assert "the model in use uses no baseline (plugins.emotion_whisper.baseline_from sets a size)" in shipped.stderr
    refused = sera("analyze", str(SAMPLE_NOTE), "--baseline", str(SAMPLE_NOTE.parent / "nothing.ogg"))
    assert refused.returncode == 2 and "--baseline" in refused.stderr and "Traceback" not in refused.stderr


def learning_session(pipeline: Pipeline, tmp_path: Path) -> tuple:
    """A live session on a fresh database in which alice has turned learning on: (store, baselines,
    session info, its clock, the session)."""
    from sera.live import LiveSession
    from tests.voice_sim import Clock

    store = SessionStore(tmp_path / "sera.db")
    baselines = BaselineStore(store.db)
    baselines.set_learning("alice", True)
    info = store.start("guild", "voice", "alice", "text")
    clock = Clock()
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True), consents=lambda s: True, clock=clock, baselines=baselines)
    return store, baselines, info, clock, live


def test_a_live_speaker_is_judged_against_their_own_utterances_and_kept_only_if_they_learn(
    pipeline: Pipeline, speech: list[Path], tmp_path: Path
) -> None:
    """In a session each speaker's utterances build their baseline for the rest of it (the first ones are
    judged without); a speaker who turned learning on also has it stored, one who did not leaves nothing."""
    from sera.audio import decode
    from tests.voice_sim import Turn, frames

    store, baselines, info, clock, live = learning_session(pipeline, tmp_path)
    needed = pipeline.baseline_info.min_clips
    turns = [Turn(speaker, 4.0 * i + (2.0 if speaker == "bob" else 0.0), decode(speech[i % len(speech)]))
             for i in range(needed + 2) for speaker in ("alice", "bob")]  # fmt: skip
    for at, speaker, pcm in frames(turns):
        clock.now = at
        live.feed(speaker, pcm, at)
        live.process() if round(at / 0.02) % 25 == 0 else None
    live.finish()
    for speaker in ("alice", "bob"):
        judged = [r.outputs["emotion_whisper"]["baseline_clips"] for r in store.utterances(info.id) if r.speaker == speaker]
        assert judged[:needed] == [0] * needed and judged[needed:] and all(n >= needed for n in judged[needed:]), judged
    assert baselines.get("alice", pipeline.baseline_info.space).count == len(judged)
    assert baselines.get("bob", pipeline.baseline_info.space) is None
    store.close()


def test_clearing_a_baseline_or_turning_learning_off_takes_effect_mid_session(pipeline: Pipeline, speech: list[Path], tmp_path: Path) -> None:
    """Alice learns, then halfway through the session clears her baseline and turns learning off (what
    ``/emotion baseline clear`` and ``learn enabled:False`` do): from her next utterance she is judged
    afresh and nothing more of hers is stored."""
    from sera.audio import decode
    from tests.voice_sim import Turn, frames

    store, baselines, info, clock, live = learning_session(pipeline, tmp_path)
    needed = pipeline.baseline_info.min_clips
    before, after = needed + 1, 2
    turns = [Turn("alice", 4.0 * i, decode(speech[i % len(speech)])) for i in range(before + after)]
    changed = False
    for at, speaker, pcm in frames(turns):
        clock.now = at
        if at >= 4.0 * before and not changed:
            live.process(final=True)
            assert baselines.get("alice", pipeline.baseline_info.space).count == before
            baselines.clear("alice")
            baselines.set_learning("alice", False)
            live.baseline_changed("alice")
            changed = True
        live.feed(speaker, pcm, at)
        live.process() if round(at / 0.02) % 25 == 0 else None
    live.finish()
    judged = [r.outputs["emotion_whisper"]["baseline_clips"] for r in store.utterances(info.id)]
    assert len(judged) == before + after and judged[needed] >= needed, judged  # her baseline was in use
    assert judged[before:] == [0] * after, judged  # then judged afresh: the session's copy went with the stored one
    assert baselines.get("alice", pipeline.baseline_info.space) is None  # and nothing more of hers was stored
    store.close()


def test_a_baseline_is_a_moving_window_and_a_recording_adds_a_bounded_number_of_clips(tmp_path: Path) -> None:
    """500 clips of one voice, then 400 of a changed one: the baseline follows the change (a plain mean
    would still be five parts old to four new); a ten-minute recording adds at most 20 clips; the same
    recording twice is refused."""
    from sera.baseline import CLIPS_PER_RECORDING, WINDOW_CLIPS
    from sera.baseline_store import AlreadyAdded

    old = [observation([1.0, 0.0], heard=0) for _ in range(500)]
    new = [observation([0.0, 1.0], heard=1) for _ in range(400)]
    baseline = Baseline.of(old).add(new)
    assert baseline.count == 900
    assert baseline.mean[1] > 0.8 and baseline.heard_share[1] > 0.8  # the old voice has faded
    assert abs(baseline.heard.sum() - WINDOW_CLIPS) < 1e-6
    plain = Baseline.of(old[:100]).add(new[:50])  # within the window: the plain mean, as before
    np.testing.assert_allclose(plain.mean, [100 / 150, 50 / 150])
    restored = Baseline.from_bytes("space", baseline.add(new[:1], source="ab" * 32).to_bytes())
    assert restored.sources == ("ab" * 32,) and restored.count == 901

    store = BaselineStore(tmp_path / "sera.db")
    long = [observation([float(i), 0.0]) for i in range(160)]  # a ten-minute upload's segments
    assert store.add("alice", long, source="cd" * 32).count == CLIPS_PER_RECORDING
    with pytest.raises(AlreadyAdded):
        store.add("alice", long, source="cd" * 32)
    assert store.get("alice", "space").count == CLIPS_PER_RECORDING
    store.close()


def test_segments_carry_no_baseline_unless_given() -> None:
    assert Segment(np.zeros(10, np.float32), 16_000, 0.0, 1.0).baseline is None


def test_the_cnn_is_one_line_of_config_away(speech: list[Path], tmp_path: Path) -> None:
    """The seed paper's model, off by default, answers beside the default one when enabled."""
    config = tmp_path / "sera.yaml"
    config.write_text("plugins:\n  emotion_cnn:\n    enabled: true\n")
    done = sera("-c", str(config), "analyze", "--json", str(speech[0]))
    assert done.returncode == 0, done.stderr
    analyzers = json.loads(done.stdout)["analyzers"]
    assert {"emotion_whisper", "emotion_cnn"} <= analyzers.keys()
    assert list(analyzers)[0] == "emotion_whisper"  # the default one's answer is the headline
    default = json.loads(sera("analyze", "--json", str(speech[0])).stdout)["analyzers"]
    assert "emotion_cnn" not in default and "emotion_whisper" in default


def test_config_default_shows_the_cnn_off() -> None:
    assert Config().plugin_section("emotion_cnn") == {"enabled": False}
