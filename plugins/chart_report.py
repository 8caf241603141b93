"""The chart reporter (needs matplotlib, the [chart] extra): PNG charts made to be posted in Discord.

For a voice note, every emotion's probability as a bar in that emotion's colour (the vocabulary's, as
the embeds use) and, for a note of more than one speech segment, a timeline of what each segment
sounded like; for a live session, one row per speaker with each utterance coloured by its emotion.

Discord shows images in both its dark and its light theme, so a chart is a card of its own: an opaque
dark background with light text, which reads on either. Sizes are about 1100 pixels wide at an aspect
Discord shows whole (it scales previews to about 550 pixels wide, twice sharp on high-density screens)
and never crops.

Charts are drawn on worker threads, so each is its own ``Figure`` (pyplot's global figure registry is
not thread-safe, and a figure left in it is never freed). Speaker names come from users: they are
drawn as plain text (``parse_math=False``), never as matplotlib mathtext, where a ``$`` would start a
formula that can fail to parse.
"""

from __future__ import annotations

import io
from typing import Any

from sera.plugin import SERA_PLUGIN_API, EmotionResult, NoOptions, Report, Reporter, SessionSummary, clock, color

WIDTH_INCHES, DPI = 5.5, 200  # 1100 pixels wide
CARD = "#2b2d31"  # Discord's own dark surface: a card that reads on the dark and the light theme alike
TEXT, MUTED, GRID = "#f2f3f5", "#b5bac1", "#3f4147"
UNSURE_GREY = "#80848e"
FONT = 7.5


class ChartReporter(Reporter[NoOptions]):
    api = SERA_PLUGIN_API
    requires = ("matplotlib",)
    extra = "chart"

    def setup(self) -> None:
        import matplotlib

        matplotlib.use("Agg")

    def render(self, report: Report) -> bytes | None:
        """PNG bytes, or None when there is no emotion to chart."""
        from matplotlib.figure import Figure

        emotion = report.emotion()
        if emotion is None:
            return None
        segments = next(o.segments for o in report.outputs.values() if o.overall is emotion)
        timeline = [(start, end, r) for (start, end), r in zip(report.segments, segments) if isinstance(r, EmotionResult)]
        rows = 2 if len(timeline) > 1 else 1
        fig = Figure(figsize=(WIDTH_INCHES, 2.7 if rows == 1 else 3.4), dpi=DPI, facecolor=CARD)
        grid = fig.add_gridspec(rows, 1, height_ratios=[3.2, 1][:rows], hspace=0.25, left=0.17, right=0.95, top=0.83, bottom=0.13)
        bars = fig.add_subplot(grid[0])
        names, probs = zip(*reversed(emotion.ranked()))
        bars.barh(names, probs, color=[hex_color(n) for n in names], height=0.7)
        for y, p in enumerate(probs):
            bars.text(p + 0.012, y, f"{p:.0%}", va="center", color=MUTED, fontsize=FONT - 1)
        bars.set_xlim(0, 1.08)
        bars.set_xticks([])
        style(bars)
        bars.tick_params(axis="y", length=0, labelsize=FONT)
        against = f" · judged against the speaker's baseline ({emotion.baseline_clips} clips)" if emotion.baseline_clips else ""
        fig.text(0.03, 0.93, emotion.headline(), color=hex_color(emotion.label), fontsize=FONT + 4, fontweight="bold", va="center")
        fig.text(0.97, 0.93, f"{report.duration:.1f} s audio · {report.speech_seconds:.1f} s speech{against}", color=MUTED,
                 fontsize=FONT - 1, ha="right", va="center")  # fmt: skip
        if rows == 2:
            line = fig.add_subplot(grid[1])
            for start, end, result in timeline:
                line.broken_barh([(start, end - start)], (0, 1), facecolors=hex_color(result.label), alpha=0.35 + 0.65 * result.confidence)
                if end - start > report.duration / 12:
                    line.text((start + end) / 2, 0.5, result.label, ha="center", va="center", color=CARD, fontsize=FONT - 1.5, fontweight="bold")
            line.set_xlim(0, report.duration)
            line.set_ylim(0, 1)
            line.set_yticks([])
            line.set_xlabel("seconds", color=MUTED, fontsize=FONT - 1)
            line.set_ylabel("timeline", color=MUTED, fontsize=FONT - 1, rotation=0, ha="right", va="center")
            style(line)
        return png(fig)

    def render_session(self, summary: SessionSummary) -> bytes | None:
        """PNG timeline, or None when nobody's speech was analysed."""
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        if not summary.timeline:
            return None
        speakers = [s.speaker for s in summary.speakers]
        names = {s.speaker: s.name for s in summary.speakers}
        minutes = max(summary.duration, 1.0) / 60
        height = min(1.3 + 0.38 * len(speakers), 5.0)
        fig = Figure(figsize=(WIDTH_INCHES, height), dpi=DPI, facecolor=CARD, layout="constrained")
        ax = fig.subplots()
        used: set[str | None] = set()
        for row, speaker in enumerate(speakers):
            own = [u for u in summary.timeline if u.speaker == speaker]
            used.update(u.label for u in own)
            ax.broken_barh([(u.start / 60, max(u.duration / 60, minutes / 400)) for u in own], (row - 0.36, 0.72),
                           facecolors=[hex_color(u.label) for u in own])  # fmt: skip
        share = {s.speaker: s.share for s in summary.speakers}
        ax.set_yticks(range(len(speakers)), [f"{names[s][:18]}  {share[s]:.0%}" for s in speakers], parse_math=False)
        ax.set_ylim(len(speakers) - 0.5, -0.5)
        ax.set_xlim(0, minutes)
        ax.set_xlabel("minutes", color=MUTED, fontsize=FONT - 1)
        style(ax)
        ax.tick_params(axis="y", length=0, labelsize=FONT)
        status = "" if summary.status == "ended" else f" ({summary.status})"
        fig.suptitle(f"Session {summary.session.id}{status} · {clock(summary.duration)} · who spoke, and how it sounded",
                     color=TEXT, fontsize=FONT + 1.5, fontweight="bold", x=0.03, ha="left")  # fmt: skip
        labels = sorted(used, key=lambda label: (label is None, str(label)))
        handles = [Patch(color=hex_color(label), label=label or "no emotion") for label in labels]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False, fontsize=FONT - 1,
                   labelcolor=MUTED, handlelength=1.0, columnspacing=1.2)  # fmt: skip
        fig.get_layout_engine().set(h_pad=0.12, w_pad=0.15)
        return png(fig)


def style(ax: Any) -> None:
    """The card's look: no frame but a baseline, muted ticks, a faint grid."""
    ax.set_facecolor(CARD)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_color(GRID)
    ax.tick_params(colors=MUTED, labelsize=FONT - 1)
    ax.grid(axis="x", color=GRID, linewidth=0.5)
    ax.set_axisbelow(True)


def hex_color(label: str | None) -> str:
    value = color(label)
    return f"#{value:06x}" if value is not None else UNSURE_GREY


def png(fig: Any) -> bytes:
    """The figure as PNG bytes; a ``Figure`` outside pyplot is freed with its last reference."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor=fig.get_facecolor())
    return buffer.getvalue()
