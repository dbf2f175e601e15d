"""Feature caching: training a head on a frozen VGG16 prefix, with and without the cache.

digits upscaled to 32x32x3 (and 64x64x3 with `--size 64`), VGG16 (random weights) cut at
block3_pool and frozen, 8 epochs. Both are whole `tlc train` processes, run alternately
`--rounds` times so that both see the same machine; medians are compared. Reports training
time, final accuracy and peak memory. Target: speed-up close to the number of epochs (at least
0.8x epochs). Also times what the cache is for in practice: re-running the spec with another
head (`rerun`), which reuses the features the first run computed.

Why it cannot reach the number of epochs: the features cost one pass over the data, about what
one uncached epoch costs (its frozen part only runs forward), and the head still has to be traced
and trained. The speed-up is 8E / (E + fixed), so it grows with the cost of an epoch.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from _timing import REPO, run_python, tlc_code

SPECS = {32: REPO / "bench" / "specs" / "vgg_block3_digits.yaml",
         64: REPO / "bench" / "specs" / "vgg_block3_digits64.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, choices=sorted(SPECS), default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = SPECS[args.size]
    out = Path(tempfile.mkdtemp(prefix="tlc-bench-"))
    other_head = out / "other_head.yaml"
    other_head.write_text(f"extends: {spec}\nhead: {{units: [128]}}\n")
    runs: dict[str, list[tuple[float, float, dict]]] = {"cached": [], "rerun": [], "uncached": []}
    try:
        for round_ in range(args.rounds):
            for label, spec_file, folder, extra in (
                    ("cached", spec, out / f"cached{round_}", []),
                    ("rerun", other_head, out / f"cached{round_}", []),
                    ("uncached", spec, out / f"uncached{round_}", ["--no-cache"])):
                _, peak, _ = run_python(tlc_code("train", str(spec_file), "--runs", str(folder), *extra))
                metrics = json.loads((folder / spec.stem / "metrics.json").read_text())
                runs[label].append((metrics["train_seconds"], peak, metrics))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    epochs = runs["cached"][0][2]["epochs"]
    print(f"{args.size}x{args.size} input, {epochs} epochs, {args.rounds} rounds (medians)")
    print(f"{'':10s}{'train_seconds':>14s}{'  (each round)':<24s}{'val_accuracy':>13s}{'peak RSS':>10s}")
    median = {}
    for label, rows in runs.items():
        median[label] = statistics.median(seconds for seconds, _, _ in rows)
        each = " ".join(f"{seconds:.1f}" for seconds, _, _ in rows)
        accuracy = {round(m["final"]["val_accuracy"], 4) for _, _, m in rows}
        peak = statistics.median(p for _, p, _ in rows)
        print(f"{label:10s}{median[label]:14.1f}  ({each}){'':<{max(0, 20 - len(each))}}"
              f"{'/'.join(map(str, sorted(accuracy))):>13s}{peak:8.0f}MB")
    peak_ratio = statistics.median(p for _, p, _ in runs["cached"]) / statistics.median(p for _, p, _ in runs["uncached"])
    print(f"training speed-up: {median['uncached'] / median['cached']:.1f}x over {epochs} epochs "
          f"(target >= 7x; the limit is 8E / (E + head epochs + tracing)); "
          f"peak memory ratio cached/uncached: {peak_ratio:.2f}")
    print(f"re-run with another head, features reused: {median['uncached'] / median['rerun']:.1f}x faster "
          f"than uncached ({runs['rerun'][0][2]['feature_cache'][0]})")


if __name__ == "__main__":
    main()
