"""Phone photos: tlc vs a hand-written Keras script, on 12-megapixel JPEGs, a fifth of them
portrait (stored landscape with EXIF orientation 6), whole processes side by side.

Generates `--photos` (default 1,000) 4032x3024 JPEGs of two classes (a warm disc or a cool square
over a cluttered gradient with sensor-like noise; ~4.6 MB each), then trains, each as a fresh
process:
- a small conv net at 128x128 for `--epochs` (10) epochs, and
- MobileNetV2 (alpha 0.35, weights null) at 160x160 in two phases (the backbone frozen, then
  all of it trained),
with `tlc train` (decoded-image store starting empty), with Keras's `image_dataset_from_directory`
+ `fit` as the Keras guide writes it, and with the same plus `.cache()`. It prints wall time (first
epoch and total, start-up included), peak RSS and validation accuracy, and the ratios the photos
issue targets: >= 5x plain Keras over 10 epochs, >= 2x Keras with `.cache()`, the first epoch >= 2x
plain Keras, memory <= Keras's.
"""
from __future__ import annotations

import argparse
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

WIDTH, HEIGHT = 4032, 3024
CONV = {"size": 128, "tlc": """
  type: conv_stack
  blocks: [{{filters: 16, strides: 2}}, {{filters: 32}}, {{filters: 64}}]
freeze: none
head: {{type: dense, pooling: avg, classes: 2}}
train:
  data: {{type: directory, path: {path}, validation_split: 0.2}}
  epochs: {epochs}
  batch_size: 32
""", "keras": """
model = keras.Sequential([keras.Input((128, 128, 3)), keras.layers.Rescaling(1 / 255),
    keras.layers.Conv2D(16, 3, strides=2, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(train, validation_data=val, epochs={epochs}, verbose=0, callbacks=[Epochs()])
"""}
MOBILENET = {"size": 160, "tlc": """
  type: mobilenet_v2
  alpha: 0.35
  weights: null
head: {{type: dense, pooling: avg, classes: 2}}
train:
  data: {{type: directory, path: {path}, validation_split: 0.2}}
  batch_size: 32
  phases: [{{freeze: all, epochs: {first}}}, {{freeze: none, epochs: {second}, learning_rate: 0.0001}}]
""", "keras": """
base = keras.applications.MobileNetV2(input_shape=(160, 160, 3), alpha=0.35, include_top=False, weights=None)
base.trainable = False
inputs = keras.Input((160, 160, 3))
x = base(keras.applications.mobilenet_v2.preprocess_input(inputs), training=False)
outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
model = keras.Model(inputs, outputs)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(train, validation_data=val, epochs={first}, verbose=0, callbacks=[Epochs()])
base.trainable = True
model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(train, validation_data=val, initial_epoch={first}, epochs={first} + {second}, verbose=0,
                    callbacks=[Epochs()])
"""}
KERAS = """
import os, sys; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
class Epochs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print("EPOCH", epoch, flush=True)
train, val = keras.utils.image_dataset_from_directory({path!r}, image_size=({size}, {size}), batch_size=32,
    validation_split=0.2, subset="both", seed=0)
if {cache}:
    train, val = train.cache(), val.cache()
train, val = train.prefetch(-1), val.prefetch(-1)
{model}
print("VAL_ACCURACY", history.history["val_accuracy"][-1], flush=True)
"""


_NOISE: dict = {}


def _noise(size):
    """Sensor-like noise around 128, made once per worker process and size."""
    from PIL import Image

    if size not in _NOISE:
        _NOISE[size] = Image.effect_noise(size, 5).convert("RGB")
    return _NOISE[size]


def _photo(args) -> None:
    """One 12-MP photo: drawn at 1/8 scale, enlarged, given sensor-like noise, saved as JPEG."""
    from PIL import Image, ImageChops

    index, folder, noise_seed = args
    rng = np.random.default_rng(index)
    label = "disc" if index % 2 == 0 else "square"
    portrait = index % 5 == 0
    w, h = (HEIGHT // 8, WIDTH // 8) if portrait else (WIDTH // 8, HEIGHT // 8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    top, bottom = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    pixels = top + (bottom - top) * (yy / h)[..., None]
    for _ in range(6):  # background clutter
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 30)
        pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    cx, cy, r = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.12, 0.2) * min(w, h)
    shape = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) if label == "disc" else \
        (np.abs(xx - cx) < 0.9 * r) & (np.abs(yy - cy) < 0.9 * r)
    # the class shows in the shape and in its colour (warm discs, cool squares), so a small net
    # learns it in a few epochs and the accuracies compare
    pixels[shape] = [rng.uniform(200, 255), rng.uniform(90, 160), rng.uniform(0, 60)] if label == "disc" else \
        [rng.uniform(0, 60), rng.uniform(90, 160), rng.uniform(200, 255)]
    small = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    full = small.resize((w * 8, h * 8), Image.Resampling.BICUBIC)
    full = ImageChops.add(full, _noise(full.size), scale=1.0, offset=-128)
    save_as_phone(full, Path(folder) / label / f"{index:05d}.jpg", portrait, quality=90)


