"""How many voice notes a second does one bot process answer, and does a second worker help?

Feeds the same Opus voice note (espeak-ng speech, ``--seconds`` long) to ``Pipeline.analyze_async``
from an asyncio loop, ``--notes`` of them at once, as a burst of users would, with 1 worker, 2 worker
threads and 2 worker processes (``worker_processes``) side by side in one run (the order rotates over
``--rounds``, so drift on a shared machine hits all). While each burst runs, a task that sleeps 10 ms
at a time measures how late the loop wakes it: the lag every Discord heartbeat and reply would see.
Prints notes per second, each against 1 worker, and the loop lag's p50/p99.

    python bench/throughput_bench.py --seconds 8 --notes 24 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sera.config import Config
from sera.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).parent))
from analyze_bench import make_note  # noqa: E402  (the same note as the stage benchmark)

PROBE_SECONDS = 0.01


async def burst(pipeline: Pipeline, note: bytes, count: int) -> tuple[float, list[float]]:
    """Seconds to answer ``count`` notes sent at once, and the loop's lateness samples meanwhile."""
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while not done.is_set():
            start = loop.time()
            await asyncio.sleep(PROBE_SECONDS)
            lags.append(loop.time() - start - PROBE_SECONDS)

    watcher = asyncio.create_task(probe())
    started = time.perf_counter()
    reports = await asyncio.gather(*(pipeline.analyze_async(note, "note.ogg") for _ in range(count)))
    elapsed = time.perf_counter() - started
    done.set()
    await watcher
    assert all(r.emotion() is not None for r in reports)
    return elapsed, lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each voice note")
    parser.add_argument("--notes", type=int, default=24, help="notes per burst")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        note = make_note(args.seconds, Path(folder)).read_bytes()
    setups = {"1 worker": replace(Config(), workers=1), "2 threads": replace(Config(), workers=2),
              "2 processes": replace(Config(), workers=2, worker_processes=True)}  # fmt: skip
    pipelines = {name: Pipeline(config) for name, config in setups.items()}
    for pipeline in pipelines.values():  # warm: start processes, build filters, JIT-compile
        pipeline.start_workers()
        asyncio.run(burst(pipeline, note, 4))
    names = list(setups)
    rates: dict[str, list[float]] = {name: [] for name in names}
    lags: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            elapsed, sampled = asyncio.run(burst(pipelines[name], note, args.notes))
            rates[name].append(args.notes / elapsed)
            lags[name] += sampled
    for pipeline in pipelines.values():
        pipeline.close()

    base = statistics.median(rates["1 worker"])
    print(f"{os.cpu_count()} cores; {args.notes} notes of {args.seconds:.0f} s Opus speech per burst, {args.rounds} rounds each")
    print(f"{'':<12} {'notes/s':>8} {'vs 1':>6} {'audio s/s':>10} {'loop lag p50':>13} {'p99':>8} {'max':>8}")
    for name in names:
        rate = statistics.median(rates[name])
        p50, p99 = np.percentile(lags[name], [50, 99]) * 1000
        print(f"{name:<12} {rate:>8.2f} {rate / base:>5.2f}x {rate * args.seconds:>10.1f} {p50:>10.1f} ms "
              f"{p99:>5.1f} ms {max(lags[name]) * 1000:>5.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
