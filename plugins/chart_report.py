"""The chart reporter: a PNG bar chart of the emotion probabilities (needs matplotlib, the [chart] extra)."""

from __future__ import annotations

import io

from bot.errors import SeraError
from bot.plugin import Report, Reporter


class ChartReporter(Reporter):
    def setup(self) -> None:
        try:
            import matplotlib
        except ImportError:
            raise SeraError("matplotlib is not installed (pip install -e '.[chart]')") from None
        matplotlib.use("Agg")

    def render(self, report: Report) -> bytes | None:
        """PNG bytes, or None when there is no emotion to chart."""
        import matplotlib.pyplot as plt

        emotion = report.emotion()
        if emotion is None:
            return None
        names, probs = zip(*reversed(emotion.ranked()))
        fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
        ax.barh(names, probs, color="#5865F2")
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability")
        ax.set_title(f"{report.source}: {emotion.headline()}")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        return buffer.getvalue()
