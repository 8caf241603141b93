"""``sera listen [INPUT]``: a live session on this machine, through the same engine as a voice channel.

ffmpeg reads the default microphone (PulseAudio, else ALSA) or any file or stream at its own pace
(``-re``: real time; ``--speed`` plays a file faster) and writes what voice chats decode to, 20 ms frames
of 48 kHz stereo 16-bit PCM, which go into a ``LiveSession`` exactly as a Discord member's frames do:
speech detection, analysis (the transcript too, where the plugin is enabled: on your own machine,
enabling it is your choice), each utterance stored the moment it is analysed, the summary at the end.
The session's clock is the input's own (the frames read so far), so a busy machine never cuts an
utterance short.

Each utterance is printed as it ends (its time, emotion with bars, words); on a terminal a status line
below them is redrawn in place, and piped output is plain lines. Ctrl-C ends the session (a second one
stops at once); ``--output DIR`` writes its chart, meeting notes (Markdown) and summary (JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TextIO

from sera.audio import ffmpeg_binary
from sera.config import Config
from sera.errors import SeraError
from sera.live import FRAME_SAMPLES, SOURCE_CHANNELS, SOURCE_RATE, LiveSession
from sera.minutes import markdown
from sera.pipeline import Pipeline
from sera.sessions import ENDED, INTERRUPTED, SessionStore
from sera.summary import SessionSummary, Utterance, clock

log = logging.getLogger(__name__)

FRAME_BYTES = FRAME_SAMPLES * SOURCE_CHANNELS * 2
FRAME_SECONDS = FRAME_SAMPLES / SOURCE_RATE
SPACE = "local"  # the sessions of this machine, beside Discord servers' in the same database
STATUS_SECONDS = 0.25  # how often the terminal's status line is redrawn
MICROPHONE = "microphone"
BAR_WIDTH = 20


def microphone() -> list[str]:
    """ffmpeg's input options for the default microphone: PulseAudio (PipeWire serves it too) where a
    server answers, else ALSA's default device; one clear error where there is neither."""
    devices = subprocess.run([ffmpeg_binary(), "-hide_banner", "-devices"], capture_output=True, text=True).stdout
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if " pulse " in devices and (os.environ.get("PULSE_SERVER") or (runtime and Path(runtime, "pulse", "native").exists())):
        return ["-f", "pulse", "-i", "default"]
    if " alsa " in devices and Path("/dev/snd").is_dir():
        return ["-f", "alsa", "-i", "default"]
    raise SeraError("no microphone here (no PulseAudio server and no ALSA sound device); give a file or stream: sera listen FILE")


def ffmpeg_command(source: str | None, speed: float) -> list[str]:
    """ffmpeg reading ``source`` (None: the microphone) at ``speed`` times real time, writing 20 ms frames
    of 48 kHz stereo PCM to stdout."""
    if source is None:
        reading = microphone()
    else:
        if "://" not in source and not Path(source).exists():
            raise SeraError(f"{source}: no such file")
        reading = ["-re", "-i", source] if speed == 1 else ["-readrate", f"{speed:g}", "-i", source]
    return [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", *reading, "-vn", "-map", "0:a:0",
            "-f", "s16le", "-ac", str(SOURCE_CHANNELS), "-ar", str(SOURCE_RATE), "-"]  # fmt: skip


class Input:
    """The ffmpeg process and the frames read from it so far (the session's clock). Its messages go to a
    temporary file, not a pipe: a long session's errors never fill a pipe nobody reads and stall it."""

    def __init__(self, command: list[str]) -> None:
        self.messages = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.messages)
        self.frames = 0
        self.first = self.process.stdout.read(FRAME_BYTES)  # an input ffmpeg cannot read fails here, before any session
        if len(self.first) < FRAME_BYTES:
            self.process.wait()
            reason = self.said().splitlines()
            self.close()
            raise SeraError(f"ffmpeg could not read it: {reason[-1] if reason else 'no audio in it'}")

    def said(self) -> str:
        """What ffmpeg wrote on stderr so far."""
        self.messages.seek(0)
        return self.messages.read().decode(errors="replace").strip()

    def seconds(self) -> float:
        return self.frames * FRAME_SECONDS

    def pump(self, live: LiveSession, speaker: str, done: threading.Event) -> None:
        """Every frame into the session, stamped with its place in the input; ``done`` at the end."""
        frame = self.first
        while len(frame) == FRAME_BYTES and not done.is_set():
            live.feed(speaker, frame, self.seconds())
            self.frames += 1
            frame = self.process.stdout.read(FRAME_BYTES)
        done.set()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.messages.close()


