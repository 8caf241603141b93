"""A speaker's personal baseline: running statistics of how their voice sounds to a model, never audio.

A model that has heard a speaker's ordinary voice can tell their anger from their usual loudness. What
is kept per speaker (and per embedding space: a baseline made with one encoder means nothing to another)
is the count of clips, the mean of their pooled embeddings, and how many of those clips the model heard
as each emotion. The last is what keeps a one-emotion baseline from normalising that emotion away: the
model subtracts from the mean what the emotions heard in it explain (``models/MODEL_CARD_WHISPER.md``
says how this was chosen by cross-validation), so a user who only ever sends angry notes is still heard
as angry.

Statistics grow by ``add`` (a clip at a time, or a batch), so a baseline can be kept current from
enrolment clips, opted-in voice notes and live utterances alike, and stored as a few kilobytes. It is a
moving window: past ``WINDOW_CLIPS`` clips each new one weighs as one of that many, so old clips fade
and a year of learning neither freezes a baseline nor lets one day's flood outweigh the rest.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WINDOW_CLIPS = 200  # a baseline weighs its clips as if it held at most this many (about 20 minutes of speech)
SOURCES_KEPT = 100  # digests of the recordings enrolled lately, to refuse the same one twice
CLIPS_PER_RECORDING = 20  # one recording adds at most this many clips (a 10-minute one would add 160)


def spread(observations: Sequence[Observation], most: int = CLIPS_PER_RECORDING) -> list[Observation]:
    """At most ``most`` of a recording's observations, evenly spread over it."""
    if len(observations) <= most:
        return list(observations)
    return [observations[round(i * (len(observations) - 1) / (most - 1))] for i in range(most)]


@dataclass(frozen=True)
class Observation:
    """What one speech segment contributes to a baseline: the model's pooled embedding of it, and the
    emotion the model heard in it without any baseline. Analyzers that serve baselines attach one to
    each result (``EmotionResult.observation``); it is never shown, stored on its own, or serialised."""

    space: str  # the embedding space (encoder, layers, features) it lives in
    embedding: np.ndarray  # (dims,) float32
    heard: int  # index of the emotion heard, in the model's label order
    labels: int  # how many emotions the model knows


@dataclass(frozen=True)
class Baseline:
    """``count`` clips of one speaker in one embedding space: their mean embedding and heard emotions."""

    space: str
    count: int
    mean: np.ndarray  # (dims,) float64
    heard: np.ndarray  # (labels,) float64: clips heard as each emotion (weighted as the mean is)
    sources: tuple[str, ...] = ()  # sha256 digests of the recordings enrolled lately (``SOURCES_KEPT``)

    @classmethod
    def empty(cls, like: Observation) -> Baseline:
        """A baseline of no clips, in the space (and of the size) of ``like``."""
        return cls(like.space, 0, np.zeros(like.embedding.size), np.zeros(like.labels))

    @classmethod
    def of(cls, observations: Sequence[Observation]) -> Baseline:
        """A baseline from observations (all of one space)."""
        if not observations:
            raise ValueError("a baseline needs at least one observation")
        return cls.empty(observations[0]).add(observations)

    def add(self, observations: Sequence[Observation], source: str | None = None) -> Baseline:
        """This baseline with more clips in it (from the recording whose digest is ``source``, where
        given); observations of another space are refused. Up to ``WINDOW_CLIPS`` clips this is the
        plain mean; past it, each clip moves the statistics by 1/``WINDOW_CLIPS`` of the way."""
        if not observations:
            return self
        if any(o.space != self.space for o in observations):
            raise ValueError(f"observations of another embedding space than {self.space}")
        count, mean, heard = self.count, self.mean.copy(), self.heard.astype(np.float64)
        for observation in observations:
            weight = min(count + 1, WINDOW_CLIPS)
            mean += (observation.embedding.astype(np.float64) - mean) / weight
            if (total := heard.sum()) > 0:
                heard *= (weight - 1) / total  # the same up to the window; past it, the old share fades
            heard[observation.heard] += 1
            count += 1
        sources = (self.sources + ((source,) if source else ()))[-SOURCES_KEPT:]
        return Baseline(self.space, count, mean, heard, sources)


    @property
    def heard_share(self) -> np.ndarray:
        """The share of clips heard as each emotion (zeros for an empty baseline)."""
        return self.heard / max(self.heard.sum(), 1)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, count=np.int64(self.count), mean=self.mean.astype(np.float32), heard=self.heard,
                 sources=np.array(self.sources, dtype="S64"))  # fmt: skip
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, space: str, data: bytes) -> Baseline:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            sources = tuple(s.decode() for s in stored["sources"]) if "sources" in stored else ()
            return cls(space, int(stored["count"]), stored["mean"].astype(np.float64), stored["heard"].astype(np.float64), sources)
