"""Throughput of 1 vs 2 local multi-worker processes (tf.distribute.MultiWorkerMirroredStrategy).

Both train the same small spec for the same epochs on digits; reported as examples per second of
training time. On a 2-core machine the two workers share the cores, so a speed-up is not expected:
this measures the overhead honestly.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from _timing import BIN

from tlc.train.distribute import local_cluster

SPEC = """
name: dist_bench
input: {shape: [8, 8, 1]}
backbone: {type: conv_stack, blocks: [{filters: 32, convs: 2}]}
head: {type: dense, units: [128], classes: 10}
train: {data: {type: digits}, epochs: 6, batch_size: 64, seed: 0, distribute: multi_worker}
"""


def run(workers: int, folder: Path) -> tuple[float, dict]:
    spec = folder / "spec.yaml"
    spec.write_text(SPEC)
    start = time.perf_counter()
    procs = [subprocess.Popen([str(BIN / "tlc"), "train", str(spec), "--runs", str(folder / f"runs{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TF_CONFIG": config})
             for i, config in enumerate(local_cluster(workers))]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"worker failed ({p.returncode}):\n{err[-2000:]}")
    wall = time.perf_counter() - start
    return wall, json.loads((folder / "runs0" / "dist_bench" / "metrics.json").read_text())


def main() -> None:
    results = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            results[workers] = run(workers, Path(tmp))
    for workers, (wall, m) in results.items():
        per_second = m["examples"]["train"] * m["epochs"] / m["train_seconds"]
        print(f"{workers} worker(s): {m['train_seconds']:6.1f} s training, {per_second:8.0f} examples/s, "
              f"val_accuracy {m['final']['val_accuracy']:.4f}, wall {wall:.1f} s")
    ratio = results[1][1]["train_seconds"] / results[2][1]["train_seconds"]
    print(f"speed-up of 2 workers over 1: {ratio:.2f}x (2 cores shared by both workers)")


if __name__ == "__main__":
    main()