class Display:
    """Utterances as they end; on a terminal, a status line under them, redrawn in place."""

    def __init__(self, out: TextIO, what: str) -> None:
        self.out = out
        self.what = what
        self.tty = out.isatty()
        self.count = 0
        self._lock = threading.Lock()

    def utterances(self, rows: list[Utterance]) -> None:
        """Called on a worker thread with each batch of stored utterances."""
        with self._lock:
            self._clear()
            for row in rows:
                self.count += 1
                print(utterance_line(row), file=self.out)
            self.out.flush()

    def status(self, seconds: float) -> None:
        if not self.tty:
            return
        with self._lock:
            self.out.write(f"\r\x1b[K● {clock(seconds)} listening to {self.what} · {self.count} utterances · Ctrl-C ends the session")
            self.out.flush()

    def _clear(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[K")

    def end(self) -> None:
        with self._lock:
            self._clear()
            self.out.flush()


def utterance_line(row: Utterance) -> str:
    """``0:03-0:06  happy 71% ██████████████······  “what was said”``"""
    when = f"{clock(row.start)}-{clock(row.end)}"
    if row.label is None:
        mood = "no emotion".ljust(34)
    else:
        filled = round((row.confidence or 0) * BAR_WIDTH)
        mood = f"{row.label} {row.confidence or 0:.0%}".ljust(13) + " " + "█" * filled + "·" * (BAR_WIDTH - filled)
    return f"{when:>11}  {mood}" + (f"  “{row.words}”" if row.words else "")


def listen(config: Config, pipeline: Pipeline, source: str | None, speaker: str, speed: float, output: Path | None,
           out: TextIO | None = None) -> SessionSummary:  # fmt: skip
    """One session from ``source`` (None: the microphone) until it ends or Ctrl-C, printed on ``out``
    (default: stdout); its summary."""
    feed = Input(ffmpeg_command(source, speed))
    store = SessionStore(config.database_path())
    try:
        what = source or MICROPHONE
        info = store.start(SPACE, what, speaker)
        display = Display(out or sys.stdout, what)
        live = LiveSession(pipeline, store, info, config.live, consents=lambda _: True, on_results=display.utterances,
                           clock=feed.seconds, transcribes=lambda _: True)  # fmt: skip
        log.info("session %d: listening to %s", info.id, what)
        try:
            status = asyncio.run(_run(live, feed, speaker, display))
        except BaseException:  # a second Ctrl-C, or a failure: what was analysed is kept, the session closed as cut short
            store.finish(info.id, INTERRUPTED, live.shed)
            raise
        summary = live.finish(status, {speaker: speaker})
        display.end()
    finally:
        feed.close()
        store.close()
    if output is not None:
        write_outputs(pipeline, summary, output)
    return summary


async def _run(live: LiveSession, feed: Input, speaker: str, display: Display) -> str:
    """Ticks until the input ends (ENDED) or Ctrl-C (ENDED too: the person chose to stop); the pump runs on
    a thread of its own, never on the loop."""
    loop = asyncio.get_running_loop()
    stopped, done = asyncio.Event(), threading.Event()
    pump = threading.Thread(target=feed.pump, args=(live, speaker, done), name="sera-listen-input", daemon=True)
    pump.start()
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    ticking = asyncio.ensure_future(live.run(stopped))
    try:
        while not stopped.is_set() and not done.is_set() and not ticking.done():
            display.status(feed.seconds())
            try:
                await asyncio.wait_for(stopped.wait(), STATUS_SECONDS)
            except asyncio.TimeoutError:
                pass
    finally:
        loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C stops at once
        input_ended = done.is_set() and not stopped.is_set()  # not Ctrl-C, nor the session's time limit
        done.set()
        stopped.set()
        await ticking
    pump.join(timeout=5)
    if not input_ended or feed.process.wait() == 0:
        return ENDED
    log.warning("the input stopped early: %s", feed.said()[-300:])
    return INTERRUPTED  # a stream that broke off: summarised all the same, marked as cut short


def write_outputs(pipeline: Pipeline, summary: SessionSummary, folder: Path) -> None:
    """The session's chart (where the chart reporter is installed), meeting notes and summary in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"session-{summary.session.id}"
    (folder / f"{stem}-notes.md").write_text(markdown(summary), encoding="utf-8")
    (folder / f"{stem}.json").write_text(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    try:
        (folder / f"{stem}.png").write_bytes(pipeline.plugins.render_summary("chart", summary))
    except SeraError as error:  # no [chart] extra, or the chart failed: the notes and summary are written all the same
        log.warning("no chart for session %d: %s", summary.session.id, error)

