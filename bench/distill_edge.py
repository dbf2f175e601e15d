"""The README's walkthrough from a big model to the edge: a zoo teacher, a MobileNetV3Small student
distilled from it with unlabeled photos, and the student exported to int8 LiteRT.

Phone photos (`bench/photos.py`'s 12-MP JPEGs, two classes, a fifth portrait with an EXIF tag):
the teacher (MobileNetV2, `weights: null` here: ImageNet weights cannot be fetched on this
machine) trains on 300 labelled photos; the student (MobileNetV3Small at 96x96) has 40 labelled
photos of its own, and the teacher's 300 as unlabeled images. The student trains alone, then
distilled; both are held out on the same 100 photos. Then `tlc export --quantize int8`. Prints
one table: parameters, file sizes and held-out accuracy of each step.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from _timing import BIN
from photos import make_photos

TEACHER = """
name: teacher
input: {shape: [160, 160, 3]}
backbone: {type: mobilenet_v2, weights: null}
freeze: none
head: {type: dense, pooling: avg, classes: 2}
train:
  data: {type: directory, path: teacher-photos, validation_split: 0.2}
  epochs: EPOCHS
  batch_size: 32
"""

STUDENT = """
name: NAME
input: {shape: [96, 96, 3]}
backbone: {type: mobilenet_v3_small, weights: null}
freeze: none
head: {type: dense, pooling: avg, classes: 2}
train:
  data: {type: directory, path: student-photos, validation_split: 0.715}
  epochs: EPOCHS
  batch_size: 16
DISTILL"""


def link_photos(photos: Path, root: Path) -> None:
    """teacher-photos/ (the first 300, by class), student-photos/ (the next 140: 40 to train on,
    100 held out), unlabeled/ (the teacher's 300, flat, without their classes)."""
    files = sorted(photos.rglob("*.jpg"), key=lambda f: f.name)
    for name, chosen in (("teacher-photos", files[:300]), ("student-photos", files[300:440])):
        for file in chosen:
            target = root / name / file.parent.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file)
    for file in files[:300]:
        (root / "unlabeled").mkdir(exist_ok=True)
        (root / "unlabeled" / file.name).symlink_to(file)


def tlc(root: Path, *args: str) -> tuple[dict | None, float]:
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "tlc"), *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"tlc {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return (json.loads(done.stdout) if "--json" in args else None), time.perf_counter() - started


def metrics(root: Path, name: str) -> dict:
    return json.loads((root / "runs" / name / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--student-epochs", type=int, default=20)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "tlc-bench-edge")
    args = parser.parse_args()
    photos = make_photos(Path(tempfile.gettempdir()) / "tlc-bench-phone", 440)
    root = args.root
    if not (root / "unlabeled").is_dir():
        link_photos(photos, root)
    (root / "teacher.yaml").write_text(TEACHER.replace("EPOCHS", str(args.teacher_epochs)))
    alone = STUDENT.replace("NAME", "student").replace("DISTILL", "")
    distilled = STUDENT.replace("NAME", "distilled").replace(
        "DISTILL", "  distill: {teacher: runs/teacher, temperature: 4.0, alpha: 0.9, unlabeled: unlabeled}\n")
    for name, text in (("student", alone), ("distilled", distilled)):
        (root / f"{name}.yaml").write_text(text.replace("EPOCHS", str(args.student_epochs)))
    seconds = {}
    for name in ("teacher", "student", "distilled"):
        _, seconds[name] = tlc(root, "train", f"{name}.yaml")
        print(f"trained {name} in {seconds[name]:.0f} s: val_accuracy "
              f"{metrics(root, name)['final']['val_accuracy']:.4f}", flush=True)
    exported, _ = tlc(root, "export", "runs/distilled", "--format", "tflite", "--quantize", "int8",
                      "--output", "distilled-int8.tflite", "--max-drop", "1", "--json")
    rows = []
    for name, label in (("teacher", "teacher: MobileNetV2 at 160x160, 300 labelled photos"),
                        ("student", "MobileNetV3Small at 96x96, its 40 labelled photos alone"),
                        ("distilled", "the same, distilled from the teacher (+300 unlabeled photos)")):
        m = metrics(root, name)
        size = (root / "runs" / name / "model.keras").stat().st_size
        rows.append((label, m["params"]["total"], f"{size / 2**20:.1f} MB (.keras)", m["final"]["val_accuracy"]))
    rows.append(("the distilled student as int8 LiteRT", rows[-1][1], f"{exported['bytes'] / 2**10:.0f} KB (.tflite)",
                 exported["accuracy"]))
    print("\nheld out: the teacher on its own 60 validation photos; the students on the same 100 photos")
    print(f"{'model':64s}{'params':>11s}{'file':>20s}{'accuracy':>10s}")
    for label, params, size, accuracy in rows:
        print(f"{label:64s}{params:11,d}{size:>20s}{accuracy:10.4f}")
    m = metrics(root, "distilled")["distill"]
    print(f"teacher's probabilities: {m['images']} images x {m['views']} view(s), {m['probabilities']}; "
          f"the teacher scores {m['teacher_val_accuracy']:.4f} on the students' 100 held-out photos")


if __name__ == "__main__":
    main()
