"""`vgg16`: keras.applications.VGG16 with its own layer names, planned from the same table."""

from typing import ClassVar, Literal

from tlc import hookimpl
from tlc.layers import Conv2D, Dense, Flatten, Layer, Pooling2D

from .applications import Application


class VGG(Application):
    """VGG16/VGG19: blocks of same-padded 3x3 convolutions, each closed by a 2x2 max pooling;
    with include_top: flatten, fc1, fc2 (4096 each) and predictions."""

    preprocess_mode = "caffe"
    blocks: ClassVar[tuple[tuple[int, int], ...]]  # (filters, convs) per block

    def describe(self, channels: int = 3) -> list[Layer]:
        out: list[Layer] = [self.input_layer()]
        for i, (filters, convs) in enumerate(self.blocks, start=1):
            out += [Conv2D(f"block{i}_conv{j}", filters=filters, padding="same", activation="relu")
                    for j in range(1, convs + 1)]
            out.append(Pooling2D(f"block{i}_pool", mode="max", pool_size=(2, 2)))
        if self.include_top:
            out += [Flatten("flatten"), Dense("fc1", units=4096, activation="relu"),
                    Dense("fc2", units=4096, activation="relu"),
                    Dense("predictions", units=self.classes, activation="softmax")]
        return out


class VGG16(VGG):
    type: Literal["vgg16"] = "vgg16"
    keras_function = "VGG16"
    blocks = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # as in keras/src/applications/vgg16.py


@hookimpl
def tlc_backbones():
    return [VGG16]
