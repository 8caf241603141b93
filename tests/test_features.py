"""The one feature function and the model metadata that carries its parameters."""

from __future__ import annotations

import numpy as np
import pytest

from sera.features import FeatureParams, log_mel, windows

PARAMS = FeatureParams()


def test_short_utterance_is_centred_in_one_window() -> None:
    utterance = np.ones(PARAMS.sample_rate, dtype=np.float32)
    (window,) = windows(utterance, PARAMS)
    assert window.shape == (PARAMS.window_samples,)
    nonzero = np.flatnonzero(window)
    pad = (PARAMS.window_samples - utterance.size) // 2
    assert nonzero[0] == pad and nonzero[-1] == pad + utterance.size - 1


def test_offset_places_the_utterance() -> None:
    (window,) = windows(np.ones(100, dtype=np.float32), PARAMS, offset=7)
    assert np.flatnonzero(window)[0] == 7


def test_long_utterance_is_covered_to_its_end() -> None:
    seconds = 7.3
    utterance = np.arange(int(seconds * PARAMS.sample_rate), dtype=np.float32)
    batch = windows(utterance, PARAMS)
    hop = int(PARAMS.window_hop_seconds * PARAMS.sample_rate)
    assert batch.shape[1] == PARAMS.window_samples
    assert batch[0, 0] == 0 and batch[1, 0] == hop
    assert batch[-1, -1] == utterance[-1]  # the last window ends with the utterance


def test_log_mel_shape_and_per_window_floor() -> None:
    rng = np.random.default_rng(0)
    loud = rng.standard_normal(PARAMS.window_samples).astype(np.float32)
    quiet = 1e-4 * rng.standard_normal(PARAMS.window_samples).astype(np.float32)
    mel = log_mel(np.stack([loud, quiet]), PARAMS)
    assert mel.shape == (2, PARAMS.n_mels, PARAMS.window_frames)
    for window in mel:
        assert window.max() - window.min() <= PARAMS.top_db + 1e-3
    # each window's floor follows its own peak: a loud neighbour does not change a quiet window
    alone = log_mel(quiet[None], PARAMS)[0]
    np.testing.assert_allclose(mel[1], alone, atol=1e-4)


def test_params_round_trip_through_metadata_json() -> None:
    changed = FeatureParams(n_mels=40, hop_length=320)
    assert FeatureParams.from_json(changed.to_json()) == changed
    with pytest.raises(ValueError, match="lacks"):
        FeatureParams.from_json('{"n_mels": 40}')
