"""`tlc check` as a whole process vs the fastest Keras script that finds the same shape error.

Both start a fresh Python process, as a user would. The Keras script imports Keras, builds the
backbone (weights=None) at 48x48 and adds the 4x4 pooling head, which raises. Five backbones:
VGG16 (a chain; target >= 20x), ResNet50 (a graph of 175 layers; target >= 10x, goal 20x), and
three of the newer families, ConvNeXtTiny (Sequential stems, grouped convolutions, residual
tensor operations), EfficientNetV2S (513 layers) and MobileNetV3Large (hard-swish operations),
each with a target of >= 20x. It is the fastest Keras route available here: Keras 3's `numpy`
backend, which would avoid TensorFlow, imports JAX modules and fails without JAX installed.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _timing import BIN, time_interleaved

KERAS_SCRIPT = """
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
inputs = keras.Input((48, 48, 3))
base = keras.applications.{function}(include_top=False, weights=None, input_tensor=inputs)
try:
    keras.layers.AveragePooling2D(4)(base.output)
except ValueError as exc:
    print("found:", str(exc).splitlines()[0][:80])
"""
SPEC = "input: {{shape: [48, 48, 3]}}\nbackbone: {{type: {kind}}}\nhead: {{type: dense, pool_size: 4, classes: 5}}\n"
CASES = {"vgg16": ("VGG16", 20), "resnet50": ("ResNet50", 10), "convnext_tiny": ("ConvNeXtTiny", 20),
         "efficientnet_v2_s": ("EfficientNetV2S", 20), "mobilenet_v3_large": ("MobileNetV3Large", 20)}


def main(rounds: int = 6) -> None:
    folder = Path(tempfile.mkdtemp(prefix="tlc-check-bench-"))
    for kind, (function, target) in CASES.items():
        spec = folder / f"{kind}_48.yaml"
        spec.write_text(SPEC.format(kind=kind))
        got = time_interleaved({
            "tlc check (process)": ([str(BIN / "tlc"), "check", str(spec)], 4),
            "keras import + build (process)": ([sys.executable, "-c", KERAS_SCRIPT.format(function=function)], 1),
        }, rounds, expect_rc={"tlc check (process)": 1})
        (tlc_med, tlc_best), (keras_med, keras_best) = got.values()
        print(f"{kind:32s}{'median':>10s}{'best':>10s}")
        for label, (med, best) in got.items():
            print(f"  {label:30s}{med * 1000:8.0f}ms{best * 1000:8.0f}ms")
        print(f"  speed-up: {keras_med / tlc_med:.1f}x (medians), {keras_best / tlc_best:.1f}x (best)  "
              f"[target >= {target}x]")


if __name__ == "__main__":
    main()
