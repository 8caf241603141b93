"""What does the decoder's sandbox cost per decode?

Times, interleaved in one process so that the ratios hold on a noisy machine, on the bundled voice note
and a 60 s Opus note:

- ``bare``: one ffmpeg, run directly, with the decode's own arguments (no sandbox, no probe): the floor;
- ``sandboxed``: the same ffmpeg through ``sera.sandbox`` (limits, Landlock, seccomp);
- ``decode``: ``sera.audio.decode`` as every voice note goes, the confined ffprobe check and the
  confined ffmpeg.

Prints the median and spread of each in milliseconds and each one's ratio to ``bare``.

    python bench/sandbox_bench.py --repeat 30
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sera.audio import SAMPLE_RATE, Limits, decode, ffmpeg_binary, memory_file, sandboxed

ROOT = Path(__file__).resolve().parent.parent
ARGUMENTS = ["-nostdin", "-hide_banner", "-loglevel", "error", "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "pipe:1"]


def long_note(folder: Path, seconds: int) -> Path:
    note = folder / "long.ogg"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", str(ROOT / "examples" / "voice-note.ogg"),
                    "-t", str(seconds), "-c:a", "libopus", "-b:a", "32k", str(note)], check=True)  # fmt: skip
    return note


def runners(data: bytes) -> dict[str, Callable[[], object]]:
    limits = Limits()

    def ffmpeg(confined: bool) -> Callable[[], object]:
        def run() -> object:
            with memory_file(data) as (url, _, fd):
                command = [ffmpeg_binary(), "-i", url, *ARGUMENTS]
                return subprocess.run(sandboxed(command[0], command[1:], limits) if confined else command, pass_fds=(fd,),
                                      capture_output=True, check=True)  # fmt: skip

        return run

    return {"bare": ffmpeg(False), "sandboxed": ffmpeg(True), "decode": lambda: decode(data, limits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=60, help="length of the long note")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        notes = {"sample note (9 s)": (ROOT / "examples" / "voice-note.ogg").read_bytes(),
                 f"{options.seconds} s Opus note": long_note(Path(folder), options.seconds).read_bytes()}  # fmt: skip
        for name, data in notes.items():
            timings: dict[str, list[float]] = {}
            run = runners(data)
            for _ in range(options.repeat):
                for kind, call in run.items():  # interleaved: the machine's noise falls on all of them alike
                    started = time.perf_counter()
                    call()
                    timings.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
            print(f"{name}, {options.repeat} runs each (ms: median [min-max], ratio of medians to bare)")
            floor = statistics.median(timings["bare"])
            for kind, values in timings.items():
                median = statistics.median(values)
                print(f"  {kind:<10} {median:7.1f} [{min(values):6.1f}-{max(values):6.1f}]  {median / floor:5.2f}x")


if __name__ == "__main__":
    main()
