"""The prosody analyzer: pitch, loudness and speaking rate, measured with numpy (no model needed).

Pitch by YIN (de Cheveigné and Kawahara, 2002) rather than pYIN: pYIN's Viterbi pass costs more than the
whole emotion model, and a median and a range over voiced frames need no frame-exact voicing. Speaking
rate by syllable nuclei (De Jong and Wempe, 2009): peaks of the loudness envelope that rise a few
decibels above the dips on either side. Both in numpy: librosa's versions cost a second and a half of
imports (numba) on every command that analyses, for the same few lines of arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sera.plugin import SERA_PLUGIN_API, Analyzer, NoOptions, Result, Segment

FMIN_HZ = 65.0  # below a low male voice
FMAX_HZ = 500.0  # above a high child's voice
FRAME = 1024
HOP = 256
VOICED_FLOOR_DB = 30.0  # frames this far below the segment's loudest are not voiced speech
YIN_THRESHOLD = 0.1  # the first dip of the normalised difference below this is the period
VOICED_APERIODICITY = 0.25  # frames less periodic than this (fricatives, breath) have no pitch
ENVELOPE_HOP_SECONDS = 0.01
ENVELOPE_SMOOTH_SECONDS = 0.05
NUCLEUS_DIP_DB = 3.0  # a syllable's loudness peak rises this far above the dips on either side
NUCLEUS_FLOOR_DB = 25.0  # and lies within this of the segment's loudest
NUCLEUS_GAP_SECONDS = 0.1  # syllables are at least this far apart


@dataclass(frozen=True)
class ProsodyResult(Result):
    pitch_hz: float | None = None  # median F0 over voiced frames
    pitch_range_semitones: float | None = None  # 10th to 90th percentile of F0
    loudness_dbfs: float = float("-inf")
    voiced_ratio: float = 0.0
    syllables_per_second: float = 0.0  # onset rate: a proxy for speaking rate

    kind: ClassVar[str] = "prosody"

    def headline(self) -> str:
        pitch = f"pitch {self.pitch_hz:.0f} Hz ±{self.pitch_range_semitones:.1f} st" if self.pitch_hz else "no pitch"
        return f"{pitch}, {self.loudness_dbfs:.0f} dBFS, {self.syllables_per_second:.1f} syll/s"

    def to_dict(self) -> dict:
        """Rounded, with an unmeasurable value as null rather than a non-JSON infinity."""
        values = super().to_dict()
        return {k: _clean(v) for k, v in values.items()}


def _clean(value: object) -> object:
    if not isinstance(value, float):
        return value
    return round(value, 3) if math.isfinite(value) else None


class Prosody(Analyzer[NoOptions]):
    api = SERA_PLUGIN_API

    def analyze(self, segments: Sequence[Segment]) -> list[ProsodyResult]:
        return [measure(segment) for segment in segments]

    def summarize(self, results: Sequence[Result]) -> ProsodyResult | None:
        parts = [r for r in results if isinstance(r, ProsodyResult)]
        if not parts:
            return None
        weights = np.array([r.end - r.start for r in parts])

        def mean(values: list[float | None]) -> float | None:
            pairs = [(v, w) for v, w in zip(values, weights) if v is not None]
            return float(np.average([v for v, _ in pairs], weights=[w for _, w in pairs])) if pairs else None

        power = mean([10 ** (r.loudness_dbfs / 10) for r in parts])
        return ProsodyResult(
            start=parts[0].start,
            end=parts[-1].end,
            pitch_hz=mean([r.pitch_hz for r in parts]),
            pitch_range_semitones=mean([r.pitch_range_semitones for r in parts]),
            loudness_dbfs=10 * np.log10(power) if power else float("-inf"),
            voiced_ratio=mean([r.voiced_ratio for r in parts]) or 0.0,
            syllables_per_second=mean([r.syllables_per_second for r in parts]) or 0.0,
        )


def measure(segment: Segment) -> ProsodyResult:
    y, sr = segment.samples.astype(np.float64), segment.sample_rate
    power = float(np.mean(np.square(y)))
    loud = 10 * np.log10(power) if power > 0 else float("-inf")
    pitch = range_st = None
    voiced_ratio = 0.0
    if y.size >= FRAME:
        frames = framed(y, FRAME, HOP)
        f0, aperiodicity = yin(frames, sr)
        rms_db = 20 * np.log10(np.maximum(np.sqrt(np.mean(frames**2, axis=1)), 1e-10))
        voiced = (rms_db > rms_db.max() - VOICED_FLOOR_DB) & (aperiodicity < VOICED_APERIODICITY)
        voiced &= (f0 > FMIN_HZ * 1.05) & (f0 < FMAX_HZ * 0.95)
        voiced_ratio = float(voiced.mean())
        if voiced.sum() >= 3:
            f0v = f0[voiced]
            pitch = float(np.median(f0v))
            low, high = np.percentile(f0v, [10, 90])
            range_st = float(12 * np.log2(high / low))
    return ProsodyResult(
        start=segment.start,
        end=segment.end,
        pitch_hz=pitch,
        pitch_range_semitones=range_st,
        loudness_dbfs=loud,
        voiced_ratio=voiced_ratio,
        syllables_per_second=syllable_nuclei(y, sr) / segment.duration if segment.duration > 0 else 0.0,
    )


def framed(y: np.ndarray, length: int, hop: int) -> np.ndarray:
    """``(frames, length)`` windows centred on every ``hop``-th sample (zero-padded at the ends)."""
    padded = np.pad(y, length // 2)
    return np.lib.stride_tricks.sliding_window_view(padded, length)[::hop]


def yin(frames: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(F0 in Hz, aperiodicity) of each frame: the cumulative-mean-normalised difference function, its
    first dip under ``YIN_THRESHOLD`` (else its minimum) between the periods of ``FMAX_HZ`` and
    ``FMIN_HZ``, refined by a parabola through the dip and its neighbours; the function's value there is
    how aperiodic the frame is (near 0 for a vowel, near 1 for a hiss)."""
    width = frames.shape[1] // 2
    shortest, longest = int(sr // FMAX_HZ), min(int(np.ceil(sr / FMIN_HZ)), width - 1)
    size = 1 << int(np.ceil(np.log2(frames.shape[1] + width)))
    spectrum = np.fft.rfft(frames, size)
    template = np.fft.rfft(frames[:, :width][:, ::-1], size)
    cross = np.fft.irfft(spectrum * template, size)[:, width - 1 : width + longest]  # sum of x[j] x[j + tau], j < width
    energy = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)
    windowed = energy[:, width : width + longest + 1] - energy[:, : longest + 1]  # sum of x[j + tau]^2, j < width
    difference = np.maximum(windowed[:, :1] + windowed - 2 * cross, 0.0)
    taus = np.arange(longest + 1)
    running = np.cumsum(difference[:, 1:], axis=1)
    normalised = np.ones_like(difference)
    normalised[:, 1:] = difference[:, 1:] * taus[1:] / np.maximum(running, 1e-12)
    search = normalised[:, shortest : longest + 1]
    dips = (search[:, 1:-1] < search[:, :-2]) & (search[:, 1:-1] <= search[:, 2:]) & (search[:, 1:-1] < YIN_THRESHOLD)
    first = np.where(dips.any(axis=1), dips.argmax(axis=1) + 1, search.argmin(axis=1))
    rows = np.arange(len(search))
    at = np.clip(first, 1, search.shape[1] - 2)
    left, middle, right = search[rows, at - 1], search[rows, at], search[rows, at + 1]
    curve = left - 2 * middle + right
    shift = np.where(np.abs(curve) > 1e-12, 0.5 * (left - right) / np.where(curve == 0, 1, curve), 0.0)
    period = shortest + at + np.clip(shift, -1, 1)
    return sr / period, middle


