"""What a live session was like: talk time, emotions per speaker and for the group, notable moments.

Everything here is computed from the stored utterance rows alone, so a session cut short by a crash
is summarised from exactly what was kept, the same way as one that ended normally.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sera.emotions import NEGATIVE

TRANSCRIPT = "transcript"  # the type of a result that holds the words said (``TranscriptResult.kind``)
SHARP_CHANGE_GAP_SECONDS = 20.0  # two utterances further apart than this are not one "change of mood"
SHARP_CHANGE_MIN_CONFIDENCE = 0.5
MAX_MOMENTS = 5


@dataclass(frozen=True)
class SessionInfo:
    """A live session (a voice channel being listened to), as plugins see it."""

    id: int
    space: str  # the community it belongs to (a Discord server's id)
    room: str  # where it happens (a voice channel's id)
    started_by: str
    started_at: float  # Unix time


@dataclass(frozen=True)
class Utterance:
    """One analysed stretch of one speaker's speech, as stored."""

    speaker: str
    start: float  # seconds from the start of the session
    end: float
    label: str | None  # None when no emotion analyzer gave one
    confidence: float | None
    probabilities: Mapping[str, float] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)  # analyzer name -> result dict

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def words(self) -> str | None:
        """What was said, where an analyzer that transcribes wrote it down (its speaker agreed)."""
        for result in self.outputs.values():
            if isinstance(result, Mapping) and result.get("type") == TRANSCRIPT and result.get("text"):
                return str(result["text"])
        return None


@dataclass(frozen=True)
class SpeakerSummary:
    speaker: str
    name: str
    talk_seconds: float
    share: float  # of all talk time in the session
    utterances: int
    emotions: Mapping[str, float]  # duration-weighted mean probabilities
    dominant: str | None


@dataclass(frozen=True)
class Moment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class SessionSummary:
    session: SessionInfo
    status: str  # "ended" or "interrupted"
    duration: float  # seconds
    speakers: Sequence[SpeakerSummary]
    group: Mapping[str, float]  # the group's emotion distribution, weighted by talk time
    moments: Sequence[Moment]
    timeline: Sequence[Utterance]
    shed: int = 0  # pieces of audio or utterances dropped because analysis fell behind

    @property
    def talk_seconds(self) -> float:
        return sum(s.talk_seconds for s in self.speakers)

    @property
    def transcribed(self) -> bool:
        """Whether any utterance has its words (someone who agreed to transcripts spoke)."""
        return any(row.words for row in self.timeline)

    def name(self, speaker: str) -> str:
        return next((s.name for s in self.speakers if s.speaker == speaker), speaker)

    def notes(self) -> list[dict[str, Any]]:
        """The meeting notes: every utterance in time order, who said it, how it sounded and, where they
        agreed to transcripts, what they said."""
        return [
            {"start_s": round(r.start, 1), "end_s": round(r.end, 1), "speaker": r.speaker, "name": self.name(r.speaker),
             "emotion": r.label, "confidence": None if r.confidence is None else round(r.confidence, 4), "text": r.words}
            for r in self.timeline
        ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": self.session.id,
            "status": self.status,
            "duration_s": round(self.duration, 1),
            "talk_s": round(self.talk_seconds, 1),
            "shed": self.shed,
            "speakers": [
                {
                    "speaker": s.speaker,
                    "name": s.name,
                    "talk_s": round(s.talk_seconds, 1),
                    "share": round(s.share, 4),
                    "utterances": s.utterances,
                    "dominant": s.dominant,
                    "emotions": {k: round(v, 4) for k, v in s.emotions.items()},
                }
                for s in self.speakers
            ],
            "group": {k: round(v, 4) for k, v in self.group.items()},
            "moments": [{"start_s": round(m.start, 1), "end_s": round(m.end, 1), "text": m.text} for m in self.moments],
            "notes": self.notes(),
        }


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) from the start of the session."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summarize(
    session: SessionInfo,
    status: str,
    duration: float,
    rows: Sequence[Utterance],
    names: Mapping[str, str] | None = None,
    shed: int = 0,
) -> SessionSummary:
    names = names or {}
    rows = sorted(rows, key=lambda r: (r.start, r.speaker))
    total = sum(r.duration for r in rows)
    by_speaker: dict[str, list[Utterance]] = {}
    for row in rows:
        by_speaker.setdefault(row.speaker, []).append(row)
    speakers = []
    for speaker, own in by_speaker.items():
        talk = sum(r.duration for r in own)
        emotions = _weighted(own)
        speakers.append(
            SpeakerSummary(
                speaker=speaker,
                name=names.get(speaker, speaker),
                talk_seconds=talk,
                share=talk / total if total else 0.0,
                utterances=len(own),
                emotions=emotions,
                dominant=max(emotions, key=emotions.get) if emotions else None,
            )
        )
    speakers.sort(key=lambda s: -s.talk_seconds)  # most talk first
    return SessionSummary(
        session=session,
        status=status,
        duration=max(duration, rows[-1].end if rows else 0.0),
        speakers=speakers,
        group=_weighted(rows),
        moments=_moments(rows, names),
        timeline=rows,
        shed=shed,
    )


def _weighted(rows: Sequence[Utterance]) -> dict[str, float]:
    """Duration-weighted mean of the rows' probabilities (the labels an emotion model gave)."""
    total: dict[str, float] = {}
    weight = 0.0
    for row in rows:
        if not row.probabilities:
            continue
        weight += row.duration
        for label, p in row.probabilities.items():
            total[label] = total.get(label, 0.0) + p * row.duration
    return {k: v / weight for k, v in sorted(total.items(), key=lambda kv: -kv[1])} if weight else {}


def _moments(rows: Sequence[Utterance], names: Mapping[str, str]) -> list[Moment]:
    moments = []
    stretch = _longest_negative_stretch(rows)
    if stretch:
        first, last = stretch
        who = sorted({names.get(r.speaker, r.speaker) for r in rows[first : last + 1]})
        moments.append(
            Moment(
                rows[first].start,
                rows[last].end,
                f"longest negative stretch {clock(rows[first].start)}-{clock(rows[last].end)} "
                f"({last - first + 1} utterances: {', '.join(who)})",
            )
        )
    for before, after in _sharp_changes(rows):
        who = names.get(after.speaker, after.speaker)
        moments.append(Moment(before.start, after.end, f"{clock(after.start)} {who}: {before.label} → {after.label}"))
    return moments[:MAX_MOMENTS]


def _longest_negative_stretch(rows: Sequence[Utterance]) -> tuple[int, int] | None:
    """Indices of the longest (in time) run of consecutive utterances that all sound negative."""
    best, best_len, first = None, 0.0, None
    for i, row in enumerate(rows):
        if row.label in NEGATIVE:
            first = i if first is None else first
            length = row.end - rows[first].start
            if length > best_len:
                best, best_len = (first, i), length
        else:
            first = None
    return best


def _sharp_changes(rows: Sequence[Utterance]) -> list[tuple[Utterance, Utterance]]:
    """A speaker's confident move between a negative and a non-negative emotion, in time order."""
    last: dict[str, Utterance] = {}
    changes = []
    for row in rows:
        if row.label is None or (row.confidence or 0.0) < SHARP_CHANGE_MIN_CONFIDENCE:
            continue
        before = last.get(row.speaker)
        if (
            before is not None
            and row.start - before.end <= SHARP_CHANGE_GAP_SECONDS
            and (before.label in NEGATIVE) != (row.label in NEGATIVE)
        ):
            changes.append((before, row))
        last[row.speaker] = row
    return changes
