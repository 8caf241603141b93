"""The emotion vocabulary, named once: the labels in the model's order, and how each is shown.

Training, the corpora loaders, session summaries, the reporters and the Discord adapter all read it
from here, so a label, its emoji and its colour can only ever change in one place.
"""

from __future__ import annotations

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")  # RAVDESS's order, codes 01-08
UNSURE = "unsure"  # the answer when the top calibrated probability is under the analyzer's threshold
UNSURE_BELOW = 0.4  # the emotion analyzers' default threshold (plugins.NAME.unsure_below); training reports against it
NEGATIVE = frozenset({"sad", "angry", "fearful", "disgust"})  # a swing between these and the rest is a "change of mood"

EMOJI = {
    "neutral": "😐",
    "calm": "😌",
    "happy": "😄",
    "sad": "😢",
    "angry": "😠",
    "fearful": "😨",
    "disgust": "🤢",
    "surprised": "😲",
    UNSURE: "🤔",
}
NO_EMOTION_EMOJI = "🎙️"
COLORS = {"happy": 0xF1C40F, "calm": 0x1ABC9C, "neutral": 0x95A5A6, "sad": 0x3498DB, "angry": 0xE74C3C,
          "fearful": 0x9B59B6, "disgust": 0x27AE60, "surprised": 0xE67E22}  # fmt: skip


def emoji(label: str | None) -> str:
    return EMOJI.get(label or "", NO_EMOTION_EMOJI)


def color(label: str | None) -> int | None:
    """An emotion's RGB colour as an integer (Discord's embed colour); None for "unsure" or no emotion,
    which each reporter shows in its own neutral way."""
    return COLORS.get(label or "")
