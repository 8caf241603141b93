"""The chart reporter (needs matplotlib, the [chart] extra): PNG charts.

For a voice note, a bar chart of the emotion probabilities; for a live session, a timeline with one
row per speaker and each utterance coloured by its emotion.

Charts are drawn on worker threads, so each is its own ``Figure`` (pyplot's global figure registry is
not thread-safe, and a figure left in it is never freed). File names and speaker names come from users:
they are drawn as plain text (``parse_math=False``), never as matplotlib mathtext, where a ``$`` would
start a formula that can fail to parse.
"""

from __future__ import annotations

import io


from sera.plugin import SERA_PLUGIN_API, NoOptions, Report, Reporter, SeraError, SessionSummary, color

UNSURE_GREY = "#d0d0d0"


class ChartReporter(Reporter[NoOptions]):
    api = SERA_PLUGIN_API
    def setup(self) -> None:
        try:
            import matplotlib
        except ImportError:
            raise SeraError("matplotlib is not installed (pip install -e '.[chart]')") from None
        matplotlib.use("Agg")

    def render(self, report: Report) -> bytes | None:
        """PNG bytes, or None when there is no emotion to chart."""
        from matplotlib.figure import Figure

        emotion = report.emotion()
        if emotion is None:
            return None
        names, probs = zip(*reversed(emotion.ranked()))
        fig = Figure(figsize=(5, 3), dpi=100)
        ax = fig.subplots()
        ax.barh(names, probs, color="#5865F2")
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability")
        ax.set_title(f"{report.source}: {emotion.headline()}", parse_math=False)
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
        fig = Figure(figsize=(8, 1.0 + 0.5 * len(speakers)), dpi=100)
        ax = fig.subplots()
        used = set()
        for row, speaker in enumerate(speakers):
            own = [u for u in summary.timeline if u.speaker == speaker]
            colors = [hex_color(u.label) for u in own]
            used.update(u.label for u in own)
            ax.broken_barh([(u.start / 60, u.duration / 60) for u in own], (row - 0.4, 0.8), facecolors=colors)
        ax.set_yticks(range(len(speakers)), [names[s] for s in speakers], parse_math=False)
        ax.set_ylim(len(speakers) - 0.5, -0.5)
        ax.set_xlim(0, minutes)
        ax.set_xlabel("minutes")
        ax.set_title(f"session {summary.session.id}: who spoke, and how it sounded")
        handles = [Patch(color=hex_color(label), label=label or "no emotion") for label in sorted(used, key=str)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
        return png(fig)


def hex_color(label: str | None) -> str:
    value = color(label)
    return f"#{value:06x}" if value is not None else UNSURE_GREY


def png(fig: object) -> bytes:
    """The figure as PNG bytes; a ``Figure`` outside pyplot is freed with its last reference."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
