"""The public plugin API: everything a plugin (built-in or third-party) may import.

A plugin is a small class with a clear life cycle, as in Errbot and Red-DiscordBot:
``__init__(options, context)`` is cheap, ``setup()`` loads what is heavy (a model) once, ``teardown()``
releases it. Every call into a plugin runs on a thread of its own with a timeout
(``plugin_timeout_seconds``); one that keeps overrunning is stopped, and the bot goes on without it. An **Analyzer** turns speech segments into typed ``Result`` objects; a **Reporter** turns a
finished ``Report`` into output (text, a JSON-able dict, an embed-ready structure, a chart, a log row).

Voice-channel sessions reach plugins through the same classes: each utterance is a ``Segment`` with
its ``speaker``, analysed like a voice note's; every plugin hears ``session_started`` and
``session_ended`` (with the ``SessionSummary``), and a reporter may render that summary
(``render_session``). A "talk-time balance" or "study timer" plugin needs no Discord code.

Plugins are found through the ``sera.plugins`` entry-point group and configured by name in the YAML
``plugins:`` section; the keys a plugin accepts are the fields of its ``Options`` dataclass, and a
number that must lie in a range is declared with ``bounded`` (``threshold: float = bounded(0.5, min=0,
max=1)``), so a wrong value is refused with the file and key named when the config is read. A plugin
names its options type as the class parameter (``class MyAnalyzer(Analyzer[MyOptions])``), so that
``self.options`` is typed for the author's editor and type checker.

An emotion analyzer may serve a **personal baseline**: a segment can carry its speaker's ``Baseline``
(running statistics of how their voice sounds to the model, never audio), and the analyzer attaches to
each result the ``Observation`` that would add the segment to it. ``EmotionAnalyzer`` holds what every
emotion analyzer shares (the "unsure" threshold, the whole-note summary); the two built-ins (the
Whisper-encoder model and the seed paper's CNN) are written against this module alone, and so is
everything they need (the model loader and the feature functions are re-exported here).

``SERA_PLUGIN_API`` is this API's version. A plugin states the version it was written for as its class
attribute ``api``; sera refuses, with the reason shown in ``sera plugins``, a plugin written for another
major version (names were removed or changed meaning) or for a later minor one (it may call what this
sera does not have yet). 1.1 added baselines (``Segment.baseline``, ``EmotionResult.baseline_clips``
and ``observation``), ``EmotionAnalyzer``, ``requires``/``extra`` and the re-exports. 1.2 added
``load_emotion_model`` (any emotion model file, as the kind its metadata names; ``EmotionAnalyzer.load``
takes that kind's name): the two concrete model classes 1.1 re-exported are no longer part of this API
(no plugin outside sera used them; ``sera.model`` still has them). 1.3 added ``Analyzer.transcribes``
(an analyzer whose results hold the words people said runs only on the speech of those who agreed to
transcripts), ``TranscriptResult``, ``whisper_files`` (Whisper's weights from their packages, for
faster-whisper) and ``ConfigError`` (an option refused in ``setup``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from sera.baseline import Baseline, Observation
from sera.bounds import bounded
from sera.emotions import EMOTIONS, UNSURE, UNSURE_BELOW, color, emoji
from sera.errors import ConfigError, ModelError, SeraError
from sera.model import (
    MODEL_FILE, WHISPER_MODEL_FILE, BaselineInfo, EmotionModelKind, load_emotion_model, model_input, softmax, whisper_input,
)  # fmt: skip
from sera.summary import TRANSCRIPT, SessionInfo, SessionSummary, Utterance, clock
from sera.whisper_weights import whisper_files

__all__ = [
    "EMOTIONS",
    "MODEL_FILE",
    "SERA_PLUGIN_API",
    "UNSURE_BELOW",
    "WHISPER_MODEL_FILE",
    "Analyzer",
    "Baseline",
    "BaselineInfo",
    "ConfigError",
    "EmotionAnalyzer",
    "EmotionResult",
    "ModelError",
    "NoOptions",
    "Observation",
    "Plugin",
    "PluginContext",
    "PluginOutput",
    "Report",
    "Reporter",
    "Result",
    "Segment",
    "SeraError",
    "SessionInfo",
    "SessionSummary",
    "TranscriptResult",
    "Utterance",
    "api_mismatch",
    "bounded",
    "clock",
    "color",
    "emoji",
    "load_emotion_model",
    "model_input",
    "softmax",
    "whisper_files",
    "whisper_input",
]

SERA_PLUGIN_API = (1, 3)  # (major, minor): a new minor adds, a new major breaks

OptionsT = TypeVar("OptionsT")


def api_mismatch(wanted: tuple[int, int] | None) -> str | None:
    """Why a plugin written for plugin API ``wanted`` cannot run on this sera; None when it can (or
    states no version: written before versions were stated)."""
    if wanted is None:
        return None
    if not (isinstance(wanted, tuple) and len(wanted) == 2 and all(isinstance(n, int) for n in wanted)):
        return f"its api attribute must be written as (major, minor), not {wanted!r}"
    if wanted[0] != SERA_PLUGIN_API[0] or wanted[1] > SERA_PLUGIN_API[1]:
        have = ".".join(map(str, SERA_PLUGIN_API))
        return f"written for plugin API {wanted[0]}.{wanted[1]}; this sera has {have}"
    return None


@dataclass(frozen=True)
class Segment:
    """One stretch of speech: mono float32 samples and where they sit in the source."""

    samples: np.ndarray
    sample_rate: int
    start: float  # seconds from the start of the source
    end: float
    speaker: str | None = None  # known in voice channels, None for a voice note
    baseline: Baseline | None = None  # the speaker's personal baseline, where there is one

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Result:
    """What an analyzer says about one segment (or, from ``summarize``, about the whole source).

    Subclass it for richer results; ``to_dict`` must stay JSON-serialisable, since ``--json`` prints it.
    """

    start: float
    end: float

    kind: ClassVar[str] = "result"

    def headline(self) -> str:
        """A few words for a person: what a timeline row shows."""
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        start, end = values.pop("start"), values.pop("end")
        return {"type": self.kind, "start_s": round(start, 3), "end_s": round(end, 3), **values}


@dataclass(frozen=True)
class EmotionResult(Result):
    """Calibrated class probabilities; ``label`` is "unsure" when the top one is below the threshold."""

    label: str = ""
    confidence: float = 0.0
    probabilities: Mapping[str, float] = field(default_factory=dict)
    baseline_clips: int = 0  # the clips of the speaker's baseline the answer was judged against; 0: none used
    # what this segment adds to its speaker's baseline (analyzers that serve baselines); never serialised
    observation: Observation | None = field(default=None, repr=False, compare=False)

    kind: ClassVar[str] = "emotion"
    UNSURE: ClassVar[str] = UNSURE

    @property
    def unsure(self) -> bool:
        return self.label == self.UNSURE

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: item[1], reverse=True)

    def headline(self) -> str:
        if self.unsure:
            top = ", ".join(f"{name} {p:.0%}" for name, p in self.ranked()[:2])
            return f"unsure ({top})"
        return f"{self.label} {self.confidence:.0%}"

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        del values["observation"]
        values["unsure"] = self.unsure
        values["confidence"] = round(self.confidence, 4)
        values["probabilities"] = {k: round(v, 4) for k, v in self.probabilities.items()}
        return values


@dataclass(frozen=True)
class TranscriptResult(Result):
    """What was said in a segment (or, from ``summarize``, in the whole source): the words, the language
    they were heard in, and how sure the recogniser was of them (0-1)."""

    text: str = ""
    language: str = ""
    confidence: float = 0.0

    kind: ClassVar[str] = TRANSCRIPT

    def headline(self) -> str:
        return f"“{self.text}”"

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["confidence"] = round(self.confidence, 4)
        return values


@dataclass(frozen=True)
class NoOptions:
    """For plugins that take no settings."""


@dataclass(frozen=True)
class PluginContext:
    """What the host offers every plugin."""

    models_dir: Path  # where bundled model files live; relative model paths are resolved here
    sample_rate: int  # the rate of every Segment's samples


class Plugin(Generic[OptionsT]):
    """Base of all plugins. ``name`` is the entry-point name, set when the plugin is loaded; ``Options``
    is the dataclass its config section is read into; ``api`` the plugin API version it was written for."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    api: ClassVar[tuple[int, int] | None] = None
    # Modules it needs that an optional extra of its package brings (``requires = ("matplotlib",)``,
    # ``extra = "chart"``): where one is missing the plugin is "not installed", with the command that
    # installs it, rather than failing at every run.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""

    def __init__(self, options: OptionsT, context: PluginContext) -> None:
        self.options = options
        self.context = context
        self.log = logging.getLogger(f"sera.plugin.{self.name or type(self).__name__}")

    def setup(self) -> None:
        """Load heavy resources; called once before first use. Raising here disables the plugin."""

    def teardown(self) -> None:
        """Release what ``setup`` took."""

    def session_started(self, session: SessionInfo) -> None:
        """A live session began (a voice channel is being listened to)."""

    def session_ended(self, session: SessionInfo, summary: SessionSummary) -> None:
        """A live session ended (or was cut short: ``summary.status == "interrupted"``)."""

    def forget_user(self, user_id: str) -> int:
        """A user asked to be forgotten (``/forget``): delete whatever this plugin keeps about them and
        return how many items went. Plugins that keep nothing need not override it."""
        return 0


