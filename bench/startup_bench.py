"""How long does a person wait on the ``sera`` command, from a fresh install?

For each git revision given (default: the working tree), builds the wheel from the tracked files,
installs it into a fresh virtual environment outside the checkout, and times, as whole processes:

- the first ``sera analyze`` of the bundled sample after installing (what compilation caches, numba
  and the like make a new user wait for);
- then ``sera --version`` and ``sera analyze`` of the sample, median of ``--runs`` (min and max beside);
- ``sera run`` from start to ready, with Discord's login and gateway faked (no network, no token
  checked): loading models, extensions and the database, as a restart costs.

Revisions are measured one after the other in one run, so their figures compare on this machine:

    python bench/startup_bench.py --runs 5 HEAD 7ee7de6
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "voice-note.ogg"

# ``sera run`` with discord.py's login and gateway replaced: setup_hook runs (extensions, cogs), then
# the bot is "ready" at once; the time to that moment is printed, then the bot closes.
FAKE_RUN = """
import asyncio, os, sys, time
import discord
started = float(sys.argv[1])

async def login(self, token):
    await self._async_setup_hook()
    await self.setup_hook()

async def connect(self, *, reconnect=True):
    print(f"ready {time.time() - started:.3f}", flush=True)
    await self.close()

discord.Client.login = login
discord.Client.connect = discord.AutoShardedClient.connect = connect
from sera.adapters.cli import main
sys.exit(main(["--config", sys.argv[2], "run"]))
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def install(revision: str | None, work: Path) -> Path:
    """A fresh virtual environment with the wheel of ``revision`` (None: the working tree) installed."""
    source = work / "src"
    source.mkdir()
    if revision is None:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
        for name in filter(None, files):
            target = source / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / name.decode()).is_file():
                shutil.copy2(ROOT / name.decode(), target)
    else:
        archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    for step in (["wheel", "--no-deps", "--wheel-dir", str(work / "dist"), str(source)], ["install", str(work / "dist" / "*.whl")]):
        done = subprocess.run(" ".join([*pip, *step]), shell=True, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pip {step[0]} failed:\n{done.stderr[-2000:]}")
    return venv


def measure(revision: str | None, runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="sera-startup-") as folder:
        work = Path(folder)
        venv = install(revision, work)
        sera = str(venv / "bin" / "sera")
        env = {**os.environ, "XDG_DATA_HOME": str(work / "data"), "XDG_STATE_HOME": str(work / "state"),
               "XDG_CACHE_HOME": str(work / "cache"), "DISCORD_TOKEN": "bench.not.a.token"}  # fmt: skip
        first = timed([sera, "analyze", str(SAMPLE)], env)
        version = [timed([sera, "--version"], env) for _ in range(runs)]
        analyze = [timed([sera, "analyze", str(SAMPLE)], env) for _ in range(runs)]
        config = work / "sera.yaml"
        config.write_text(f"discord:\n  database: {work / 'sera.db'}\n  sync_commands: false\n")
        ready = []
        for _ in range(runs):
            done = subprocess.run([str(venv / "bin" / "python"), "-c", FAKE_RUN, str(time.time()), str(config)],
                                  capture_output=True, text=True, env=env)  # fmt: skip
            line = next((l for l in done.stdout.splitlines() if l.startswith("ready ")), None)
            if line is None:
                raise SystemExit(f"sera run never got ready:\n{done.stderr[-2000:]}")
            ready.append(float(line.split()[1]))
        return {"first": first, "version": version, "analyze": analyze, "ready": ready}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revisions", nargs="*", help="git revisions to compare (default: the working tree)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for revision in args.revisions or [None]:
        figures = measure(revision, args.runs)
        print(f"{revision or 'working tree'}:")
        print(f"  first sera analyze after install   {figures['first']:.2f} s")
        print(f"  sera --version                      {spread(figures['version'])}")
        print(f"  sera analyze (the 9 s sample)       {spread(figures['analyze'])}")
        print(f"  sera run, start to ready (faked)    {spread(figures['ready'])}")


if __name__ == "__main__":
    main()
