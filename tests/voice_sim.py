"""Simulated voice-channel traffic: speakers' turns as the 20 ms, 48 kHz stereo frames Discord delivers.

A voice client only sends packets while its user is talking (plus a few frames either side), so each
turn becomes a run of frames stamped with their time in the session, and silence between turns is
simply no frames. Frames of all speakers are interleaved in time order, as a receive thread sees them.
Used by the live-session tests and by ``bench/live_bench.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from sera.audio import SAMPLE_RATE, decode
from sera.live import FRAME_SAMPLES, SOURCE_RATE

FRAME_SECONDS = FRAME_SAMPLES / SOURCE_RATE
TRANSMIT_MARGIN_SECONDS = 0.2  # clients keep sending briefly around speech


class Clock:
    """A session clock the test moves. Frames go in far faster than real time, and a session judges
    silence by its clock, so the test sets it to each frame's time as a live call's wall clock would be."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float  # seconds into the session
    samples: np.ndarray  # 16 kHz mono float32 speech

    @property
    def end(self) -> float:
        return self.start + self.samples.size / SAMPLE_RATE


def speech_extent(samples: np.ndarray, floor: float = 0.01) -> float:
    """Seconds from the first to the last sample louder than ``floor``: the true talk time of a turn."""
    loud = np.flatnonzero(np.abs(samples) > floor)
    return (loud[-1] - loud[0]) / SAMPLE_RATE if loud.size else 0.0


def load_speech(path: str) -> np.ndarray:
    return decode(path)


def stereo_frames(samples: np.ndarray) -> list[bytes]:
    """16 kHz mono float -> 20 ms frames of 48 kHz interleaved stereo int16 (the last one zero-padded)."""
    up = soxr.resample(samples, SAMPLE_RATE, SOURCE_RATE).astype(np.float32)
    up = np.concatenate([up, np.zeros(-up.size % FRAME_SAMPLES, dtype=np.float32)])
    pcm = (np.clip(up, -1, 1) * 32767).astype("<i2")
    stereo = np.repeat(pcm, 2)
    size = FRAME_SAMPLES * 2
    return [stereo[i : i + size].tobytes() for i in range(0, stereo.size, size)]


def frames(turns: list[Turn]) -> list[tuple[float, str, bytes]]:
    """(time in session, speaker, PCM frame) for every frame of every turn, in time order."""
    out = []
    margin = np.zeros(round(TRANSMIT_MARGIN_SECONDS * SAMPLE_RATE), dtype=np.float32)
    for turn in turns:
        padded = np.concatenate([margin, turn.samples, margin])
        first = max(turn.start - TRANSMIT_MARGIN_SECONDS, 0.0)
        for k, frame in enumerate(stereo_frames(padded)):
            out.append((first + k * FRAME_SECONDS, turn.speaker, frame))
    out.sort(key=lambda f: (f[0], f[1]))
    return out
