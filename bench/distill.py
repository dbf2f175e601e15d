"""Distillation (`train.distill`) where it pays: few labels, many unlabeled images, a teacher that
saw more labels. Digits 5-9 (scikit-learn's 8x8 digits), per seed a fresh partition:
45 labelled images, 400 unlabeled images, 400 images to test on (never trained on), and the rest
unused. The teacher (a wider conv net) trains on the 45 + 400 images with their labels; the
student (a small conv net) trains on the 45 labelled images alone, then again distilled from the
teacher with the 400 as unlabeled images. Same student, same epochs; accuracy on the 400 test
images for all three, over three seeds, and the time each `tlc train` took.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from _timing import BIN

TEACHER = """
name: teacher
input: {shape: [8, 8, 1]}
backbone: {type: conv_stack, blocks: [{filters: 32, convs: 2, dropout: 0.25}]}
head: {type: dense, units: [128], dropout: 0.25, classes: 5}
train:
  data: {type: npz, path: teacher.npz, validation_split: 0.0}
  epochs: 30
  batch_size: 32
  seed: SEED
"""

STUDENT = """
name: NAME
input: {shape: [8, 8, 1]}
backbone: {type: conv_stack, blocks: [{filters: FILTERS, convs: 1}]}
head: {type: dense, units: UNITS, classes: 5}
train:
  data: {type: npz, path: labelled.npz, validation_split: 0.0}
  epochs: EPOCHS
  batch_size: 16
  optimizer: {learning_rate: 0.003}
  seed: SEED
"""

DISTILL = """  distill: {teacher: runs/teacher, temperature: T, alpha: ALPHA, unlabeled: unlabeled.npz}
"""


def partition(folder: Path, seed: int, labelled: int, unlabeled: int, test: int) -> tuple[np.ndarray, np.ndarray]:
    """Write labelled.npz, unlabeled.npz (x only) and teacher.npz (both, labelled); return the test set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target >= 5
    x, y = (digits.images[keep] / 16.0).astype("float32")[..., None], digits.target[keep] - 5
    order = np.random.default_rng(seed).permutation(len(x))
    # stratified enough: a shuffled order, the labelled part holding 9 images of each class
    by_class = [order[y[order] == c] for c in range(5)]
    first = np.concatenate([ids[:labelled // 5] for ids in by_class])
    rest = np.setdiff1d(order, first)
    rest = rest[np.random.default_rng(seed + 100).permutation(len(rest))]
    pool, held = rest[:unlabeled], rest[unlabeled:unlabeled + test]
    np.savez(folder / "labelled.npz", x=x[first], y=y[first])
    np.savez(folder / "unlabeled.npz", x=x[pool])
    np.savez(folder / "teacher.npz", x=x[np.concatenate([first, pool])], y=y[np.concatenate([first, pool])])
    return x[held], y[held]


def train(folder: Path, text: str, env: dict) -> float:
    spec = folder / (text.split("name: ")[1].split("\n")[0] + ".yaml")
    spec.write_text(text.lstrip())
    started = time.perf_counter()
    subprocess.run([str(BIN / "tlc"), "train", spec.name, "--runs", "runs"], cwd=folder, check=True,
                   capture_output=True, env=env)
    return time.perf_counter() - started


def accuracy(run: Path, x: np.ndarray, y: np.ndarray) -> float:
    from tlc.use.predictor import Predictor
    from tlc.use.run import Run

    return float(np.mean(np.argmax(Predictor.of_run(Run.open(run)).probabilities(x), axis=1) == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40, help="the student's epochs, alone and distilled")
    parser.add_argument("--filters", type=int, default=8, help="the student's convolution filters")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--units", type=int, nargs="*", default=[], help="the student's hidden dense units")
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows = []
    for seed in args.seeds:
        folder = Path(tempfile.mkdtemp(prefix=f"tlc-distill-{seed}-"))
        x, y = partition(folder, seed, labelled=45, unlabeled=400, test=400)
        teacher_s = train(folder, TEACHER.replace("SEED", str(seed)), env)
        student = (STUDENT.replace("SEED", str(seed)).replace("EPOCHS", str(args.epochs))
                   .replace("FILTERS", str(args.filters)).replace("UNITS", str(args.units)))
        alone_s = train(folder, student.replace("NAME", "alone"), env)
        distilled_s = train(folder, student.replace("NAME", "distilled")
                            + DISTILL.replace("T,", f"{args.temperature},").replace("ALPHA", str(args.alpha)), env)
        record = json.loads((folder / "runs" / "distilled" / "metrics.json").read_text())["distill"]
        rows.append({"seed": seed, **{name: accuracy(folder / "runs" / name, x, y)
                                      for name in ("alone", "distilled", "teacher")},
                     "seconds": (alone_s, distilled_s, teacher_s), "unlabeled": record["unlabeled"]})
    print(f"digits 5-9: 45 labelled, 400 unlabeled, 400 test images; student conv net, {args.epochs} epochs; "
          "teacher trained on 445 labels")
    print(f"  {'seed':>4}  {'alone':>7}  {'distilled':>9}  {'teacher':>7}  seconds (alone, distilled, teacher)")
    for r in rows:
        print(f"  {r['seed']:>4}  {r['alone']:7.3f}  {r['distilled']:9.3f}  {r['teacher']:7.3f}  "
              + ", ".join(f"{s:.1f}" for s in r["seconds"]))
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("alone", "distilled", "teacher")}
    print(f"  mean  {mean['alone']:7.3f}  {mean['distilled']:9.3f}  {mean['teacher']:7.3f}  "
          f"(distilled - alone: {mean['distilled'] - mean['alone']:+.3f}; target >= +0.05)")


if __name__ == "__main__":
    main()
