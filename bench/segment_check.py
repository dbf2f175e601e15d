"""`tlc check` of a segmentation spec vs finding the same misalignment in Keras, whole processes.

The spec: segmentation_models' U-Net on VGG16 at 250x250 (the decoder's first skip meets a 15x15
tap with a 14x14 upsampled map). The Keras side imports Keras, builds VGG16 (weights=None) and
the decoder's first stage, whose Concatenate raises. tlc also names the sizes that work (224x224,
256x256), which Keras does not. Target: >= 20x (issue 39).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _timing import BIN, time_interleaved

KERAS_SCRIPT = """
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
from keras import layers
base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(250, 250, 3))
x = layers.Conv2D(512, 3, padding="same")(base.output)
x = layers.Conv2D(512, 3, padding="same")(x)
x = layers.UpSampling2D(2)(x)
try:
    layers.Concatenate()([x, base.get_layer("block5_conv3").output])
except ValueError as exc:
    print("found:", str(exc).splitlines()[0][:80])
"""
SPEC = "task: segmentation\ninput: {shape: [250, 250, 3]}\nbackbone: {type: vgg16, weights: null}\n" \
       "head: {type: unet, classes: 3}\n"


def main(rounds: int = 6) -> None:
    spec = Path(tempfile.mkdtemp(prefix="tlc-segment-bench-")) / "unet_vgg16_250.yaml"
    spec.write_text(SPEC)
    got = time_interleaved({
        "tlc check (process)": ([str(BIN / "tlc"), "check", str(spec)], 4),
        "keras import + build (process)": ([sys.executable, "-c", KERAS_SCRIPT], 1),
    }, rounds, expect_rc={"tlc check (process)": 1})
    (tlc_med, tlc_best), (keras_med, keras_best) = got.values()
    print(f"{'unet on vgg16 at 250x250':32s}{'median':>10s}{'best':>10s}")
    for label, (med, best) in got.items():
        print(f"  {label:30s}{med * 1000:8.0f}ms{best * 1000:8.0f}ms")
    print(f"  speed-up: {keras_med / tlc_med:.1f}x (medians), {keras_best / tlc_best:.1f}x (best)  [target >= 20x]")


if __name__ == "__main__":
    main()
