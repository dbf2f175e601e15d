"""Side-by-side timing helpers shared by the bench scripts."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def time_process(argv: list[str], runs: int, expect_rc: int | None = None) -> tuple[float, float]:
    """(median, best) wall time of running `argv` as a fresh process, start-up included.

    Both are reported because a shared VM is noisy: the median is typical, the best is
    the machine's floor.
    """
    subprocess.run(argv, capture_output=True, cwd=REPO)  # warm-up: bytecode and file caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        times.append(time.perf_counter() - start)
        if expect_rc is not None and done.returncode != expect_rc:
            raise SystemExit(f"{argv} exited {done.returncode}, expected {expect_rc}:\n{done.stderr}")
    return statistics.median(times), min(times)


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
