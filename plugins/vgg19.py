"""`vgg19`: keras.applications.VGG19 (VGG16 with four convolutions in blocks 3 to 5)."""

from typing import Literal

from tlc import hookimpl

from .vgg16 import VGG


class VGG19(VGG):
    type: Literal["vgg19"] = "vgg19"
    keras_function = "VGG19"
    blocks = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


@hookimpl
def tlc_backbones():
    return [VGG19]
