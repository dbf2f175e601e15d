"""`efficientnet_b0` ... `efficientnet_b7`: keras.applications EfficientNet B0-B7, described as
keras/src/applications/efficientnet.py builds them. Their rescaling and normalization are
layers of the model, so the model takes 0..255 images."""

import math
from typing import ClassVar

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, BatchNormalization, Conv2D, Dense, Dropout, GlobalPooling2D, Layer, \
    Normalization, Rescaling, ZeroPadding2D

from .applications import Application, variants
from .blocks import mbconv, pointwise, round_filters

#: (kernel, repeats, filters in, filters out, expand ratio, strides) per stage; se_ratio 0.25, id_skip
STAGES = ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
          (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
DROP_CONNECT_RATE = 0.2


def top(g: Graph, x: str, filters: int, classes: int | None, dropout: float) -> None:
    """The last 1x1 convolution of EfficientNet and EfficientNetV2, and with `classes` their
    classifier (pooling, dropout, softmax)."""
    x = g(pointwise("top_conv", filters), x)
    x = g(BatchNormalization("top_bn"), x)
    x = g(Activation("top_activation", activation="swish"), x)
    if classes is not None:
        x = g(GlobalPooling2D("avg_pool", mode="avg"), x)
        x = g(Dropout("top_dropout", rate=dropout), x)
        g(Dense("predictions", units=classes, activation="softmax"), x)


class EfficientNet(Application):
    scaling: ClassVar[tuple[float, float, float]]  # width, depth, dropout before the top's predictions

    def round_filters(self, filters: int) -> int:
        return round_filters(filters, self.scaling[0])

    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        x = g(Rescaling(g.auto("rescaling"), scale=1.0 / 255.0))
        x = g(Normalization(g.auto("normalization")), x)
        if self.keras_weights(channels) == "imagenet":
            x = g(Rescaling(g.auto("rescaling"), scale=tuple(1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB)), x)
        x = g(ZeroPadding2D("stem_conv_pad", correct_for=3), x)
        x = g(Conv2D("stem_conv", filters=self.round_filters(32), kernel_size=(3, 3), strides=(2, 2),
                     use_bias=False), x)
        x = g(BatchNormalization("stem_bn"), x)
        x = g(Activation("stem_activation", activation="swish"), x)
        repeats = [int(math.ceil(self.scaling[1] * stage[1])) for stage in STAGES]
        b, blocks = 0, float(sum(repeats))
        for i, ((kernel, _, f_in, f_out, expand, strides), n) in enumerate(zip(STAGES, repeats)):
            f_in, f_out = self.round_filters(f_in), self.round_filters(f_out)
            for j in range(n):
                if j > 0:
                    strides, f_in = 1, f_out
                x = mbconv(g, x, f"block{i + 1}{chr(j + 97)}_", f_in, f_out, kernel, strides, expand, 0.25,
                           DROP_CONNECT_RATE * b / blocks)
                b += 1
        top(g, x, self.round_filters(1280), self.classes if self.include_top else None, self.scaling[2])
        return g.layers


EFFICIENTNETS = variants(EfficientNet)


@hookimpl
def tlc_backbones():
    return EFFICIENTNETS
