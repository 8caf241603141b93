"""The prosody analyzer: pitch, loudness and speaking rate, measured with librosa (no model needed).

YIN rather than pYIN: pYIN's Viterbi pass costs more than the whole emotion model, and a median and a
range over voiced frames need no frame-exact voicing.
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

    def setup(self) -> None:
        """Warm librosa's YIN and onset code, which compile on first use."""
        rate = self.context.sample_rate
        measure(Segment(np.zeros(rate, dtype=np.float32), rate, 0.0, 1.0))

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
    import librosa  # imported by setup's first measure, not with the module: `sera plugins` lists without it

    y, sr = segment.samples, segment.sample_rate
    rms = librosa.feature.rms(y=y, frame_length=FRAME, hop_length=HOP)[0]
    power = float(np.mean(np.square(y, dtype=np.float64)))
    loud = 10 * np.log10(power) if power > 0 else float("-inf")
    pitch = range_st = None
    voiced_ratio = 0.0
    if y.size >= FRAME:
        f0 = librosa.yin(y, fmin=FMIN_HZ, fmax=FMAX_HZ, sr=sr, frame_length=FRAME, hop_length=HOP)
        n = min(f0.size, rms.size)
        rms_db = 20 * np.log10(np.maximum(rms[:n], 1e-10))
        voiced = (rms_db > rms_db.max() - VOICED_FLOOR_DB) & (f0[:n] > FMIN_HZ * 1.05) & (f0[:n] < FMAX_HZ * 0.95)
        voiced_ratio = float(voiced.mean())
        if voiced.sum() >= 3:
            f0v = f0[:n][voiced]
            pitch = float(np.median(f0v))
            low, high = np.percentile(f0v, [10, 90])
            range_st = float(12 * np.log2(high / low))
    onsets = librosa.onset.onset_detect(y=y, sr=sr, hop_length=HOP, units="time")
    return ProsodyResult(
        start=segment.start,
        end=segment.end,
        pitch_hz=pitch,
        pitch_range_semitones=range_st,
        loudness_dbfs=loud,
        voiced_ratio=voiced_ratio,
        syllables_per_second=len(onsets) / segment.duration if segment.duration > 0 else 0.0,
    )
