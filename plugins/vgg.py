"""`vgg16` and `vgg19`: keras.applications.VGG16/VGG19 with their own layer names."""

from typing import ClassVar

from tlc import hookimpl
from tlc.plan.layers import Conv2D, Dense, Flatten, Layer, Pooling2D

from .applications import Application, variants


class VGG(Application):
    """VGG: blocks of same-padded 3x3 convolutions, each closed by a 2x2 max pooling; with
    include_top: flatten, fc1, fc2 (4096 each) and predictions."""

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


VGGS = variants(VGG)
VGG16 = VGGS[0]


@hookimpl
def tlc_backbones():
    return VGGS
