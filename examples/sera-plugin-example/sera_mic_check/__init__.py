"""An example third-party sera plugin package.

``MicCheck`` tells a speaker whether their microphone clips or is too quiet; ``OneLine`` renders a
report as a single line; ``TalkBalance`` says, at the end of a voice-channel session, whether one
person did most of the talking. All use only ``sera.plugin`` (no Discord code); enable them in the
sera config:

    plugins:
      mic_check: {enabled: true, clip_warning_percent: 1.0}
      oneline: {enabled: true}
      talk_balance: {enabled: true, dominant_share: 0.6}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sera.plugin import Analyzer, NoOptions, Report, Reporter, Result, Segment, SessionInfo, SessionSummary

PLUGIN_API = (1, 0)  # the sera.plugin version these were written for (sera.plugin.SERA_PLUGIN_API then)
CLIP_LEVEL = 0.99  # samples at or above this magnitude count as clipped
QUIET_PEAK_DBFS = -30.0


@dataclass(frozen=True)
class MicResult(Result):
    peak_dbfs: float = 0.0
    clipped_percent: float = 0.0
    verdict: str = "ok"

    kind: ClassVar[str] = "mic_check"

    def headline(self) -> str:
        return f"mic {self.verdict} (peak {self.peak_dbfs:.0f} dBFS)"


@dataclass(frozen=True)
class Options:
    clip_warning_percent: float = 1.0


class MicCheck(Analyzer[Options]):
    Options = Options
    api = PLUGIN_API

    def analyze(self, segments: Sequence[Segment]) -> list[MicResult]:
        return [self._check(s.start, s.end, s.samples) for s in segments]

    def summarize(self, results: Sequence[Result]) -> MicResult | None:
        mine = [r for r in results if isinstance(r, MicResult)]
        if not mine:
            return None
        worst = max(mine, key=lambda r: (r.clipped_percent, -r.peak_dbfs))
        return MicResult(mine[0].start, mine[-1].end, worst.peak_dbfs, worst.clipped_percent, worst.verdict)

    def _check(self, start: float, end: float, samples: np.ndarray) -> MicResult:
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        peak_dbfs = 20 * np.log10(peak) if peak > 0 else -120.0
        clipped = 100.0 * float(np.mean(np.abs(samples) >= CLIP_LEVEL)) if samples.size else 0.0
        if clipped >= self.options.clip_warning_percent:
            verdict = "clipping"
        elif peak_dbfs < QUIET_PEAK_DBFS:
            verdict = "too quiet"
        else:
            verdict = "ok"
        return MicResult(start, end, round(peak_dbfs, 2), round(clipped, 3), verdict)


class OneLine(Reporter[NoOptions]):
    api = PLUGIN_API

    def render(self, report: Report) -> str:
        emotion = report.emotion()
        mood = emotion.headline() if emotion else "no speech detected"
        return f"{report.source}: {mood}"


@dataclass(frozen=True)
class BalanceOptions:
    dominant_share: float = 0.6  # one speaker above this share of the talk time "dominates"


class TalkBalance(Reporter[BalanceOptions]):
    """A study-group helper built only on the session hooks: who talked how much."""

    Options = BalanceOptions
    api = PLUGIN_API

    def session_started(self, session: SessionInfo) -> None:
        self.log.info("session %d started: timing who talks", session.id)

    def render(self, report: Report) -> None:
        return None  # nothing to say about a single voice note

    def render_session(self, summary: SessionSummary) -> str | None:
        if not summary.speakers:
            return None
        top = summary.speakers[0]  # speakers come sorted by talk time
        if len(summary.speakers) > 1 and top.share > self.options.dominant_share:
            return f"{top.name} did {top.share:.0%} of the talking: maybe let the others in."
        return "Talk time was balanced: " + ", ".join(f"{s.name} {s.share:.0%}" for s in summary.speakers)
