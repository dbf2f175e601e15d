"""`tlc check` as a whole process vs the fastest Keras script that finds the same shape error.

Both start a fresh Python process, as a user would. The Keras script imports Keras, builds
VGG16 (weights=None) at 48x48 and adds the 4x4 pooling head, which raises. Target: >= 20x.
It is the fastest Keras route available here: Keras 3's `numpy` backend, which would avoid
TensorFlow, imports JAX modules and fails without JAX installed.
"""
from __future__ import annotations

import sys

from _timing import BIN, REPO, time_interleaved

SPEC = REPO / "spec_examples" / "vgg16_too_small_48.yaml"
KERAS_SCRIPT = """
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
inputs = keras.Input((48, 48, 3))
base = keras.applications.VGG16(include_top=False, weights=None, input_tensor=inputs)
try:
    keras.layers.AveragePooling2D(4)(base.output)
except ValueError as exc:
    print("found:", str(exc).splitlines()[0][:80])
"""


def main(rounds: int = 6) -> None:
    got = time_interleaved({
        "tlc check (process)": ([str(BIN / "tlc"), "check", str(SPEC)], 4),
        "keras import + build (process)": ([sys.executable, "-c", KERAS_SCRIPT], 1),
    }, rounds, expect_rc={"tlc check (process)": 1})
    (tlc_med, tlc_best), (keras_med, keras_best) = got.values()
    print(f"{'':32s}{'median':>10s}{'best':>10s}")
    for label, (med, best) in got.items():
        print(f"{label:32s}{med * 1000:8.0f}ms{best * 1000:8.0f}ms")
    print(f"speed-up: {keras_med / tlc_med:.1f}x (medians), {keras_best / tlc_best:.1f}x (best)  [target >= 20x]")


if __name__ == "__main__":
    main()
