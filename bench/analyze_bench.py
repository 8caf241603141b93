"""How fast is the pipeline, stage by stage, on one CPU core?

Makes N seconds of espeak-ng speech (with pauses), encodes it as an Opus voice note, and times each
stage on it: decode, speech detection, the default emotion analyzer (Whisper log-Mel and the encoder
graph) and the seed paper's CNN (its log-Mel and network) side by side, prosody, and the whole
``Pipeline.analyze`` (with the default analyzers). Prints audio-seconds per wall-second (the real-time factor's inverse: higher is
faster, above 1 is faster than real time) and the process's peak RSS after each stage. All stages run
in one process, side by side, so their ratios are comparable even on a noisy machine.

    python bench/analyze_bench.py --seconds 60 --repeat 3
    python bench/analyze_bench.py --compare old.onnx  # e.g. git show v1:models/sera-emotion-whisper.onnx > old.onnx
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sera.audio import SAMPLE_RATE, decode
from sera.config import Config
from sera.model import WhisperEmotionModel, model_input, whisper_input
from sera.pipeline import Pipeline
from sera.plugin import Segment

TEXT = (
    "I really did not expect the exam to be this hard. We studied for weeks, and still the last "
    "question made no sense to me at all. Anyway, let us meet on Friday and go through it together."
)


def make_note(seconds: float, folder: Path) -> Path:
    wav = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), TEXT], check=True)
    speech = decode(wav)
    pause = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    unit = np.concatenate([speech, pause])
    samples = np.tile(unit, int(np.ceil(seconds * SAMPLE_RATE / unit.size)))[: int(seconds * SAMPLE_RATE)]
    note = folder / "note.ogg"
    pcm = (samples * 32767).astype("<i2").tobytes()
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "-",
         "-ar", "48000", "-c:a", "libopus", "-b:a", "24k", str(note)],
        input=pcm, check=True,
    )  # fmt: skip
    return note


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def compared(path: Path | None, segments: list[Segment]) -> list[tuple[str, Callable[[], object]]]:
    """The stage of another Whisper model file, log-Mel and graph, on the same segments."""
    if path is None:
        return []
    other = WhisperEmotionModel(path)
    return [(f"{path.name}: log-Mel and graph", lambda: [other.run(whisper_input(s.samples, other.info.features)) for s in segments])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length to analyse")
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the fastest counts")
    parser.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    parser.add_argument("--compare", type=Path, help="another Whisper model file (e.g. a previous release's), timed on the same segments")
    args = parser.parse_args()
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    config = Config(plugins={"emotion_cnn": {"enabled": True}})
    pipeline = Pipeline(config)
    analyzers = {a.name: a for a in pipeline.plugins.analyzers}
    whisper, cnn, prosody = analyzers["emotion_whisper"], analyzers["emotion_cnn"], analyzers["prosody"]
    cnn_params, whisper_params = cnn.model.info.features, whisper.model.info.features
    default = Pipeline(Config())  # what `sera analyze` runs: the Whisper model and prosody
    with tempfile.TemporaryDirectory() as tmp:
        note = make_note(args.seconds, Path(tmp))
        samples = decode(note)
        spans = pipeline.detector.segments(samples)
        segments = [Segment(samples[a:b], SAMPLE_RATE, a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in spans]
        mels = np.concatenate([model_input(s.samples, cnn_params) for s in segments])
        whisper_mels = [whisper_input(s.samples, whisper_params) for s in segments]
        stages: list[tuple[str, Callable[[], object]]] = [
            ("decode (ffmpeg, Opus 48 kHz)", lambda: decode(note)),
            ("speech detection (Silero VAD)", lambda: pipeline.detector.segments(samples)),
            ("emotion_whisper: Whisper log-Mel", lambda: [whisper_input(s.samples, whisper_params) for s in segments]),
            (f"emotion_whisper: graph ({len(segments)} segments)", lambda: [whisper.model.run(m) for m in whisper_mels]),
            *compared(args.compare, segments),
            ("emotion_cnn: log-Mel", lambda: [model_input(s.samples, cnn_params) for s in segments]),
            (f"emotion_cnn: network ({len(mels)} windows)", lambda: cnn.model.probabilities(mels)),
            ("prosody analyzer", lambda: prosody.analyze(segments)),
            ("end to end (Pipeline.analyze, default analyzers)", lambda: default.analyze(note)),
        ]
        cores = "all cores" if args.all_cores else "one core"
        print(f"{args.seconds:.0f} s of audio, {len(segments)} speech segments, best of {args.repeat}, {cores}")
        print(f"{'stage':<50} {'wall s':>8} {'audio s / wall s':>17} {'peak RSS MB':>12}")
        walls = {}
        for name, work in stages:
            walls[name] = wall = best_of(args.repeat, work)
            print(f"{name:<50} {wall:8.3f} {args.seconds / wall:17.1f} {peak_rss_mb():12.0f}")
        decoding = walls[stages[0][0]]
        emotion = walls[stages[2][0]] + walls[stages[3][0]]
        print(f"emotion_whisper (log-Mel and graph) / decode: {emotion / decoding:.2f}")
        if args.compare:
            print(f"{args.compare.name} (log-Mel and graph) / decode: {walls[stages[4][0]] / decoding:.2f}")
        print(f"emotion_whisper front end, one 3 s utterance (log-Mel and graph): {whisper.model.latency_ms(3.0):.1f} ms (median of 50)")
        print(f"emotion_cnn, one {cnn_params.window_seconds:.0f} s window through the network: {cnn.model.window_latency_ms():.2f} ms (median of 200)")
    default.close()
    pipeline.close()


if __name__ == "__main__":
    main()
