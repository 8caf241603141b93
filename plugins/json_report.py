"""The JSON reporter: one JSON object per source, with the stable field names the README documents."""

from __future__ import annotations

import json

from sera.plugin import SERA_PLUGIN_API, NoOptions, Report, Reporter, SessionSummary


class JsonReporter(Reporter[NoOptions]):
    api = SERA_PLUGIN_API
    def render(self, report: Report) -> str:
        return json.dumps(report.to_dict(), ensure_ascii=False)

    def render_session(self, summary: SessionSummary) -> str:
        return json.dumps(summary.to_dict(), ensure_ascii=False)
