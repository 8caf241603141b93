"""The core pipeline: audio in -> decode -> speech segments -> analyzers -> a ``Report``.

It knows nothing of Discord. The CLI calls ``analyze``; the bot awaits ``analyze_async``, which runs
the same work on a pool of ``workers`` so that the asyncio loop (and Discord's heartbeat) never waits on
ffmpeg, librosa or onnxruntime. Threads by default: ffmpeg, onnxruntime and numpy's BLAS release the
GIL, and with each analysis held to one thread of its own two workers answered 1.87x the notes of one
(``bench/throughput_bench.py``). With ``worker_processes`` each worker is a process with its own models
(spawned, loaded once, kept): 2.03x, as librosa holds the GIL for parts of its work, for about 150 MB
a worker.

Each analyzer runs isolated, through its guard (``sera.registry.Guard``): one that raises, overruns
``plugin_timeout_seconds`` or returns something that is not a list of ``Result`` objects is logged under
its name and reported to the user as a short notice, and the other analyzers' results are kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Sequence
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sera.audio import SAMPLE_RATE, confine_process, decode
from sera.baseline import Baseline
from sera.config import Config, DiscordOptions, LiveOptions
from sera.model import BaselineInfo
from sera.plugin import Analyzer, EmotionAnalyzer, PluginOutput, Report, Result, Segment
from sera.registry import PluginFailure, PluginSet
from sera.speech import VAD_MODEL, SpeechDetector

log = logging.getLogger(__name__)


class Pipeline:
    """Loads the speech detector and plugins once; analyses many sources, from many threads."""

    def __init__(self, config: Config, plugins: PluginSet | None = None) -> None:
        self.config = config
        # One BLAS thread per analysis, as onnxruntime has (speech.session_options): sera runs several
        # analyses at once, and OpenBLAS's own threads would fight the workers for the same cores
        # (two threads: 1.24x the notes of one worker with BLAS's own threads, 1.87x with one each).
        threadpool_limits(1, user_api="blas")
        self.detector = SpeechDetector(config.models_dir / VAD_MODEL, config.speech)
        self.plugins = plugins or PluginSet(config, SAMPLE_RATE)
        self.limits = config.audio.limits()
        self._in_process = not config.worker_processes  # analyze_async runs this object's analyze on a thread
        self.workers: Executor = (
            ThreadPoolExecutor(config.workers, thread_name_prefix="sera-worker")
            if self._in_process
            else ProcessPoolExecutor(
                config.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(worker_config(config),)
            )
        )

    def analyze(
        self, source: bytes | str | Path, name: str | None = None, skip: Collection[str] = frozenset(), baseline: Baseline | None = None,
        transcribe: bool = False,
    ) -> Report:  # fmt: skip
        """Decode and analyse one source; raises ``AudioError`` for input that cannot be used.

        ``skip`` names analyzers not to run (a guild can turn plugins off for itself); ``baseline`` is
        the speaker's personal baseline, for the analyzers that serve one; ``transcribe``: whether the
        speaker agreed to transcripts (analyzers that transcribe run only then).
        """
        if name is None:
            name = Path(source).name if isinstance(source, (str, Path)) else "audio"
        return self.analyze_samples(decode(source, self.limits, SAMPLE_RATE), name, skip, baseline, transcribe)

    async def analyze_async(
        self, source: bytes | str | Path, name: str | None = None, skip: Collection[str] = frozenset(), baseline: Baseline | None = None,
        transcribe: bool = False,
    ) -> Report:  # fmt: skip
        """``analyze`` on the worker pool, awaited without blocking the event loop."""
        loop = asyncio.get_running_loop()
        work = self.analyze if self._in_process else _analyze_in_worker
        return await loop.run_in_executor(self.workers, work, source, name, skip, baseline, transcribe)

    @property
    def baseline_info(self) -> BaselineInfo | None:
        """How the first analyzer that serves personal baselines uses them (its embedding space: which of
        a user's stored baselines applies; the clips one needs), or None."""
        return next((a.baseline_info for a in self.plugins.analyzers if isinstance(a, EmotionAnalyzer) and a.baseline_info), None)

    @property
    def transcribes(self) -> bool:
        """Whether an analyzer that writes down words is loaded, so that transcripts can be offered at all."""
        return any(a.transcribes for a in self.plugins.analyzers)

    def start_workers(self) -> None:
        """Start every worker process and load its models now, not on the first users' notes."""
        if not self._in_process:
            for done in [self.workers.submit(_analyze_in_worker, None, None, ()) for _ in range(self.config.workers)]:
                done.result()

    def analyze_samples(
        self, samples: np.ndarray, name: str, skip: Collection[str] = frozenset(), baseline: Baseline | None = None, transcribe: bool = False
    ) -> Report:
        spans = self.detector.segments(samples)
        segments = [Segment(samples[a:b], SAMPLE_RATE, a / SAMPLE_RATE, b / SAMPLE_RATE, baseline=baseline) for a, b in spans]
        outputs, notices = self.analyze_segments(segments, skip, [transcribe] * len(segments)) if segments else ({}, [])
        log.debug("analysed %.1f s of audio: %d speech segments, %d analyzers, %d notices", samples.size / SAMPLE_RATE,
                  len(segments), len(outputs), len(notices))  # fmt: skip
        return Report(
            source=name,
            duration=samples.size / SAMPLE_RATE,
            segments=[(s.start, s.end) for s in segments],
            outputs=outputs,
            notices=notices,
        )

    def analyze_segments(
        self, segments: Sequence[Segment], skip: Collection[str] = frozenset(), transcribe: Sequence[bool] | None = None
    ) -> tuple[dict[str, PluginOutput], list[str]]:
        """Every enabled analyzer on segments already cut (a voice note's, or a live speaker's utterances).
        ``transcribe`` says, segment by segment, whether its speaker agreed to transcripts (none by
        default): an analyzer that transcribes sees only those segments, and the others get None."""
        outputs: dict[str, PluginOutput] = {}
        notices: list[str] = []
        agreed = list(transcribe or ())
        agreed += [False] * (len(segments) - len(agreed))  # nobody's unless said
        for analyzer in (a for a in self.plugins.analyzers if a.name not in skip):
            if not (any(agreed) if analyzer.transcribes else segments):
                continue
            try:
                if analyzer.transcribes:  # a recogniser's cost grows with the words: each call bounded on its own
                    parts = [self.plugins.call(analyzer, "analyze", _call, analyzer, [segment], False).segments[0] if yes else None
                             for segment, yes in zip(segments, agreed)]  # fmt: skip
                    outputs[analyzer.name] = PluginOutput(parts, self.plugins.call(analyzer, "summarize", _summarize, analyzer, parts))
                else:
                    outputs[analyzer.name] = self.plugins.call(analyzer, "analyze", _call, analyzer, segments)
            except PluginFailure as failure:
                notices.append(f"{analyzer.name} failed ({failure}); its results are left out")
        return outputs, notices

    def close(self) -> None:
        """Finish running work (each plugin call is bounded by its timeout), drop what has not started,
        and release the plugins."""
        self.workers.shutdown(wait=True, cancel_futures=True)
        self.plugins.close()


_worker: list[Pipeline] = []  # in a worker process: its own pipeline


def worker_config(config: Config) -> Config:
    """What a worker process is sent: what analysis needs, and not the Discord section (the database URL
    with its password, the token's variable) or live listening's."""
    return replace(config, workers=1, worker_processes=False, discord=DiscordOptions(), live=LiveOptions())


def _start_worker(config: Config) -> None:
    """A worker holds other users' audio: made non-dumpable as the bot is, then its own pipeline."""
    if not confine_process():
        log.warning("could not make a worker process non-dumpable: same-user processes can read its /proc entries")
    _worker.append(Pipeline(config))


def _analyze_in_worker(
    source: bytes | str | Path | None, name: str | None, skip: Collection[str], baseline: Baseline | None = None, transcribe: bool = False
) -> Report | None:
    """``Pipeline.analyze`` in a worker process; ``None`` source: only make sure the worker is up."""
    return None if source is None else _worker[0].analyze(source, name, skip, baseline, transcribe)


def _call(analyzer: Analyzer, segments: Sequence[Segment], whole: bool = True) -> PluginOutput:
    """The analyzer's checked results for ``segments`` and, where they are the ``whole`` source, its
    summary of them."""
    results = list(analyzer.analyze(segments))
    if len(results) != len(segments):
        raise PluginFailure(f"it gave {len(results)} results for {len(segments)} segments")
    for result in results:
        _check(result)
    return PluginOutput(segments=results, overall=_summarize(analyzer, results) if whole else None)


def _summarize(analyzer: Analyzer, results: Sequence[Result | None]) -> Result | None:
    overall = analyzer.summarize([r for r in results if r is not None])
    _check(overall)
    return overall


def _check(result: object) -> None:
    if result is None:
        return
    if not isinstance(result, Result):
        raise PluginFailure(f"it returned a {type(result).__name__}, not a Result")
    try:
        json.dumps(result.to_dict(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PluginFailure(f"its result cannot be serialised: {exc}") from None
