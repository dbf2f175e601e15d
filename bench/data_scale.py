"""A folder of photos at scale: tlc vs a hand-written `image_dataset_from_directory` + `fit` script.

Generates folders of 224x224 JPEGs (two classes; `--sizes`, default 1,500 and 6,000) and, on each,
runs as whole processes side by side: `tlc train` of a tiny conv_stack for one epoch, and the
Keras script doing the same (same model, batch 32, 20% validation). Prints wall time and peak RSS
of both, and the ratios the data issue targets: tlc's peak at the larger size within 1.3x of the
smaller, within 1.5x of the script; its time within 1.3x of the script.

`--throughput N` also generates N images and reports images/s of decoding (the tf.data pipeline)
and of cached-feature training (a frozen prefix, features on disk).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _timing import run_python, tlc_code

SPEC = """
name: photos
input: {{shape: [224, 224, 3]}}
backbone:
  type: conv_stack
  blocks: [{{filters: 8, strides: 4, pool_size: 4}}, {{filters: 16}}]
{freeze}
head: {{type: dense, pooling: avg, classes: 2}}
train:
  data: {{type: directory, path: {path}, validation_split: 0.2}}
  epochs: {epochs}
  batch_size: 32
"""
KERAS = """
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
train, val = keras.utils.image_dataset_from_directory({path!r}, image_size=(224, 224), batch_size=32,
    validation_split=0.2, subset="both", seed=0)
scale = lambda x, y: (x / 255.0, y)
train, val = train.map(scale).prefetch(-1), val.map(scale).prefetch(-1)
model = keras.Sequential([keras.Input((224, 224, 3)), keras.layers.Conv2D(8, 3, strides=4, activation="relu"),
    keras.layers.MaxPooling2D(4), keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(2),
    keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(train, validation_data=val, epochs={epochs}, verbose=0)
model.save({model!r})
"""


def make_photos(root: Path, n: int, size: int = 224, seed: int = 0) -> Path:
    """n JPEGs in two class folders: smooth random colour fields (JPEG-typical sizes, ~10-20 KB),
    the class deciding which corner is brighter. Cached under `root` by n."""
    from PIL import Image

    folder = root / f"photos{n}"
    if (folder / ".done").is_file():
        return folder
    rng = np.random.default_rng(seed)
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 1, size, dtype="float32")
    for i in range(n):
        c = "ab"[i % 2]
        low = rng.random((8, 8, 3), dtype="float32")
        field = np.kron(low, np.ones((size // 8, size // 8, 1), "float32"))
        gradient = (ramp[:, None] + ramp[None, :])[..., None] / 2
        image = 0.6 * field + 0.4 * (gradient if c == "a" else 1 - gradient)
        noise = rng.normal(0, 0.05, image.shape).astype("float32")
        pixels = np.clip((image + noise) * 255, 0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / c / f"{i:06d}.jpg", quality=90)
    (folder / ".done").touch()
    return folder


def compare(root: Path, sizes: list[int], epochs: int) -> None:
    results = {}
    for n in sizes:
        folder = make_photos(root, n)
        spec = root / f"photos{n}.yaml"
        spec.write_text(SPEC.format(path=folder, epochs=epochs, freeze=""))
        t = run_python(tlc_code("train", str(spec), "--runs", str(root / f"runs{n}")))
        k = run_python(KERAS.format(path=str(folder), epochs=epochs, model=str(root / f"keras{n}.keras")))
        results[n] = (t, k)
        print(f"{n:6,} images: tlc {t[0]:6.1f} s {t[1]:7.0f} MB   keras script {k[0]:6.1f} s {k[1]:7.0f} MB   "
              f"time {t[0] / k[0]:.2f}x  memory {t[1] / k[1]:.2f}x", flush=True)
    small, large = results[sizes[0]], results[sizes[-1]]
    print(f"tlc peak RSS {sizes[-1]:,} vs {sizes[0]:,} images: {large[0][1] / small[0][1]:.2f}x (target <= 1.3x)")
    print(f"tlc vs script at {sizes[-1]:,}: memory {large[0][1] / large[1][1]:.2f}x (target <= 1.5x), "
          f"time {large[0][0] / large[1][0]:.2f}x (target <= 1.3x)")


THROUGHPUT = """
import os, time; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tlc
from tlc import data
from tlc.train.loop import train
spec = tlc.load_spec({spec!r})
d = data.load(spec)
feed = data.feeds(spec, d)[0]
start = time.perf_counter(); n = 0
for x, y in feed.in_order(64):
    n += len(y)
print("DECODE", n / (time.perf_counter() - start))
result = train(spec, {runs!r})
print("TRAIN", result.metrics["feature_cache"], result.metrics["train_seconds"], len(d.train))
"""


def throughput(root: Path, n: int) -> None:
    folder = make_photos(root, n)
    spec = root / f"throughput{n}.yaml"
    spec.write_text(SPEC.format(path=folder, epochs=3, freeze="freeze: {up_to: block2_pool}"))
    seconds, peak, out = run_python(THROUGHPUT.format(spec=str(spec), runs=str(root / "runs-throughput")))
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith(("DECODE", "TRAIN")))
    print(f"{n:,} images: decoding {float(lines['DECODE']):,.0f} images/s; cached training (3 epochs, "
          f"features computed once): {lines['TRAIN']}; peak {peak:.0f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 6000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--throughput", type=int, default=0, help="images for the throughput figures (0: skip)")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "tlc-bench-photos")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    compare(args.root, args.sizes, args.epochs)
    if args.throughput:
        throughput(args.root, args.throughput)


if __name__ == "__main__":
    main()
