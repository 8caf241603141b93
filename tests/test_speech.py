"""The speech gate: Silero VAD finds speech, and refuses silence, tones and noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sera.audio import SAMPLE_RATE, decode
from sera.config import DEFAULT_MODELS_DIR
from sera.speech import SpeechDetector, split_long
from tests.conftest import noise, tone


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector(DEFAULT_MODELS_DIR / "silero_vad.onnx")


def test_finds_speech_where_it_is(detector: SpeechDetector, speech_wav: Path) -> None:
    speech = decode(speech_wav)
    gap = np.zeros(SAMPLE_RATE * 2, dtype=np.float32)
    samples = np.concatenate([gap, speech, gap])
    spans = detector.segments(samples)
    assert spans, "espeak-ng speech was not heard"
    first, last = spans[0][0] / SAMPLE_RATE, spans[-1][1] / SAMPLE_RATE
    assert 1.6 < first < 2.4
    end_of_speech = (gap.size + speech.size) / SAMPLE_RATE
    assert end_of_speech - 0.6 < last < end_of_speech + 0.4


@pytest.mark.parametrize(
    "signal",
    [
        np.zeros(SAMPLE_RATE * 3, dtype=np.float32),
        tone(3.0, freq=440.0),
        tone(3.0, freq=150.0, level=0.8),
        noise(3.0, level=0.2),
    ],
    ids=["silence", "tone-440", "loud-tone-150", "white-noise"],
)
def test_no_speech_in_non_speech(detector: SpeechDetector, signal: np.ndarray) -> None:
    assert detector.segments(signal) == []


def test_split_long_makes_equal_parts() -> None:
    assert split_long([(0, 100), (200, 240)], 40) == [(0, 33), (33, 67), (67, 100), (200, 240)]


def test_a_stream_fed_in_20_ms_pieces_finds_the_same_speech_as_the_whole_signal(detector: SpeechDetector, speech_wav: Path) -> None:
    """Live speakers arrive 20 ms at a time; the spans must not depend on how the audio was cut."""
    speech = decode(speech_wav)
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    samples = np.concatenate([gap, speech, gap, speech[: SAMPLE_RATE // 2], gap])
    stream = detector.stream()
    found = []
    for i in range(0, samples.size, 320):
        found += stream.push(samples[i : i + 320])
    found += stream.flush()
    assert len(found) >= 2
    assert split_long(found, round(detector.options.max_segment_seconds * SAMPLE_RATE)) == detector.segments(samples)


def test_a_stream_reports_each_span_soon_after_it_ends(detector: SpeechDetector, speech_wav: Path) -> None:
    speech = decode(speech_wav)
    stream = detector.stream()
    closed = stream.push(speech)  # spans before a pause in the sentence may close already
    closed += stream.push(np.zeros(round(0.5 * SAMPLE_RATE), dtype=np.float32))
    assert closed and closed[-1][1] <= speech.size + round(0.15 * SAMPLE_RATE)
    assert stream.flush() == []  # half a second of silence was enough to report everything


def test_a_stream_closes_a_span_at_the_length_limit(detector: SpeechDetector, speech_wav: Path) -> None:
    speech = decode(speech_wav)
    stream = detector.stream(max_seconds=1.0)
    spans = stream.push(np.concatenate([speech, speech])) + stream.flush()
    assert len(spans) >= 4
    assert all((b - a) / SAMPLE_RATE <= 1.0 + 0.25 for a, b in spans)
