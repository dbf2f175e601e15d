"""Tags and numbers: tlc vs a hand-written Keras 3 script, whole processes side by side.

Generates `--photos` (default 1,200) 1024x768 JPEGs, each with 2 to 5 of six shapes (circle,
square, triangle, diamond, cross, bar) over a cluttered gradient, a fifth of them portrait (stored
landscape with EXIF orientation 6), and labels.csv: `tags` (the shapes present, space-separated)
and `size` (the largest shape's radius, in % of the short side). A MobileNetV2 trained whole on
400 other such photos stands in for ImageNet weights (offline; random frozen weights give
features too alike to learn from). Then, each as a fresh process:
- `tlc train` of that MobileNetV2 frozen at 160x160 with a dense head, 10 epochs:
  multi_label with tuned thresholds, and regression of `size` (the decoded-image store empty);
- the Keras script a user writes instead: tf.data from the CSV (read, decode, resize, batch),
  the same backbone frozen and head, binary cross-entropy or MSE (on standardised targets, as a
  careful user does), `fit` for 10 epochs on the same training files (tlc's split.json).
Both models are then scored on the same held-out test files with scikit-learn (mAP, MAE), and
tlc's tuned thresholds' macro F1 is compared with 0.5's (a second tlc run, its features read
back from the cache). Prints wall time, peak RSS and the metrics, and the ratios the issue
targets: metrics equal within noise, time >= 3x faster, memory <= Keras's.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from _timing import REPO
from photos import save_as_phone

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "bar")
WIDTH, HEIGHT = 1024, 768
SPEC = """name: {name}
task: {task}
input: {{shape: [160, 160, 3]}}
backbone: {{type: mobilenet_v2, weights: {weights}}}
freeze: all
head: {head}
train:
  data: {{type: csv, path: {csv}, validation_split: 0.2, test_split: 0.2{extra}}}
  epochs: {epochs}
  batch_size: 32
  seed: 0
"""
KERAS = """
import csv, json, os, sys; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
from sklearn.metrics import average_precision_score, mean_absolute_error
split = json.load(open({split!r}))
held = {{part: [f for f, _ in split[part + "_files"]] for part in ("val", "test")}}
rows = list(csv.DictReader(open({csv!r})))
folder = os.path.dirname({csv!r})
names = {names!r}
def target(row):
    if {multi_label}:
        return [float(n in row["tags"].split()) for n in names]
    return [float(row["size"])]
everything = {{os.path.join(folder, r["path"]): target(r) for r in rows}}
skip = set(held["val"]) | set(held["test"])
train_files = [f for f in everything if f not in skip]
y_train = np.array([everything[f] for f in train_files], "float32")
mean, std = y_train.mean(0), y_train.std(0)
def scaled(y):
    return y if {multi_label} else (y - mean) / std
def dataset(files, shuffle):
    y = scaled(np.array([everything[f] for f in files], "float32"))
    data = tf.data.Dataset.from_tensor_slices((files, y))
    if shuffle:
        data = data.shuffle(len(files), seed=0)
    def load(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, (160, 160)), label
    return data.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(32).prefetch(tf.data.AUTOTUNE)
class Epochs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print("EPOCH", epoch, flush=True)
keras.utils.set_random_seed(0)
base = keras.applications.MobileNetV2(input_shape=(160, 160, 3), include_top=False, weights=None)
base.load_weights({weights!r})
base.trainable = False
inputs = keras.Input((160, 160, 3))
x = base(keras.applications.mobilenet_v2.preprocess_input(inputs), training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
if {multi_label}:
    outputs = keras.layers.Dense(len(names), activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(curve="PR", multi_label=True, num_labels=len(names))])
else:
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
model.fit(dataset(train_files, True), validation_data=dataset(held["val"], False), epochs={epochs}, verbose=0,
          callbacks=[Epochs()])
predicted = model.predict(dataset(held["test"], False), verbose=0)
truth = np.array([everything[f] for f in held["test"]], "float32")
if {multi_label}:
    score = float(np.mean([average_precision_score(truth[:, j], predicted[:, j]) for j in range(len(names))
                           if truth[:, j].any()]))
else:
    score = float(mean_absolute_error(truth, predicted * std + mean))