def save_as_phone(image, path: Path, portrait: bool, quality: int) -> None:
    """A JPEG as a phone writes it: a portrait photo stored as the sensor reads it (landscape),
    tagged EXIF orientation 6 ("rotate 90 clockwise to show")."""
    from PIL import Image

    if portrait:
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(path, quality=quality, exif=exif)
    else:
        image.save(path, quality=quality)


def make_photos(root: Path, n: int) -> Path:
    folder = root / f"phone{n}-v2"
    if (folder / ".done").is_file():
        return folder
    for label in ("disc", "square"):
        (folder / label).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Pool(os.cpu_count() or 2) as pool:
        pool.map(_photo, [(i, str(folder), 0) for i in range(n)], chunksize=8)
    (folder / ".done").touch()
    size = sum(f.stat().st_size for f in folder.rglob("*.jpg"))
    print(f"generated {n:,} photos of {WIDTH}x{HEIGHT} ({size / n / 2**20:.1f} MB each on average, "
          f"{n // 5:,} portrait with EXIF orientation 6) in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def run(argv: list[str], marker: str) -> dict:
    """A fresh process: wall seconds to its first epoch line and in all, peak RSS (MiB), stdout."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"}
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    first, lines = None, []
    for line in process.stdout:
        lines.append(line)
        if first is None and line.startswith(marker):
            first = time.perf_counter() - started
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:3]} failed:\n{''.join(lines)[-3000:]}")
    return {"first": first, "seconds": seconds, "peak": usage.ru_maxrss / 1024, "out": "".join(lines)}


def compare(root: Path, folder: Path, name: str, model: dict, **epochs) -> dict:
    size = model["size"]
    spec = root / f"{name}.yaml"
    spec.write_text(f"name: {name}\ninput: {{shape: [{size}, {size}, 3]}}\nbackbone:"
                    + model["tlc"].format(path=folder, **epochs))
    runs = root / f"runs-{name}"
    subprocess.run(["rm", "-rf", str(runs)], check=True)  # the store starts empty: every photo decoded once
    tlc = run([str(Path(sys.executable).parent / "tlc"), "train", str(spec), "--runs", str(runs)], "epoch 1:")
    tlc["accuracy"] = json.loads((runs / name / "metrics.json").read_text())["final"]["val_accuracy"]
    out = {"tlc": tlc}
    for label, cache in (("keras", False), ("keras .cache()", True)):
        code = KERAS.format(path=str(folder), size=size, cache=cache, model=model["keras"].format(**epochs))
        result = run([sys.executable, "-c", code], "EPOCH")
        result["accuracy"] = float(result["out"].split("VAL_ACCURACY")[1].split()[0])
        out[label] = result
    print(f"\n{name} ({size}x{size}, {sum(epochs.values())} epochs)")
    print(f"{'':16} {'first epoch':>12} {'total':>9} {'peak RSS':>10} {'val acc':>8}")
    for label, r in out.items():
        print(f"{label:16} {r['first']:11.1f}s {r['seconds']:8.1f}s {r['peak']:8.0f}MB {r['accuracy']:8.3f}")
    k, c, t = out["keras"], out["keras .cache()"], out["tlc"]
    print(f"tlc vs keras: {k['seconds'] / t['seconds']:.1f}x in all (target >= 5x), first epoch "
          f"{k['first'] / t['first']:.1f}x (target >= 2x); vs keras .cache(): {c['seconds'] / t['seconds']:.1f}x "
          f"(target >= 2x); memory {t['peak'] / k['peak']:.2f}x keras's (target <= 1), "
          f"{t['peak'] / c['peak']:.2f}x keras .cache()'s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "tlc-bench-phone")
    parser.add_argument("--only", choices=["conv", "mobilenet"], default=None)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    folder = make_photos(args.root, args.photos)
    if args.only != "mobilenet":
        compare(args.root, folder, "phone_conv", CONV, epochs=args.epochs)
    if args.only != "conv":
        compare(args.root, folder, "phone_mobilenet", MOBILENET, first=3, second=2)


if __name__ == "__main__":
    main()