def syllable_nuclei(y: np.ndarray, sr: int) -> int:
    """How many syllables: peaks of the smoothed loudness envelope that stand ``NUCLEUS_DIP_DB`` above the
    lowest points between them and their neighbours, within ``NUCLEUS_FLOOR_DB`` of the loudest, and at
    least ``NUCLEUS_GAP_SECONDS`` apart."""
    hop = max(1, round(ENVELOPE_HOP_SECONDS * sr))
    if y.size < 4 * hop:
        return 0
    energy = np.mean(framed(y, 2 * hop, hop) ** 2, axis=1)
    kernel = np.ones(max(1, round(ENVELOPE_SMOOTH_SECONDS / ENVELOPE_HOP_SECONDS)))
    db = 10 * np.log10(np.maximum(np.convolve(energy, kernel / kernel.size, mode="same"), 1e-12))
    peaks = [i for i in range(1, db.size - 1) if db[i] >= db[i - 1] and db[i] > db[i + 1] and db[i] > db.max() - NUCLEUS_FLOOR_DB]
    count, last, gap = 0, None, NUCLEUS_GAP_SECONDS / ENVELOPE_HOP_SECONDS
    for i, peak in enumerate(peaks):
        before = db[(peaks[i - 1] if i else 0) : peak + 1].min()
        after = db[peak : (peaks[i + 1] if i + 1 < len(peaks) else db.size)].min()
        if db[peak] - max(before, after) >= NUCLEUS_DIP_DB and (last is None or peak - last >= gap):
            count, last = count + 1, peak
    return count
