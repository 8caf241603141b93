"""Live sessions: many speakers' audio streams in, utterances analysed and stored as they finish.

This is the voice-channel half of the core; it knows nothing of Discord. An adapter calls ``feed``
from whatever thread its audio arrives on (Discord's receive thread) with 20 ms frames of 48 kHz
stereo 16-bit PCM, the format voice chats decode to. ``feed`` only checks consent and queues; all
the work (resampling, speech detection per speaker, analysis, storage) happens in ``process``, which
``run`` calls on the pipeline's worker pool every ``tick_seconds``, never on the receive thread and
never on the event loop.

Memory is bounded: each speaker's queue holds at most ``speaker_buffer_seconds`` of audio (older
audio is shed, counted and logged, when analysis falls behind), and an utterance is closed after
``max_utterance_seconds`` even if its speaker never pauses.

Time is the session's clock (wall time by default; tests and benchmarks drive their own). A frame's own
time comes from its sender (RTP timestamps), so it is clamped to at most ``MAX_AHEAD_SECONDS`` past the
clock: a participant who stamps a frame far in the future moves only their own track, never the time
at which everyone else's utterances are judged finished.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import soxr

from sera.audio import PCM16_SCALE, SAMPLE_RATE
from sera.config import LiveOptions
from sera.baseline import Baseline
from sera.baseline_store import BaselineStore
from sera.pipeline import Pipeline
from sera.plugin import EmotionResult, PluginOutput, Segment
from sera.sessions import ENDED, HEARTBEAT_SECONDS, SessionStore
from sera.speech import SpeechStream
from sera.summary import SessionInfo, SessionSummary, Utterance, summarize

log = logging.getLogger(__name__)

SOURCE_RATE = 48_000  # what voice chats decode Opus to
SOURCE_CHANNELS = 2
FRAME_SAMPLES = SOURCE_RATE // 50  # 20 ms
MAX_GAP_FILL_SECONDS = 1.0  # a longer silence (no packets) starts the speaker's stream afresh
IDLE_SECONDS = 0.6  # no packets from a speaker for this long: they stopped talking, close their utterance
SHED_LOG_INTERVAL_SECONDS = 10.0
MAX_AHEAD_SECONDS = 1.0  # jitter and clock drift a frame's timestamp may show past the session's clock


def pcm_to_float(pcm: bytes) -> np.ndarray:
    """48 kHz interleaved stereo int16 bytes -> mono float32 at 48 kHz."""
    frames = np.frombuffer(pcm, dtype="<i2")
    frames = frames[: frames.size - frames.size % SOURCE_CHANNELS].reshape(-1, SOURCE_CHANNELS)
    return frames.mean(axis=1, dtype=np.float32) / PCM16_SCALE


class SpeakerTrack:
    """One speaker's audio on the session's timeline: queue, resampler, speech detector, kept samples."""

    def __init__(self, speaker: str, stream: Callable[[], SpeechStream], max_queue_frames: int) -> None:
        self.speaker = speaker
        self._new_stream = stream
        # (time in session, PCM) from the receive thread; when full, appending drops the oldest frame
        self.queue: deque[tuple[float, bytes]] = deque(maxlen=max_queue_frames)
        self.late = 0  # frames that arrived after their time had passed, dropped
        self._reset(0)

    def _reset(self, origin: int) -> None:
        """Start a fresh stream whose first 48 kHz sample sits at session sample ``origin`` (48 kHz)."""
        self.origin = origin
        self.received = 0  # 48 kHz samples given to the resampler since ``origin``, silence included
        self.vad = self._new_stream()
        self.resampler = soxr.ResampleStream(SOURCE_RATE, SAMPLE_RATE, 1, dtype="float32")
        self.kept = np.zeros(0, dtype=np.float32)  # 16 kHz stream samples from ``kept_from`` on
        self.kept_from = 0

    @property
    def position(self) -> float:
        """Session time (seconds) just after the last sample received."""
        return (self.origin + self.received) / SOURCE_RATE

    def drain(self, final: bool = False) -> list[tuple[float, float, np.ndarray]]:
        """Everything queued so far -> the speech spans it completed: (start, end) in session seconds, audio.

        Packets carry their time, so the timeline is kept at 48 kHz, before the resampler (which
        emits in bursts): a gap between packets is silence, a packet older than the timeline is
        dropped. ``final`` also closes the span still open (the session is ending).
        """
        spans: list[tuple[float, float, np.ndarray]] = []
        while self.queue:
            at, pcm = self.queue.popleft()
            gap = round(at * SOURCE_RATE) - (self.origin + self.received)
            if gap < -FRAME_SAMPLES // 2:  # its time has passed (its slot was filled): too late to use
                self.late += 1
                continue
            if gap > MAX_GAP_FILL_SECONDS * SOURCE_RATE:
                spans += self._end_stream()
                self._reset(round(at * SOURCE_RATE))
                gap = 0
            audio = pcm_to_float(pcm)
            if gap > FRAME_SAMPLES // 2:  # packets stop while a speaker is silent: that time was silence
                audio = np.concatenate([np.zeros(gap, dtype=np.float32), audio])
            self.received += audio.size
            spans += self._cut(self._push(self.resampler.resample_chunk(audio)))
        if final:
            spans += self._end_stream()
        return spans

    def close_if_idle(self, now: float) -> list[tuple[float, float, np.ndarray]]:
        """Voice clients stop sending when their user stops talking, so silence never arrives to end
        the utterance: after ``IDLE_SECONDS`` without packets, close it."""
        if self.received == 0 or now - self.position < IDLE_SECONDS:
            return []
        return self._end_stream()

    def _end_stream(self) -> list[tuple[float, float, np.ndarray]]:
        """Close the stream (the resampler's tail, the open span); the next one starts where it ended."""
        tail = self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        spans = self._cut(self._push(tail) + self.vad.flush())
        self._reset(self.origin + self.received)
        return spans

    def _push(self, samples: np.ndarray) -> list[tuple[int, int]]:
        self.kept = np.concatenate([self.kept, samples])
        return self.vad.push(samples)

    def _cut(self, spans: list[tuple[int, int]]) -> list[tuple[float, float, np.ndarray]]:
        """Samples of finished spans; then drop the samples no later span can include."""
        lo = self.kept_from
        start = self.origin / SOURCE_RATE
        out = [(start + a / SAMPLE_RATE, start + b / SAMPLE_RATE, self.kept[a - lo : b - lo].copy()) for a, b in spans]
        keep_from = max(lo, self.vad.earliest_open())
        self.kept = self.kept[keep_from - lo :]
        self.kept_from = keep_from
        return out


@dataclass
class SpeakerBaseline:
    """One speaker's baseline within a session, and whether it is also kept in the store."""

    baseline: Baseline | None
    learning: bool


class LiveSession:
    """One listening session: consent-gated input, per-speaker segmentation, analysis, storage."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: SessionStore,
        info: SessionInfo,
        options: LiveOptions,
        consents: Callable[[str], bool],
        skip: Collection[str] = frozenset(),
        on_results: Callable[[list[Utterance]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        baselines: BaselineStore | None = None,
        transcribes: Callable[[str], bool] = lambda speaker: False,
    ) -> None:
        """``consents``: whether a speaker agreed to be analysed (others' audio is dropped as it arrives);
        ``transcribes``: whether they agreed to have their words written down too (asked per utterance)."""
        self.pipeline = pipeline
        self.store = store
        self.info = info
        self.options = options
        self.consents = consents
        self.transcribes = transcribes
        self.skip = skip
        self.on_results = on_results
        self.clock = clock
        self.started = clock()
        self.active = True
        self.tracks: dict[str, SpeakerTrack] = {}
        self.shed = 0  # frames dropped because processing fell behind
        self.dropped_without_consent = 0
        self.clamped = 0  # frames stamped too far ahead of the clock
        self._tracks_lock = threading.Lock()
        self._process_lock = threading.Lock()
        self._last_shed_log = -SHED_LOG_INTERVAL_SECONDS
        self._max_queue_frames = round(options.speaker_buffer_seconds * 50)
        self.baselines = baselines
        self.known: dict[str, SpeakerBaseline] = {}  # each speaker's baseline as this session knows it
        pipeline.plugins.notify("session_started", info)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def feed(self, speaker: str, pcm: bytes, at: float | None = None) -> bool:
        """Queue one frame of a speaker's audio (any thread); False when it was dropped unprocessed.

        ``at`` is the frame's time in seconds from the start of the session (from the packet's
        timestamp where the adapter has one; now otherwise).
        """
        if not self.active:
            return False
        if not self.consents(speaker):
            self.dropped_without_consent += 1
            return False
        track = self.tracks.get(speaker)
        if track is None:
            with self._tracks_lock:
                track = self.tracks.setdefault(speaker, SpeakerTrack(speaker, self._stream, self._max_queue_frames))
        now = self.elapsed()
        if at is None:
            at = now
        elif at > now + MAX_AHEAD_SECONDS:
            at = now + MAX_AHEAD_SECONDS
            self.clamped += 1
        if len(track.queue) == track.queue.maxlen:  # analysis is behind: the oldest frame goes
            self.shed += 1
            if now - self._last_shed_log > SHED_LOG_INTERVAL_SECONDS:
                self._last_shed_log = now
                log.warning("session %d: analysis is behind, %d frames of audio shed so far", self.info.id, self.shed)
        track.queue.append((at, pcm))
        return True

    def _stream(self) -> SpeechStream:
        return self.pipeline.detector.stream(self.options.max_utterance_seconds)

    def process(self, final: bool = False) -> list[Utterance]:
        """Segment what is queued, analyse finished utterances, store them; one caller at a time."""
        with self._process_lock:
            found: list[Utterance] = []
            samples: list[np.ndarray] = []
            now = self.elapsed()
            for track in list(self.tracks.values()):
                if not self.consents(track.speaker):
                    track.queue.clear()  # opted out mid-session: what was queued is dropped, not analysed
                    continue
                for start, end, audio in track.drain(final) + track.close_if_idle(now):
                    found.append(Utterance(track.speaker, start, end, None, None))
                    samples.append(audio)
            if not found:
                return []
            rows = self._analyze(found, samples)
            self.store.add(self.info.id, rows)
        if self.on_results:
            self.on_results(rows)
        return rows

    def _analyze(self, found: list[Utterance], samples: list[np.ndarray]) -> list[Utterance]:
        known = {u.speaker: self._baseline(u.speaker) for u in found}
        segments = [Segment(s, SAMPLE_RATE, u.start, u.end, u.speaker, known[u.speaker].baseline) for u, s in zip(found, samples)]
        outputs, notices = self.pipeline.analyze_segments(segments, self.skip, [self.transcribes(u.speaker) for u in found])
        for notice in notices:
            log.warning("session %d: %s", self.info.id, notice)
        self._learn(found, outputs)
        rows = []
        for i, utterance in enumerate(found):
            results = {name: out.segments[i] for name, out in outputs.items() if out.segments[i] is not None}
            emotion = next((r for r in results.values() if isinstance(r, EmotionResult)), None)
            rows.append(
                Utterance(
                    utterance.speaker, utterance.start, utterance.end,
                    emotion.label if emotion else None,
                    emotion.confidence if emotion else None,
                    dict(emotion.probabilities) if emotion else {},
                    {name: r.to_dict() for name, r in results.items()},
                )
            )  # fmt: skip
        return rows

    def _baseline(self, speaker: str) -> SpeakerBaseline:
        """The speaker's baseline: their stored one (and whether they let it learn) when first heard in
        this session, then grown by each of their utterances here."""
        if speaker not in self.known:
            info = self.pipeline.baseline_info
            stored = self.baselines.get(speaker, info.space) if self.baselines and info else None
            self.known[speaker] = SpeakerBaseline(stored, bool(self.baselines and self.baselines.learning(speaker)))
        return self.known[speaker]

    def _learn(self, found: list[Utterance], outputs: dict[str, PluginOutput]) -> None:
        """Each utterance's observation joins its speaker's baseline for the rest of the session, and the
        stored one where the speaker turned learning on (``/emotion baseline learn``)."""
        results = next((o.segments for o in outputs.values() if any(isinstance(r, EmotionResult) and r.observation for r in o.segments)), [])
        for utterance, result in zip(found, results):
            if not (isinstance(result, EmotionResult) and result.observation):
                continue
            seen = result.observation
            mine = self.known[utterance.speaker]
            if mine.baseline is None or mine.baseline.space != seen.space:
                mine.baseline = Baseline.empty(seen)
            mine.baseline = mine.baseline.add([seen])
            if mine.learning and self.baselines:
                self.baselines.add(utterance.speaker, [seen])

    def baseline_changed(self, speaker: str) -> None:
        """The speaker cleared their baseline or turned learning on or off: what this session knew of it
        is dropped (after a tick in progress), so their next utterance is judged by, and learns into,
        what is stored now."""
        with self._process_lock:
            self.known.pop(speaker, None)

    def forget(self, speaker: str) -> None:
        """Drop a speaker who asked to be forgotten: their track and queued audio, now. Waits for a tick in
        progress, so no row of theirs is stored after this returns (the caller's consent check, changed
        before, keeps new audio out)."""
        with self._process_lock, self._tracks_lock:
            self.tracks.pop(speaker, None)
            self.known.pop(speaker, None)

    async def run(self, stopped: asyncio.Event, workers: Executor | None = None) -> None:
        """Process queued audio every tick (on ``workers``, by default the pipeline's) until ``stopped`` is
        set or the session is too long."""
        loop = asyncio.get_running_loop()
        limit = self.options.max_session_minutes * 60
        last_beat = time.monotonic()
        while not stopped.is_set() and self.elapsed() < limit:
            try:
                await asyncio.wait_for(stopped.wait(), self.options.tick_seconds)
            except asyncio.TimeoutError:
                pass
            try:
                await loop.run_in_executor(workers or self.pipeline.workers, self.process)
                if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:  # other processes: this session is not orphaned
                    last_beat = time.monotonic()
                    await loop.run_in_executor(workers or self.pipeline.workers, self.store.beat, [self.info.id])
            except Exception:
                log.exception("session %d: processing failed; the audio queued so far is lost", self.info.id)

    def finish(self, status: str = ENDED, names: dict[str, str] | None = None) -> SessionSummary:
        """Stop taking audio, analyse what is left, close the session in the store, summarise it."""
        self.active = False
        try:
            self.process(final=True)
        finally:
            self.store.finish(self.info.id, status, self.shed)
        late = sum(track.late for track in self.tracks.values())
        if late:
            log.info("session %d: %d frames arrived after their time and were dropped", self.info.id, late)
        summary = summarize(
            self.info, status, self.elapsed(), self.store.utterances(self.info.id), names, shed=self.shed
        )
        self.pipeline.plugins.notify("session_ended", self.info, summary)
        return summary