print("SCORE", score, flush=True)
"""


PRETRAIN = """name: pretrain
task: multi_label
input: {{shape: [96, 96, 3]}}
backbone: {{type: mobilenet_v2, weights: null}}
freeze: none
head: {{type: dense, pooling: avg, classes: 6}}
train:
  data: {{type: csv, path: {csv}, tags: tags, validation_split: 0.1}}
  epochs: 12
  batch_size: 32
  optimizer: {{learning_rate: 0.002}}
"""


def pretrained(root: Path, folder: Path) -> Path:
    """A MobileNetV2 trained whole on other photos (of the same shapes), standing in for ImageNet
    weights offline: a frozen backbone of random weights gives features too alike for either
    side to learn from. Saved both as a plain Keras model (tlc loads it by layer name) and as
    .weights.h5 for `keras.applications.MobileNetV2` (the script's `load_weights`)."""
    weights = root / "backbone.weights.h5"
    if weights.is_file():
        return weights
    spec = root / "pretrain.yaml"
    spec.write_text(PRETRAIN.format(csv=folder / "labels.csv"))
    done = tlc("train", spec, "--runs", root / "pretrain-runs")
    print(f"pretrained the backbone on {folder.name} in {done['seconds']:.0f} s: "
          + done["out"].strip().splitlines()[-1], flush=True)
    code = f"""
import keras
from tlc.build.serving import inner_model
trained = inner_model(keras.saving.load_model({str(root / 'pretrain-runs' / 'pretrain' / 'model.keras')!r}), "pretrain")
base = keras.applications.MobileNetV2(input_shape=(160, 160, 3), include_top=False, weights=None)
for layer in base.layers:
    if layer.weights:
        layer.set_weights(trained.get_layer(layer.name).get_weights())
base.save({str(root / 'backbone.keras')!r})
base.save_weights({str(weights)!r})
"""
    run([sys.executable, "-c", code])
    return weights


def _photo(args) -> dict:
    """One photo: a gradient with clutter and noise, 2 to 5 distinct shapes in distinct cells."""
    from PIL import Image, ImageDraw, ImageFilter

    index, folder = args
    rng = np.random.default_rng(index)
    portrait = index % 5 == 0
    w, h = (HEIGHT, WIDTH) if portrait else (WIDTH, HEIGHT)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(30, 120, 3), rng.uniform(30, 120, 3)
    pixels = np.broadcast_to(top + (bottom - top) * yy, (h, w, 3)) + rng.normal(0, 12, (h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):  # clutter: small dim blobs
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 14)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(c) for c in rng.uniform(40, 140, 3)))
    present = sorted(rng.choice(len(SHAPES), size=int(rng.integers(2, 6)), replace=False))
    cols, rows = (2, 3) if portrait else (3, 2)
    cells = rng.permutation(cols * rows)[:len(present)]
    largest = 0.0
    short = min(w, h)
    for shape, cell in zip(present, cells):
        r = rng.uniform(0.07, 0.16) * short
        cx = (cell % cols + 0.5) * w / cols + rng.uniform(-0.1, 0.1) * w / cols
        cy = (cell // cols + 0.5) * h / rows + rng.uniform(-0.1, 0.1) * h / rows
        colour = tuple(int(c) for c in rng.uniform(170, 255, 3))
        name = SHAPES[shape]
        if name == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif name == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif name == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        elif name == "diamond":
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
        elif name == "cross":
            draw.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=colour)
            draw.rectangle((cx - r / 4, cy - r, cx + r / 4, cy + r), fill=colour)
        else:
            draw.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=colour)
        largest = max(largest, r / short * 100)
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    save_as_phone(image, Path(folder) / "photos" / f"{index:05d}.jpg", portrait, quality=88)
    return {"path": f"photos/{index:05d}.jpg", "tags": " ".join(SHAPES[s] for s in present),
            "size": round(largest, 3)}


