"""The text reporter: what ``sera analyze`` prints for a person.

A headline, every class probability as a bar, the other analyzers' answers for the whole source (what
was said, where the transcript plugin ran), and a timeline with one row per speech segment; for a live
session, its summary and, where anyone agreed to transcripts, its meeting notes.
Results of analyzers it does not know are shown by their ``headline()``, so third-party analyzers
appear without any change here.
"""

from __future__ import annotations

from sera.plugin import SERA_PLUGIN_API, EmotionResult, NoOptions, Report, Reporter, SessionSummary, clock

BAR_WIDTH = 20


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = round(max(0.0, min(fraction, 1.0)) * width)
    return "█" * filled + "·" * (width - filled)


def span(start: float, end: float) -> str:
    return f"{start:.1f}-{end:.1f} s".rjust(13)


class TextReporter(Reporter[NoOptions]):
    api = SERA_PLUGIN_API
    def render(self, report: Report) -> str:
        lines = [f"{report.source}  ({report.duration:.1f} s audio, {report.speech_seconds:.1f} s speech)"]
        if not report.speech_detected:
            lines.append("  no speech detected")
        emotion = report.emotion()
        if emotion:
            against = f"  (against the speaker's baseline of {emotion.baseline_clips} clips)" if emotion.baseline_clips else ""
            lines.append(f"  emotion: {emotion.headline()}{against}")
            width = max(len(name) for name in emotion.probabilities)
            lines += [f"    {name:<{width}}  {bar(p)} {p:6.1%}" for name, p in emotion.ranked()]
        for name, output in report.outputs.items():
            if output.overall and not isinstance(output.overall, EmotionResult):
                lines.append(f"  {name}: {output.overall.headline()}")
        if report.segments:
            lines.append("  timeline:")
            for i, (start, end) in enumerate(report.segments):
                parts = [r.headline() for o in report.outputs.values() if (r := o.segments[i]) is not None]
                lines.append(f"    {span(start, end)}  " + " | ".join(parts))
        lines += [f"  note: {notice}" for notice in report.notices]
        return "\n".join(lines)

    def render_session(self, summary: SessionSummary) -> str:
        status = "" if summary.status == "ended" else f" ({summary.status})"
        lines = [
            f"session {summary.session.id}{status}: {clock(summary.duration)} long, "
            f"{clock(summary.talk_seconds)} of speech from {len(summary.speakers)} speaker{'' if len(summary.speakers) == 1 else 's'}"
        ]
        width = max((len(s.name) for s in summary.speakers), default=0)
        for s in summary.speakers:
            mood = f"{s.dominant} {s.emotions[s.dominant]:.0%}" if s.dominant else "no emotion"
            lines.append(f"  {s.name:<{width}}  {bar(s.share, 10)} {s.share:4.0%} of talk, {s.utterances} utterances, mostly {mood}")
        if summary.group:
            lines.append("  group: " + ", ".join(f"{k} {v:.0%}" for k, v in list(summary.group.items())[:4]))
        lines += [f"  • {m.text}" for m in summary.moments]
        if summary.transcribed:
            lines.append("  notes:")
            for row in summary.timeline:
                mood = f"{row.label} {row.confidence:.0%}" if row.label and row.confidence is not None else "—"
                lines.append(f"    {clock(row.start):>7}  {summary.name(row.speaker):<{width}}  {mood:<13}" + (f"  “{row.words}”" if row.words else ""))
        if summary.shed:
            lines.append(f"  note: {summary.shed} pieces of audio were skipped because analysis fell behind")
        return "\n".join(lines)
