"""Cached augmented views vs augmenting on the fly, on a frozen VGG16 prefix.

digits upscaled to 32x32x3, VGG16 (random weights) cut at block3_pool and frozen, a dense head,
8 epochs, flips/rotations/zoom/contrast. On the fly, every epoch augments every image and runs it
through the frozen prefix again; with `augment.views: 2`, two augmented views of every training
image go through the prefix once (stored on disk) and epoch e trains the head on view e mod 2.
Both are whole `tlc train` processes, alternated `--rounds` times; medians are compared.
Target: views at least 1.8x faster, final validation accuracy within 0.05. Also reports what the
views cost on disk, and a `views: 4` run (more variety, more disk).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from _timing import REPO, run_python, tlc_code

BASE = REPO / "bench" / "specs" / "vgg_block3_digits.yaml"
AUGMENT = "  augment: {{flip: horizontal, rotation: 0.1, zoom: 0.1, contrast: 0.2{views}}}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tlc-bench-views-"))
    specs = {}
    for label, views in (("on the fly", ""), ("views: 2", ", views: 2"), ("views: 4", ", views: 4")):
        path = out / f"{label.replace(':', '').replace(' ', '_')}.yaml"
        path.write_text(BASE.read_text() + AUGMENT.format(views=views))
        specs[label] = path
    runs: dict[str, list[dict]] = {label: [] for label in specs}
    try:
        for round_ in range(args.rounds):
            for label, path in specs.items():
                folder = out / f"runs{round_}-{path.stem}"
                run_python(tlc_code("train", str(path), "--runs", str(folder)))
                metrics = json.loads((folder / "vgg_block3_digits" / "metrics.json").read_text())
                runs[label].append(metrics)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"{'':12s}{'train_seconds':>14s}{'val_accuracy':>14s}  feature cache")
    median = {}
    for label, rows in runs.items():
        median[label] = statistics.median(m["train_seconds"] for m in rows)
        accuracy = statistics.median(m["final"]["val_accuracy"] for m in rows)
        note = rows[0]["feature_cache"][0].split("); ", 1)[-1] if "views" in label else rows[0]["feature_cache"][0]
        print(f"{label:12s}{median[label]:14.1f}{accuracy:14.4f}  {note}")
    fly = statistics.median(m["final"]["val_accuracy"] for m in runs["on the fly"])
    two = statistics.median(m["final"]["val_accuracy"] for m in runs["views: 2"])
    print(f"views: 2 vs on the fly: {median['on the fly'] / median['views: 2']:.1f}x faster (target >= 1.8x), "
          f"val accuracy {two - fly:+.4f} (target within 0.05)")


if __name__ == "__main__":
    main()
