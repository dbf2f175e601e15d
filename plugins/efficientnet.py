"""`efficientnet_b0` ... `efficientnet_b7`: keras.applications EfficientNet B0-B7, described as
keras/src/applications/efficientnet.py builds them. Their rescaling and normalization are
layers of the model, so the model takes 0..255 images."""

import math
from typing import ClassVar

from tlc import hookimpl
from tlc.graph import Graph
from tlc.layers import Activation, Add, BatchNormalization, Conv2D, Dense, DepthwiseConv2D, Dropout, \
    GlobalPooling2D, Layer, Multiply, Normalization, Rescaling, Reshape, ZeroPadding2D

from .applications import Application, variants
from .blocks import pointwise

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

    def round_filters(self, filters: int, divisor: int = 8) -> int:
        filters *= self.scaling[0]
        new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
        return int(new + divisor if new < 0.9 * filters else new)

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
                x = self._block(g, x, DROP_CONNECT_RATE * b / blocks, f"block{i + 1}{chr(j + 97)}_",
                                f_in, f_out, kernel, strides, expand)
                b += 1
        top(g, x, self.round_filters(1280), self.classes if self.include_top else None, self.scaling[2])
        return g.layers

    @staticmethod
    def _block(g: Graph, inputs: str, drop_rate: float, name: str, f_in: int, f_out: int, kernel: int,
               strides: int, expand: int) -> str:
        filters, x = f_in * expand, inputs
        if expand != 1:
            x = g(pointwise(f"{name}expand_conv", filters), x)
            x = g(BatchNormalization(f"{name}expand_bn"), x)
            x = g(Activation(f"{name}expand_activation", activation="swish"), x)
        if strides == 2:
            x = g(ZeroPadding2D(f"{name}dwconv_pad", correct_for=kernel), x)
        x = g(DepthwiseConv2D(f"{name}dwconv", kernel_size=(kernel, kernel), strides=(strides, strides),
                              padding="valid" if strides == 2 else "same", use_bias=False), x)
        x = g(BatchNormalization(f"{name}bn"), x)
        x = g(Activation(f"{name}activation", activation="swish"), x)
        se = g(GlobalPooling2D(f"{name}se_squeeze", mode="avg"), x)
        se = g(Reshape(f"{name}se_reshape", target_shape=(1, 1, filters)), se)
        se = g(pointwise(f"{name}se_reduce", max(1, int(f_in * 0.25)), bias=True, activation="swish"), se)
        se = g(pointwise(f"{name}se_expand", filters, bias=True, activation="sigmoid"), se)
        x = g(Multiply(f"{name}se_excite"), x, se)
        x = g(pointwise(f"{name}project_conv", f_out), x)
        x = g(BatchNormalization(f"{name}project_bn"), x)
        if strides == 1 and f_in == f_out:
            if drop_rate > 0:
                x = g(Dropout(f"{name}drop", rate=drop_rate), x)
            x = g(Add(f"{name}add"), x, inputs)
        return x


EFFICIENTNETS = variants(EfficientNet)


@hookimpl
def tlc_backbones():
    return EFFICIENTNETS