class Analyzer(Plugin[OptionsT], ABC):
    """Turns speech segments into results: one ``Result`` (or None) per segment, in order.

    One that ``transcribes`` (its results hold the words people said) is given only the segments of
    speakers who agreed to transcripts, a consent of its own beside that of being analysed: the host
    decides whose (``Pipeline.analyze_segments``), and the others' segments get None without it being
    asked."""

    transcribes: ClassVar[bool] = False

    @abstractmethod
    def analyze(self, segments: Sequence[Segment]) -> Sequence[Result | None]:
        """Segments come in a batch so that a model can run them in one call."""

    def summarize(self, results: Sequence[Result]) -> Result | None:
        """One result for the whole source (a voice note), or None where that makes no sense."""
        return None


class EmotionAnalyzer(Analyzer[OptionsT]):
    """What every emotion analyzer shares: calibrated probabilities over ``labels`` become an
    ``EmotionResult`` ("unsure" below the ``unsure_below`` option), and a whole note's answer is the
    duration-weighted mean of its segments'. Subclasses set ``labels`` (in ``setup``) and implement
    ``analyze``; their options need an ``unsure_below`` field. One that serves personal baselines sets
    ``baseline_info`` (its embedding space and the clips a baseline needs) and attaches an observation
    to each result."""

    labels: tuple[str, ...] = ()
    baseline_info: BaselineInfo | None = None
    trained_on: Mapping[str, Sequence[str]] | None = None  # corpus -> the speakers its model was trained on, where known

    def load(self, kind: str) -> EmotionModelKind:
        """The model file its ``model`` option names (relative to the models folder), through
        ``load_emotion_model``; it must hold a model of ``kind`` (the feature kind its metadata names:
        ``"whisper_log_mel"``, ``"log_mel"``), checked against sera's sample rate. Its labels and
        training speakers become the analyzer's."""
        path = Path(self.options.model)
        model = load_emotion_model(path if path.is_absolute() else self.context.models_dir / path)
        if model.kind != kind:
            raise ModelError(f"{path} holds a {model.kind} model; this analyzer serves {kind} models")
        rate = model.info.features.sample_rate
        if rate != self.context.sample_rate:
            raise ModelError(f"{path} expects {rate} Hz audio but sera decodes at {self.context.sample_rate} Hz")
        self.labels, self.trained_on = model.info.labels, model.info.trained_on
        return model

    def result(
        self, start: float, end: float, probs: np.ndarray, baseline_clips: int = 0, observation: Observation | None = None
    ) -> EmotionResult:
        best = int(np.argmax(probs))
        confidence = float(probs[best])
        label = self.labels[best] if confidence >= self.options.unsure_below else EmotionResult.UNSURE
        return EmotionResult(
            start=start,
            end=end,
            label=label,
            confidence=confidence,
            probabilities={name: float(p) for name, p in zip(self.labels, probs)},
            baseline_clips=baseline_clips,
            observation=observation,
        )

    def summarize(self, results: Sequence[Result]) -> EmotionResult | None:
        emotions = [r for r in results if isinstance(r, EmotionResult)]
        if not emotions:
            return None
        weights = np.array([r.end - r.start for r in emotions])
        probs = np.array([[r.probabilities[name] for name in self.labels] for r in emotions])
        return self.result(emotions[0].start, emotions[-1].end, weights @ probs / weights.sum(), max(r.baseline_clips for r in emotions))


