"""The bot's Prometheus metrics, through prometheus_client: its process (resident memory, CPU time, open
files), how long notes wait for their answer and how long their analysis takes (histograms), and the
state the ``Health`` cog reports (notes by outcome, queue, sessions, event-loop lag), read at each scrape.

The series names are those sera has always exported; ``Health`` serves them on the loopback interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# Seconds: most notes take well under a second to analyse; a long note or a full queue, several.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class Telemetry:
    """One registry per bot process: process metrics, the two histograms, and the status gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.note_latency = Histogram("sera_note_latency_seconds", "From a voice note's arrival to its answer (analysis, queue, replies).",
                                      registry=self.registry, buckets=BUCKETS)  # fmt: skip
        self.analysis = Histogram("sera_analysis_seconds", "Decoding and analysing one voice note, on the worker pool.",
                                  registry=self.registry, buckets=BUCKETS)  # fmt: skip
        self._status: Callable[[], dict[str, Any]] | None = None
        self.registry.register(_StatusCollector(self))

    def report(self, status: Callable[[], dict[str, Any]]) -> None:
        """Where the status gauges come from (the ``Health`` cog's ``status``)."""
        self._status = status

    def exposition(self) -> bytes:
        """The text format a Prometheus server scrapes."""
        return generate_latest(self.registry)


class _StatusCollector:
    """The status, as the series sera has always exported, read when scraped."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        if self.telemetry._status is None:
            return
        s = self.telemetry._status()
        yield gauge("sera_up", "1 while the bot's event loop answers.", 1)
        answered = CounterMetricFamily("sera_notes_answered", "Voice notes answered with an analysis.")
        answered.add_metric([], s["notes"].get("answered", 0))
        yield answered
        failed = CounterMetricFamily("sera_notes_failed", "Voice notes answered without one, by why.", labels=["kind"])
        for kind, count in s["notes_failed"].items():
            failed.add_metric([kind], count)
        yield failed
        yield gauge("sera_queue_busy", "Voice notes being analysed or waiting now.", s["queue"].get("busy", 0))
        yield gauge("sera_queue_size", "Voice notes that may be analysed or waiting at once.", s["queue"].get("size", 0))
        yield gauge("sera_live_sessions", "Voice-channel sessions being listened to.", s["sessions"])
        yield gauge("sera_guilds", "Servers the bot is in.", s["guilds"])
        yield gauge("sera_plugins_stopped", "Plugins stopped after overrunning their timeout.", len(s["plugins_stopped"]))
        yield gauge("sera_event_loop_lag_seconds", "How late the event loop last woke a sleeping task.", s["loop_lag_ms"]["last"] / 1000)
        yield gauge("sera_event_loop_lag_max_seconds", "The worst such lateness since start.", s["loop_lag_ms"]["worst"] / 1000)


def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)
