"""`vgg16`: keras.applications.VGG16 with its own layer names, planned from the same table."""

import os
from typing import Literal

from pydantic import model_validator

from tlc import hookimpl
from tlc.components import Backbone, FieldError
from tlc.errors import RunError
from tlc.fields import Count
from tlc.layers import Conv2D, Dense, Flatten, Input, Layer, Pooling2D, Shape

#: (filters, convs) per block, as in keras/src/applications/vgg16.py
BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
WEIGHTS_FILE = {
    True: "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    False: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


class VGG16(Backbone):
    type: Literal["vgg16"] = "vgg16"
    include_top: bool = False
    classes: Count = 1000

    supports_imagenet = True

    @model_validator(mode="after")
    def _keras_rules(self) -> "VGG16":
        if "classes" in self.model_fields_set and not self.include_top:
            raise ValueError("classes is only used with include_top: true")
        if self.weights == "imagenet" and self.include_top and self.classes != 1000:
            raise ValueError("with weights: imagenet and include_top: true, classes must be 1000")
        return self

    def layers(self, input_shape: Shape) -> list[Layer]:
        if self.weights == "imagenet" and input_shape[2] != 3:
            raise FieldError(("input", "shape"), f"vgg16 with imagenet weights needs 3 channels; got {input_shape[2]}")
        if self.weights == "imagenet" and self.include_top and tuple(input_shape) != (224, 224, 3):
            raise FieldError(("input", "shape"),
                             "vgg16 with include_top and imagenet weights needs input [224, 224, 3]")
        out: list[Layer] = [Input("input", min_size=(32, 32), why=" (Keras's VGG16 minimum)")]
        for i, (filters, convs) in enumerate(BLOCKS, start=1):
            out += [Conv2D(f"block{i}_conv{j}", filters=filters, padding="same", activation="relu")
                    for j in range(1, convs + 1)]
            out.append(Pooling2D(f"block{i}_pool", mode="max", pool_size=(2, 2)))
        if self.include_top:
            out += [Flatten("flatten"), Dense("fc1", units=4096, activation="relu"),
                    Dense("fc2", units=4096, activation="relu"),
                    Dense("predictions", units=self.classes, activation="softmax")]
        return out

    def build(self, input_shape: Shape):
        import keras

        weights = None
        if self.weights == "imagenet":
            weights = imagenet_weights_file(self.include_top)
        inputs = keras.Input(shape=tuple(input_shape), name="input")
        return keras.applications.VGG16(
            include_top=self.include_top, weights=weights, input_tensor=inputs, classes=self.classes
        )

    def preprocess(self, images):
        """ImageNet weights expect caffe-style input (BGR, mean-subtracted, 0..255)."""
        if self.weights != "imagenet":
            return images
        from keras.applications.vgg16 import preprocess_input

        return preprocess_input(images * 255.0)


def imagenet_weights_file(include_top: bool) -> str:
    """The local path of the ImageNet weights, downloading them into the Keras cache if needed.

    Offline and not cached is a clear error that names the file and where to put it.
    """
    import keras

    name = WEIGHTS_FILE[include_top]
    cache = os.path.join(_keras_home(), "models")
    try:
        return keras.utils.get_file(name, WEIGHTS_URL + name, cache_subdir="models")
    except Exception as exc:
        raise RunError(
            f"weights: imagenet: could not download {name} ({type(exc).__name__}). "
            f"Without network access, copy {name} into {cache}/ (from {WEIGHTS_URL + name}) "
            "and run again, or use weights: null or a path."
        ) from None


def _keras_home() -> str:
    try:  # where keras.utils.get_file really looks (KERAS_HOME, ~/.keras or /tmp/.keras)
        from keras.src.backend.config import keras_home

        return keras_home()
    except ImportError:  # pragma: no cover - a future Keras moving its private module
        return os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))


@hookimpl
def tlc_backbones():
    return [VGG16]
