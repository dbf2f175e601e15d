"""Side-by-side timing helpers shared by the bench scripts."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def time_interleaved(commands: dict[str, tuple[list[str], int]], rounds: int,
                     expect_rc: dict[str, int] | None = None) -> dict[str, tuple[float, float]]:
    """{label: (median, best)} wall time of fresh processes, start-up included.

    `commands` maps a label to (argv, runs per round). Rounds alternate between the commands, so
    both sides see the same machine: on a shared VM the load drifts, and timing one side after
    the other would put the drift into the ratio. The median is typical, the best is the
    machine's floor. The warm-up run may write bytecode even where PYTHONDONTWRITEBYTECODE is
    set (as on CI machines): a user's second run never recompiles sources, so neither do we.
    """
    warm = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times: dict[str, list[float]] = {label: [] for label in commands}
    for argv, _ in commands.values():
        subprocess.run(argv, capture_output=True, cwd=REPO, env=warm)  # bytecode and file caches
    for _ in range(rounds):
        for label, (argv, runs) in commands.items():
            for _ in range(runs):
                start = time.perf_counter()
                done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
                times[label].append(time.perf_counter() - start)
                want = (expect_rc or {}).get(label)
                if want is not None and done.returncode != want:
                    raise SystemExit(f"{argv} exited {done.returncode}, expected {want}:\n{done.stderr}")
    return {label: (statistics.median(t), min(t)) for label, t in times.items()}


PEAK_HOOK = ("import atexit, resource, sys\n"
             "atexit.register(lambda: print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
             " file=sys.stderr))\n")


def run_python(code: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, stdout) of a fresh Python process running `code`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_HOOK + code], capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"exited {done.returncode}:\n{done.stderr[-3000:]}")
    peak = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    return seconds, peak[-1] / 1024, done.stdout


def tlc_code(*args: str) -> str:
    """Python code that runs the tlc CLI with `args` and keeps its exit code."""
    return f"sys.argv = ['tlc', *{list(args)!r}]\nfrom tlc.cli import main\nmain()\n"
