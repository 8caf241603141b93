"""A simulated study group: N speakers for M minutes through a live session, on one CPU core.

Every speaker has a few espeak-ng sentences in their own voice; a seeded schedule has them take turns
(2-10 s each, short pauses, sometimes two at once), and each turn arrives as 20 ms frames of 48 kHz
stereo PCM, exactly as ``SeraSink`` hands them to ``LiveSession.feed``. The session is processed every
``tick`` seconds of session time, as ``LiveSession.run`` would, and rows go to a real SQLite file.

Printed: the real-time factor (processing time / session time: below 1 keeps up, on one core), the
share of frames shed, and the process's resident memory every ten session-minutes with its peak, so
a memory ceiling shows as a flat line rather than growth.

    python bench/live_bench.py --speakers 8 --minutes 60
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sera.config import Config, LiveOptions
from sera.live import LiveSession
from sera.pipeline import Pipeline
from sera.sessions import SessionStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the frame simulator is shared with the tests
from tests.voice_sim import Clock, FRAME_SECONDS, load_speech, stereo_frames  # noqa: E402

SENTENCES = [
    "Okay, so the next topic is the derivation of the heat equation from first principles.",
    "Wait, I think you skipped a step there, where does the second derivative come from?",
    "Honestly I am getting really frustrated, we have gone over this three times already.",
    "That is great, I finally get it! Let us do the practice problems now.",
    "Hmm, maybe, but the boundary conditions in problem four look different to me.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+f2", "en-us+m2", "en-gb+f4", "en-us+m4"]


def utterances(folder: Path, speaker: int) -> list[list[bytes]]:
    """Each sentence in this speaker's voice, as ready-made frames."""
    found = []
    for i, text in enumerate(SENTENCES):
        wav = folder / f"{speaker}-{i}.wav"
        voice = VOICES[speaker % len(VOICES)]
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(140 + 10 * (speaker % 4)), "-w", str(wav), text], check=True)
        found.append(stereo_frames(load_speech(str(wav))))
    return found


def schedule(speakers: int, seconds: float, rng: np.random.Generator) -> list[tuple[float, int, int]]:
    """(start, speaker, sentence) turns: mostly one at a time, sometimes overlapping."""
    turns, t = [], 0.5
    while t < seconds:
        speaker = int(rng.integers(speakers))
        turns.append((t, speaker, int(rng.integers(len(SENTENCES)))))
        if rng.random() < 0.2:  # someone talks over them
            other = (speaker + 1 + int(rng.integers(speakers - 1))) % speakers if speakers > 1 else speaker
            turns.append((t + float(rng.uniform(0.5, 2.0)), other, int(rng.integers(len(SENTENCES)))))
        t += float(rng.uniform(4.0, 8.0)) + float(rng.uniform(0.3, 2.0))
    return sorted(turns)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speakers", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--tick", type=float, default=0.5, help="session seconds between processing passes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    args = parser.parse_args()
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    config = Config(workers=1)
    pipeline = Pipeline(config)
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pool = [utterances(folder, s) for s in range(args.speakers)]
        turns = schedule(args.speakers, seconds, np.random.default_rng(args.seed))
        store = SessionStore(folder / "bench.db")
        info = store.start("bench", "voice", "0")
        clock = Clock()  # the session runs on simulated time, as fast as the machine can feed it
        live = LiveSession(pipeline, store, info, LiveOptions(enabled=True, tick_seconds=args.tick), consents=lambda s: True,
                           clock=clock)  # fmt: skip
        baseline = rss_mb()
        print(f"{args.speakers} speakers, {args.minutes:.0f} min session, {len(turns)} turns; RSS after loading models {baseline:.0f} MB")
        print("| session min | frames fed | utterances | processing s | RSS MB |")
        print("|---|---|---|---|---|")
        active: list[tuple[int, list[bytes], int]] = []  # (speaker, frames, next index)
        next_turn, frames_fed, busy, feed_time = 0, 0, 0.0, 0.0
        steps = int(seconds / FRAME_SECONDS)
        per_tick = max(1, round(args.tick / FRAME_SECONDS))
        peak = baseline
        for step in range(steps):
            now = clock.now = step * FRAME_SECONDS
            while next_turn < len(turns) and turns[next_turn][0] <= now:
                _, speaker, sentence = turns[next_turn]
                active.append((speaker, pool[speaker][sentence], 0))
                next_turn += 1
            started = time.perf_counter()
            still = []
            for speaker, frames, i in active:
                live.feed(str(speaker), frames[i], now)
                frames_fed += 1
                if i + 1 < len(frames):
                    still.append((speaker, frames, i + 1))
            active = still
            feed_time += time.perf_counter() - started
            if step % per_tick == per_tick - 1:
                started = time.perf_counter()
                live.process()
                busy += time.perf_counter() - started
                peak = max(peak, rss_mb())
            if step % int(600 / FRAME_SECONDS) == 0 and step:
                rows = len(store.utterances(info.id))
                print(f"| {now / 60:.0f} | {frames_fed} | {rows} | {busy:.1f} | {rss_mb():.0f} |", flush=True)
        started = time.perf_counter()
        summary = live.finish()
        busy += time.perf_counter() - started
        rows = len(summary.timeline)
        print(f"| {args.minutes:.0f} (end) | {frames_fed} | {rows} | {busy:.1f} | {rss_mb():.0f} |")
        talk = summary.talk_seconds
        print()
        print(f"processing: {busy:.1f} s for {seconds:.0f} s of session ({talk:.0f} s of speech analysed): "
              f"real-time factor {busy / seconds:.3f} on one core ({seconds / busy:.0f}x faster than real time)")  # fmt: skip
        print(f"receive-side feed(): {feed_time / max(frames_fed, 1) * 1e6:.1f} us per frame")
        print(f"frames shed: {live.shed} of {frames_fed} ({live.shed / max(frames_fed, 1):.2%})")
        print(f"peak RSS during the session: {peak:.0f} MB ({peak - baseline:+.0f} MB over the loaded models)")
        store.close()
    pipeline.close()


if __name__ == "__main__":
    main()