@dataclass(frozen=True)
class PluginOutput:
    """One analyzer's results for one source."""

    segments: Sequence[Result | None]
    overall: Result | None


@dataclass(frozen=True)
class Report:
    """Everything known about one analysed source; what reporters render."""

    source: str
    duration: float
    segments: Sequence[tuple[float, float]]  # speech (start, end) in seconds
    outputs: Mapping[str, PluginOutput]  # analyzer name -> its results
    notices: Sequence[str] = ()  # short, user-safe messages about plugins that failed

    @property
    def speech_detected(self) -> bool:
        return bool(self.segments)

    @property
    def speech_seconds(self) -> float:
        return sum(end - start for start, end in self.segments)

    def emotion(self) -> EmotionResult | None:
        """The overall emotion from the first analyzer that gave one, for reporters that headline it."""
        for output in self.outputs.values():
            if isinstance(output.overall, EmotionResult):
                return output.overall
        return None

    def observations(self) -> list[Observation]:
        """What this source adds to its speaker's baseline: the observations of the first analyzer that
        attached any (one per segment it analysed)."""
        for output in self.outputs.values():
            found = [r.observation for r in output.segments if isinstance(r, EmotionResult) and r.observation is not None]
            if found:
                return found
        return []

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "duration_s": round(self.duration, 3),
            "speech_s": round(self.speech_seconds, 3),
            "speech_detected": self.speech_detected,
            "segments": [{"start_s": round(s, 3), "end_s": round(e, 3)} for s, e in self.segments],
            "analyzers": {
                name: {
                    "overall": output.overall.to_dict() if output.overall else None,
                    "segments": [r.to_dict() if r else None for r in output.segments],
                }
                for name, output in self.outputs.items()
            },
            "notices": list(self.notices),
        }


class Reporter(Plugin[OptionsT], ABC):
    """Turns a finished report into output for a person or a machine."""

    @abstractmethod
    def render(self, report: Report) -> Any:
        """Return the output: text (``str``), a Discord embed's JSON (``dict``) or a PNG image (``bytes``).
        Named in ``discord.reply_reporters``, a reporter's output becomes part of a voice note's reply:
        the embed, the text, or an attachment."""

    def render_session(self, summary: SessionSummary) -> Any:
        """The same for a live session's summary; None where the reporter has nothing to say about it."""
        return None
