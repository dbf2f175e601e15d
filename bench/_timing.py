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
