"""Feature caching: training a head on a frozen VGG16 prefix, with and without the cache.

digits upscaled to 32x32x3, VGG16 (random weights) cut at block3_pool and frozen, 8 epochs.
Both runs are whole `tlc train` processes side by side; reports time, final accuracy and peak
memory. Target: speed-up close to the number of epochs (at least 0.8x epochs).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from _timing import REPO, run_python, tlc_code

SPEC = REPO / "bench" / "specs" / "vgg_block3_digits.yaml"


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="tlc-bench-"))
    try:
        results = {}
        for label, extra in (("cached", []), ("uncached", ["--no-cache"])):
            seconds, peak, _ = run_python(tlc_code("train", str(SPEC), "--runs", str(out / label), *extra))
            metrics = json.loads((out / label / "vgg_block3_digits" / "metrics.json").read_text())
            results[label] = (seconds, peak, metrics)
        epochs = results["cached"][2]["epochs"]
        print(f"{'':10s}{'train_seconds':>14s}{'process s':>11s}{'val_accuracy':>14s}{'peak RSS':>11s}")
        for label, (seconds, peak, metrics) in results.items():
            print(f"{label:10s}{metrics['train_seconds']:14.1f}{seconds:11.1f}"
                  f"{metrics['final']['val_accuracy']:14.4f}{peak:9.0f}MB")
        speedup = results["uncached"][2]["train_seconds"] / results["cached"][2]["train_seconds"]
        print(f"training speed-up: {speedup:.1f}x over {epochs} epochs "
              f"(target >= {0.8 * epochs:.1f}x); peak memory ratio cached/uncached: "
              f"{results['cached'][1] / results['uncached'][1]:.2f}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
