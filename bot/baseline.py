"""A speaker's personal baseline: running statistics of how their voice sounds to a model, never audio.

A model that has heard a speaker's ordinary voice can tell their anger from their usual loudness. What
is kept per speaker (and per embedding space: a baseline made with one encoder means nothing to another)
is the count of clips, the mean of their pooled embeddings, and how many of those clips the model heard
as each emotion. The last is what keeps a one-emotion baseline from normalising that emotion away: the
model subtracts from the mean what the emotions heard in it explain (``models/MODEL_CARD_WHISPER.md``
says how this was chosen by cross-validation), so a user who only ever sends angry notes is still heard
as angry.

Statistics only grow by ``add`` (a clip at a time, or a batch), so a baseline can be kept current from
enrolment clips, opted-in voice notes and live utterances alike, and stored as a few kilobytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
    heard: np.ndarray  # (labels,) int64: clips heard as each emotion

    @classmethod
    def empty(cls, like: Observation) -> Baseline:
        """A baseline of no clips, in the space (and of the size) of ``like``."""
        return cls(like.space, 0, np.zeros(like.embedding.size), np.zeros(like.labels, dtype=np.int64))

    @classmethod
    def of(cls, observations: Sequence[Observation]) -> Baseline:
        """A baseline from observations (all of one space)."""
        if not observations:
            raise ValueError("a baseline needs at least one observation")
        return cls.empty(observations[0]).add(observations)

    def add(self, observations: Sequence[Observation]) -> Baseline:
        """This baseline with more clips in it; observations of another space are refused."""
        if not observations:
            return self
        if any(o.space != self.space for o in observations):
            raise ValueError(f"observations of another embedding space than {self.space}")
        embeddings = np.stack([o.embedding for o in observations]).astype(np.float64)
        count = self.count + len(observations)
        mean = self.mean + (embeddings.sum(axis=0) - len(observations) * self.mean) / count
        heard = self.heard + np.bincount([o.heard for o in observations], minlength=self.heard.size)
        return Baseline(self.space, count, mean, heard)

    @property
    def heard_share(self) -> np.ndarray:
        """The share of clips heard as each emotion (zeros for an empty baseline)."""
        return self.heard / max(self.count, 1)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, count=np.int64(self.count), mean=self.mean.astype(np.float32), heard=self.heard)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, space: str, data: bytes) -> Baseline:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return cls(space, int(stored["count"]), stored["mean"].astype(np.float64), stored["heard"].astype(np.int64))
