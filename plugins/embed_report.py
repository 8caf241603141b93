"""The embed reporter: a report as a Discord embed, in Discord's own JSON shape.

What was said (where the transcript plugin ran) is a field under the emotion and, in a longer note, the
words of each segment beside its emotion in the timeline; every field is cut to fit Discord's limits.

It returns a plain dict (``discord.Embed.from_dict`` takes it), so it needs no Discord import and the
core stays free of Discord; the Discord adapter only converts and sends it.
"""

from __future__ import annotations

from typing import Any

from sera.plugin import (
    SERA_PLUGIN_API, EmotionResult, NoOptions, Report, Reporter, SessionSummary, TranscriptResult, clock, color, emoji,
)  # fmt: skip

BAR_WIDTH = 12
MAX_TIMELINE_ROWS = 12
FIELD_LIMIT = 1024  # Discord's limit on a field's value


def bars(result: EmotionResult) -> str:
    width = max(len(name) for name in result.probabilities)
    rows = []
    for name, p in result.ranked():
        filled = round(p * BAR_WIDTH)
        rows.append(f"{name:<{width}} {'█' * filled}{'░' * (BAR_WIDTH - filled)} {p:4.0%}")
    return "```\n" + "\n".join(rows) + "\n```"


def timeline(report: Report, name: str) -> str:
    """One row per segment: its emotion and, where a transcript was made, its words."""
    said = next((o.segments for o in report.outputs.values() if isinstance(o.overall, TranscriptResult)), [None] * len(report.segments))
    rows = []
    for (start, end), result, words in zip(report.segments, report.outputs[name].segments, said):
        if isinstance(result, EmotionResult):
            text = f" — {words.text}" if isinstance(words, TranscriptResult) else ""
            rows.append(f"`{start:4.1f}–{end:4.1f} s` {emoji(result.label)} {result.label}{text}")
    return fit(rows)


def fit(rows: list[str], limit: int = FIELD_LIMIT, most: int = MAX_TIMELINE_ROWS) -> str:
    """As many whole rows (at most ``most``) as one field holds, and how many more there were."""
    shown: list[str] = []
    rows = [clipped(row, limit // 4) for row in rows]  # one long monologue never hides every other row
    for i, row in enumerate(rows):
        more = f"… and {len(rows) - i} more"
        if i == most or len("\n".join([*shown, row, more if i + 1 < len(rows) else ""])) > limit:
            return "\n".join([*shown, more])
        shown.append(row)
    return "\n".join(shown)


def clipped(text: str, limit: int = FIELD_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EmbedReporter(Reporter[NoOptions]):
    api = SERA_PLUGIN_API
    def render(self, report: Report) -> dict[str, Any]:
        if not report.speech_detected:
            return {"title": "🔇 No speech detected", "description": "I couldn't hear anyone speaking in this audio.",
                    "color": color("neutral")}  # fmt: skip
        fields: list[dict[str, Any]] = []
        emotion = report.emotion()
        embed: dict[str, Any] = {"fields": fields}
        if emotion:
            embed["title"] = f"{emoji(emotion.label)} {emotion.headline()}"
            embed["description"] = bars(emotion)
            embed["color"] = color(emotion.label) or color("neutral")
        else:
            embed["title"] = "🎙️ Speech analysed"
        for name, output in report.outputs.items():
            if isinstance(output.overall, EmotionResult) and len(report.segments) > 1:
                fields.append({"name": "Timeline", "value": timeline(report, name), "inline": False})
            elif isinstance(output.overall, TranscriptResult):
                fields.append({"name": "📝 What was said", "value": clipped(output.overall.text), "inline": False})
            elif output.overall is not None and not isinstance(output.overall, EmotionResult):
                fields.append({"name": name, "value": clipped(output.overall.headline()), "inline": False})
        footer = f"{report.duration:.1f} s audio · {report.speech_seconds:.1f} s speech"
        if emotion and emotion.baseline_clips:
            footer += f" · judged against your baseline ({emotion.baseline_clips} clips)"
        if report.notices:
            footer += " · " + "; ".join(report.notices)
        embed["footer"] = {"text": footer[:2048]}
        return embed

    def render_session(self, summary: SessionSummary) -> dict[str, Any]:
        """Speakers are shown as Discord mentions (``<@id>``): the adapter's speaker ids are user ids."""
        title = f"📋 Session summary · {clock(summary.duration)}"
        if summary.status != "ended":
            title += f" ({summary.status})"
        rows = []
        for s in summary.speakers:
            mood = f"{emoji(s.dominant)} {s.dominant}" if s.dominant else "—"
            rows.append(f"<@{s.speaker}> · {clock(s.talk_seconds)} ({s.share:.0%}) · {s.utterances} utterances · {mood}")
        fields: list[dict[str, Any]] = [
            {"name": "Talk time", "value": "\n".join(rows)[:1024] or "Nobody who opted in spoke.", "inline": False}
        ]
        if summary.group:
            group = ", ".join(f"{emoji(k)} {k} {v:.0%}" for k, v in list(summary.group.items())[:4])
            fields.append({"name": "The group", "value": group, "inline": False})
        if summary.moments:
            fields.append({"name": "Notable moments", "value": "\n".join(f"• {m.text}" for m in summary.moments)[:1024], "inline": False})
        if summary.transcribed:
            said = [f"`{clock(r.start)}` <@{r.speaker}> {emoji(r.label)} {r.words}" for r in summary.timeline if r.words]
            fields.append({"name": "📝 Notes (all of them in the attached file)", "value": fit(said), "inline": False})
        footer = "Emotion from voice is a hint, not a judgement. No audio was recorded."
        if summary.shed:
            footer = f"{summary.shed} pieces of audio were skipped because analysis fell behind. " + footer
        return {"title": title, "fields": fields, "color": color(next(iter(summary.group), None)) or color("neutral"), "footer": {"text": footer}}