def make_photos(root: Path, n: int, first: int = 0) -> Path:
    """`n` photos (numbered from `first`: another `first` draws other photos) and their labels.csv."""
    folder = root / f"tagged{n}-{first}"
    if (folder / ".done").is_file():
        return folder
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Pool(os.cpu_count() or 2) as pool:
        rows = pool.map(_photo, [(i, str(folder)) for i in range(first, first + n)], chunksize=16)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "tags", "size"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / ".done").touch()
    size = sum(f.stat().st_size for f in (folder / "photos").iterdir())
    print(f"generated {n:,} photos of {WIDTH}x{HEIGHT} ({size / n / 2**10:.0f} KB each, {n // 5:,} portrait with "
          f"EXIF orientation 6; 2-5 of {len(SHAPES)} shapes each) in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def run(argv: list[str]) -> dict:
    """A fresh process: wall seconds, peak RSS (MiB) and its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"}
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:3]} failed:\n{out[-3000:]}")
    return {"seconds": time.perf_counter() - started, "peak": usage.ru_maxrss / 1024, "out": out}


def tlc(*args) -> dict:
    return run([str(Path(sys.executable).parent / "tlc"), *map(str, args)])


def compare(root: Path, folder: Path, kind: str, epochs: int, weights: Path) -> dict:
    multi = kind == "multi_label"
    name = f"bench_{kind}"
    spec = root / f"{name}.yaml"
    spec.write_text(SPEC.format(
        name=name, epochs=epochs, csv=folder / "labels.csv",
        task="{type: multi_label, threshold: tuned}" if multi else "{type: regression, targets: [size]}",
        head=f"{{type: dense, pooling: avg, classes: {len(SHAPES)}}}" if multi else "{type: dense, pooling: avg}",
        extra=", tags: tags" if multi else "", weights=root / "backbone.keras"))
    runs = root / "runs"
    subprocess.run(["rm", "-rf", str(runs)], check=True)  # the store and the feature cache start empty
    trained = tlc("train", spec, "--runs", runs)
    evaluated = _json(tlc("evaluate", runs / name, "--json")["out"])
    metric = "map" if multi else "mae"
    out = {"tlc": {**trained, "score": evaluated[metric]}}
    code = KERAS.format(split=str(runs / name / "split.json"), csv=str(folder / "labels.csv"), names=list(SHAPES),
                        multi_label=multi, epochs=epochs, weights=str(weights))
    keras_run = run([sys.executable, "-c", code])
    keras_run["score"] = float(keras_run["out"].split("SCORE")[1].split()[0])
    out["keras"] = keras_run
    print(f"\n{kind}: frozen MobileNetV2 at 160x160, {epochs} epochs, the same {evaluated['examples']} test photos")
    print(f"{'':8} {'total':>9} {'peak RSS':>10} {('mAP' if multi else 'MAE'):>8}")
    for label, r in out.items():
        print(f"{label:8} {r['seconds']:8.1f}s {r['peak']:8.0f}MB {r['score']:8.4f}")
    t, k = out["tlc"], out["keras"]
    print(f"tlc vs keras: {k['seconds'] / t['seconds']:.1f}x faster (target >= 3x), memory {t['peak'] / k['peak']:.2f}x "
          f"keras's (target <= 1), {metric} {t['score']:.4f} vs {k['score']:.4f}", flush=True)
    if multi:  # the same spec with one threshold for every tag: its features come back from the cache
        fixed = root / f"{name}_05.yaml"
        fixed.write_text(spec.read_text().replace(f"name: {name}", f"name: {name}_05")
                         .replace("threshold: tuned", "threshold: 0.5"))
        tlc("train", fixed, "--runs", runs)
        at_half = _json(tlc("evaluate", runs / f"{name}_05", "--json")["out"])
        print(f"tuned thresholds: macro F1 {evaluated['f1_macro']:.4f} vs {at_half['f1_macro']:.4f} at 0.5 "
              f"(micro {evaluated['f1_micro']:.4f} vs {at_half['f1_micro']:.4f})", flush=True)
    return out


def _json(text: str) -> dict:
    return json.loads(text[text.index("{"):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1200)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "tlc-bench-tasks")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    folder = make_photos(args.root, args.photos)
    weights = pretrained(args.root, make_photos(args.root, 400, first=100_000))
    for kind in ("multi_label", "regression"):
        compare(args.root, folder, kind, args.epochs, weights)


if __name__ == "__main__":
    main()
