"""tlc's overhead over hand-written Keras doing the same work, as whole processes side by side.

(a) `tlc build` of VGG16 (blocks 1-4 frozen, new head) vs a script that builds and saves it;
(b) `tlc train --no-cache` of the seed's digits net (8 epochs on 5-9) vs a script that loads the
same data, builds the same net, fits it epoch by epoch with validation and saves it.
Target: at most 10% overhead. Each pair is run `ROUNDS` times alternately; medians are compared.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from _timing import REPO, run_python, tlc_code

ROUNDS = 3
BUILD_KERAS = """
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))
for layer in base.layers[:15]:
    layer.trainable = False
x = keras.layers.GlobalAveragePooling2D()(base.output)
x = keras.layers.Dense(256, activation="relu")(x)
out = keras.layers.Dense(5, activation="softmax")(x)
keras.Model(base.input, out).save({path!r})
"""
TRAIN_KERAS = """
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras
from sklearn.datasets import load_digits
d = load_digits(); keep = np.isin(d.target, [5, 6, 7, 8, 9])
x = (d.images[keep][..., None] / 16.0).astype("float32"); y = d.target[keep] - 5
order = np.random.default_rng(0).permutation(len(x)); n_val = round(len(x) * 0.2)
xv, yv, xt, yt = x[order[:n_val]], y[order[:n_val]], x[order[n_val:]], y[order[n_val:]]
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
    keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2), keras.layers.Dropout(0.25),
    keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"), keras.layers.Dropout(0.25),
    keras.layers.Dense(5, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(xt, yt, batch_size=32, epochs=8, validation_data=(xv, yv), verbose=0,
          callbacks=[keras.callbacks.CSVLogger({csv!r})])
model.save({path!r})
"""


def pair(label: str, tlc_code_: str, keras_code: str) -> None:
    tlc_times, keras_times = [], []
    for _ in range(ROUNDS):
        tlc_times.append(run_python(tlc_code_)[0])
        keras_times.append(run_python(keras_code)[0])
    t, k = statistics.median(tlc_times), statistics.median(keras_times)
    print(f"{label:28s} tlc {t:6.1f}s   keras {k:6.1f}s   overhead {100 * (t / k - 1):+5.1f}%  (target <= +10%)")


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="tlc-bench-"))
    pair("build VGG16 + save", tlc_code("build", str(REPO / "bench/specs/vgg_build.yaml"), "-o", str(out / "t.keras")),
         BUILD_KERAS.format(path=str(out / "k.keras")))
    pair("train digits 8 epochs", tlc_code("train", str(REPO / "spec_examples/digits_scratch.yaml"), "--no-cache",
                                           "--runs", str(out / "runs")),
         TRAIN_KERAS.format(path=str(out / "k2.keras"), csv=str(out / "h.csv")))


if __name__ == "__main__":
    main()
