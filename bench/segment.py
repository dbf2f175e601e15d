"""Segmentation: tlc vs a hand-written Keras 3 U-Net script, whole processes side by side.

Generates `--photos` (default 600) 1024x768 JPEGs of 2-3 object classes (discs, boxes, roofs)
over textured backgrounds, a fifth of them portrait (stored landscape with EXIF orientation 6),
each with its palette PNG mask of class indices drawn upright (as the photo is shown), a ring
of 255 (ignored) around each object. Then, each as a fresh process:
- `tlc train` of segmentation_models' U-Net (decoder filters 128..8) on a frozen MobileNetV2
  (weights null) at 256x256, 10 epochs, horizontal flips moving masks with photos as 2 cached
  views (the store and the feature cache start empty);
- the Keras script a careful user writes instead: tf.data over the same training files (tlc's
  split.json), each photo opened with Pillow and turned upright, each mask read as palette
  indices (tf.io.decode_png would give the palette's colours), Keras's mask-aware RandomFlip, the
  same U-Net written by hand (segmentation_models' blocks and names), the same pixel
  cross-entropy without the ignored pixels, `fit` for 10 epochs.
Both are scored on the same held-out test photos with scikit-learn's Jaccard (mIoU over the
classes, ignored pixels left out). Prints wall time, peak RSS and mIoU, and the issue's ratios:
mIoU equal within noise, time >= 2x faster, memory <= Keras's.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from photos import save_as_phone
from tasks import _json, run, tlc

CLASSES = ("background", "disc", "box", "roof")
PALETTE = [0, 0, 0, 230, 60, 60, 60, 200, 60, 60, 90, 230] + [255, 255, 255] * 252
WIDTH, HEIGHT, SIDE = 1024, 768, 256
FILTERS = [128, 64, 32, 16, 8]
SPEC = f"""name: bench_segment
task: segmentation
input: {{shape: [{SIDE}, {SIDE}, 3]}}
backbone: {{type: mobilenet_v2, weights: null}}
freeze: all
head: {{type: unet, classes: {len(CLASSES)}, decoder_filters: {FILTERS}}}
train:
  data: {{type: masks, path: {{folder}}, classes: {list(CLASSES)}, validation_split: 0.15, test_split: 0.15}}
  augment: {{flip: horizontal, views: 2}}
  epochs: {{epochs}}
  batch_size: 16
  optimizer: {{learning_rate: 0.002}}
  recalibrate_bn: false
  seed: 0
"""
KERAS = """
import json, os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
from keras import layers
from PIL import Image, ImageOps
from sklearn.metrics import jaccard_score
SIDE, K, FILTERS, EPOCHS = {side}, {classes}, {filters}, {epochs}
split = json.load(open({split!r}))
held = {{part: [f for f, _ in split[part + "_files"]] for part in ("val", "test")}}
folder = {folder!r}
photos = sorted(os.path.join(folder, "images", f) for f in os.listdir(os.path.join(folder, "images")))
skip = set(held["val"]) | set(held["test"])
train_files = [f for f in photos if f not in skip]
def mask_of(photo):
    return os.path.join(folder, "masks", os.path.splitext(os.path.basename(photo))[0] + ".png")
def read(photo):
    photo = photo.decode()
    with Image.open(photo) as image:  # upright, as the mask is drawn
        image = ImageOps.exif_transpose(image).convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    with Image.open(mask_of(photo)) as mask:  # palette indices, not colours
        mask = mask.resize((SIDE, SIDE), Image.Resampling.NEAREST)
    return np.asarray(image, np.float32), np.asarray(mask, np.uint8)[..., None]
flip = layers.RandomFlip("horizontal", seed=0)
def load(photo):
    image, mask = tf.numpy_function(read, [photo], (tf.float32, tf.uint8))
    image.set_shape((SIDE, SIDE, 3)); mask.set_shape((SIDE, SIDE, 1))
    return image, mask
def augment(image, mask):
    out = flip({{"images": image, "segmentation_masks": tf.cast(mask, tf.float32)}})
    return out["images"], tf.cast(out["segmentation_masks"], tf.uint8)
def dataset(files, training):
    data = tf.data.Dataset.from_tensor_slices(files)
    if training:
        data = data.shuffle(len(files), seed=0)
    data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        data = data.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(16).prefetch(tf.data.AUTOTUNE)
def conv3x3(width, name):
    def block(x):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="he_uniform",
                          name=name + "_conv")(x)
        x = layers.BatchNormalization(name=name + "_bn")(x)
        return layers.Activation("relu", name=name + "_relu")(x)
    return block
keras.utils.set_random_seed(0)
base = keras.applications.MobileNetV2(input_shape=(SIDE, SIDE, 3), include_top=False, weights=None)
base.trainable = False
inputs = keras.Input((SIDE, SIDE, 3))
encoder = keras.Model(base.input, [base.output] + [base.get_layer(n).output for n in
    ("block_13_expand_relu", "block_6_expand_relu", "block_3_expand_relu", "block_1_expand_relu")])
x, *skips = encoder(keras.applications.mobilenet_v2.preprocess_input(inputs), training=False)
for i, width in enumerate(FILTERS):  # segmentation_models' DecoderUpsamplingX2Block
    x = layers.UpSampling2D(2, name=f"decoder_stage{{i}}_upsampling")(x)
    if i < len(skips):
        x = layers.Concatenate(name=f"decoder_stage{{i}}_concat")([x, skips[i]])
    x = conv3x3(width, f"decoder_stage{{i}}a")(x)
    x = conv3x3(width, f"decoder_stage{{i}}b")(x)
