"""Meeting notes of a live session, as Markdown: who spoke how much and how it sounded, the notable
moments, and the timeline, one line per utterance with its emotion and, where the speaker agreed to
transcripts, what they said ("Alice, sad 71 %: I still don't get the second proof").

Made from a ``SessionSummary`` alone (itself made from the stored rows), so a session cut short has notes
as complete as what was kept. The JSON form is ``SessionSummary.to_dict()``.
"""

from __future__ import annotations

import time

from sera.summary import SessionSummary, Utterance, clock

HINT = "Emotion from voice is a hint, not a judgement about anyone."


def markdown(summary: SessionSummary) -> str:
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(summary.session.started_at))
    status = "" if summary.status == "ended" else f" ({summary.status})"
    lines = [
        f"# Session {summary.session.id}{status}",
        "",
        f"{started} · {clock(summary.duration)} long · {clock(summary.talk_seconds)} of speech from "
        f"{len(summary.speakers)} speaker{'s' if len(summary.speakers) != 1 else ''}. {HINT}",
        "",
        "## Who spoke",
        "",
    ]
    for s in summary.speakers:
        mood = f", mostly {s.dominant} ({s.emotions[s.dominant]:.0%})" if s.dominant else ""
        lines.append(f"- **{escape(s.name)}**: {clock(s.talk_seconds)} ({s.share:.0%} of the talk), {s.utterances} utterances{mood}")
    if not summary.speakers:
        lines.append("- Nobody who opted in spoke.")
    if summary.moments:
        lines += ["", "## Notable moments", ""] + [f"- {escape(m.text)}" for m in summary.moments]
    lines += ["", "## Timeline", ""] + [line(summary, row) for row in summary.timeline]
    if summary.shed:
        lines += ["", f"_{summary.shed} pieces of audio were skipped because analysis fell behind._"]
    return "\n".join(lines) + "\n"


def line(summary: SessionSummary, row: Utterance) -> str:
    """``- `0:14` **Alice** · sad 71%: what she said``"""
    mood = f"{row.label} {row.confidence:.0%}" if row.label and row.label != "unsure" and row.confidence is not None else row.label or "—"
    words = f": {escape(row.words)}" if row.words else ""
    return f"- `{clock(row.start)}` **{escape(summary.name(row.speaker))}** · {mood}{words}"


def escape(text: str) -> str:
    """Markdown's markup characters in names and words shown as themselves (a name like ``*x*`` stays
    plain), and no line breaks that would start a new list item."""
    text = " ".join(text.split())
    return "".join(f"\\{c}" if c in "\\`*_[]<>#|~" else c for c in text)