x = layers.Conv2D(K, 3, padding="same", name="final_conv")(x)
model = keras.Model(inputs, layers.Activation("softmax", name="softmax")(x))
def pixel_loss(y_true, y_pred):  # cross-entropy over the counted pixels of each image
    y = tf.cast(y_true[..., 0], tf.int32)
    counted = tf.cast(y != 255, tf.float32)
    ce = keras.losses.sparse_categorical_crossentropy(tf.where(y == 255, 0, y), y_pred)
    return tf.reduce_sum(ce * counted, axis=(1, 2)) / tf.maximum(tf.reduce_sum(counted, axis=(1, 2)), 1.0)
model.compile(optimizer=keras.optimizers.Adam(0.002), loss=pixel_loss,
              metrics=[keras.metrics.MeanIoU(K, ignore_class=255, sparse_y_pred=False)])
model.fit(dataset(train_files, True), validation_data=dataset(held["val"], False), epochs=EPOCHS, verbose=0)
predicted = model.predict(dataset(held["test"], False), verbose=0).argmax(-1)
truth = np.stack([read(f.encode())[1][..., 0] for f in held["test"]])
keep = truth != 255
print("SCORE", jaccard_score(truth[keep], predicted[keep], labels=list(range(K)), average="macro"), flush=True)
"""


def _photo(args) -> None:
    """One photo and its mask: a textured background, 2 or 3 objects of distinct classes."""
    from PIL import Image, ImageDraw, ImageFilter

    index, folder = args
    rng = np.random.default_rng(index)
    portrait = index % 5 == 0
    w, h = (HEIGHT, WIDTH) if portrait else (WIDTH, HEIGHT)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    waves = np.sin(xx / rng.uniform(9, 30) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(9, 30))
    base = rng.uniform(40, 120, 3)
    pixels = base + 25 * waves[..., None] + rng.normal(0, 14, (h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    mask = Image.new("P", (w, h), 0)
    mask.putpalette(PALETTE)
    draw, drawn = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    kinds = rng.choice([1, 2, 3], size=int(rng.integers(2, 4)), replace=False)
    cols, rows = (2, 3) if portrait else (3, 2)
    for kind, cell in zip(kinds, rng.permutation(cols * rows)):
        r = rng.uniform(0.08, 0.17) * min(w, h)
        cx = (cell % cols + 0.5) * w / cols + rng.uniform(-0.1, 0.1) * w / cols
        cy = (cell // cols + 0.5) * h / rows + rng.uniform(-0.1, 0.1) * h / rows
        colour = tuple(int(c) for c in rng.uniform(150, 255, 3))
        for canvas, fill, grow in ((draw, colour, 0), (drawn, 255, 3), (drawn, int(kind), -2)):
            s = r + grow
            if kind == 1:
                canvas.ellipse((cx - s, cy - s, cx + s, cy + s), fill=fill)
            elif kind == 2:
                canvas.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
            else:
                canvas.polygon([(cx, cy - s), (cx - s, cy + s), (cx + s, cy + s)], fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    save_as_phone(image, Path(folder) / "images" / f"{index:05d}.jpg", portrait, quality=88)
    mask.save(Path(folder) / "masks" / f"{index:05d}.png")


def make_photos(root: Path, n: int) -> Path:
    folder = root / f"segment{n}"
    if (folder / ".done").is_file():
        return folder
    for part in ("images", "masks"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Pool(os.cpu_count() or 2) as pool:
        pool.map(_photo, [(i, str(folder)) for i in range(n)], chunksize=16)
    (folder / ".done").touch()
    size = sum(f.stat().st_size for f in (folder / "images").iterdir())
    print(f"generated {n:,} photos of {WIDTH}x{HEIGHT} ({size / n / 2**10:.0f} KB each, {n // 5:,} portrait with "
          f"EXIF orientation 6) and their palette masks in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "tlc-bench-segment")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    folder = make_photos(args.root, args.photos)
    spec = args.root / "bench_segment.yaml"
    spec.write_text(SPEC.replace("{folder}", str(folder)).replace("{epochs}", str(args.epochs)))
    runs = args.root / "runs"
    subprocess.run(["rm", "-rf", str(runs)], check=True)  # the store and the feature cache start empty
    out = {"tlc": tlc("train", spec, "--runs", runs)}
    evaluated = _json(tlc("evaluate", runs / "bench_segment", "--json")["out"])
    out["tlc"]["score"] = evaluated["miou"]
    cache = [line for line in out["tlc"]["out"].splitlines() if "feature cache" in line]
    code = KERAS.format(side=SIDE, classes=len(CLASSES), filters=FILTERS, epochs=args.epochs, folder=str(folder),
                        split=str(runs / "bench_segment" / "split.json"))
    out["keras"] = run([sys.executable, "-c", code])
    out["keras"]["score"] = float(out["keras"]["out"].split("SCORE")[1].split()[0])
    print(f"\nU-Net (decoder {FILTERS}) on a frozen MobileNetV2 at {SIDE}x{SIDE}, {args.epochs} epochs, "
          f"the same {evaluated['examples']} test photos" + (f"\ntlc: {cache[0].strip()}" if cache else ""))
    print(f"{'':8} {'total':>9} {'peak RSS':>10} {'mIoU':>8}")
    for label, r in out.items():
        print(f"{label:8} {r['seconds']:8.1f}s {r['peak']:8.0f}MB {r['score']:8.4f}")
    t, k = out["tlc"], out["keras"]
    print(f"tlc vs keras: {k['seconds'] / t['seconds']:.1f}x faster (target >= 2x), memory {t['peak'] / k['peak']:.2f}x "
          f"keras's (target <= 1), mIoU {t['score']:.4f} vs {k['score']:.4f}", flush=True)


if __name__ == "__main__":
    main()
