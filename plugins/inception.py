"""`inception_v3` and `inception_resnet_v2`: keras.applications InceptionV3 and
InceptionResNetV2 (parallel branches joined by concatenation; the latter adds scaled residuals),
described as keras/src/applications/inception_v3.py and inception_resnet_v2.py build them."""

from typing import ClassVar

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, Concatenate, CustomScaleLayer, Layer

from .applications import Application, variants
from .blocks import classifier, conv, conv_bn, pool


def _avg_branch(g: Graph, x: str, filters: int) -> str:
    return conv_bn(g, g(pool(g.auto("average_pooling2d"), 3, 1, mode="avg", padding="same"), x), filters, 1)


def _join(g: Graph, name: str, *branches: str) -> str:
    return g(Concatenate(name), *branches)


class Inception(Application):
    residual: ClassVar[bool]  # InceptionResNetV2

    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        x = conv_bn(g, g.layers[0].name, 32, 3, 2, padding="valid")
        x = conv_bn(g, x, 32, 3, padding="valid")
        x = conv_bn(g, x, 64, 3)
        x = g(pool(g.auto("max_pooling2d"), 3, 2), x)
        x = conv_bn(g, x, 80, 1, padding="valid")
        x = conv_bn(g, x, 192, 3, padding="valid")
        x = g(pool(g.auto("max_pooling2d"), 3, 2), x)
        x = self._resnet_v2(g, x) if self.residual else self._v3(g, x)
        if self.include_top:
            classifier(g, x, self.classes)
        return g.layers

    @staticmethod
    def _v3(g: Graph, x: str) -> str:
        for i, pool_filters in enumerate((32, 64, 64)):  # mixed0..2: 35x35
            b1 = conv_bn(g, x, 64, 1)
            b5 = conv_bn(g, conv_bn(g, x, 48, 1), 64, 5)
            b3 = conv_bn(g, conv_bn(g, conv_bn(g, x, 64, 1), 96, 3), 96, 3)
            x = _join(g, f"mixed{i}", b1, b5, b3, _avg_branch(g, x, pool_filters))
        b3 = conv_bn(g, x, 384, 3, 2, padding="valid")  # mixed3: 17x17
        b3d = conv_bn(g, conv_bn(g, conv_bn(g, x, 64, 1), 96, 3), 96, 3, 2, padding="valid")
        x = _join(g, "mixed3", b3, b3d, g(pool(g.auto("max_pooling2d"), 3, 2), x))
        for i, width in enumerate((128, 160, 160, 192)):  # mixed4..7
            b1 = conv_bn(g, x, 192, 1)
            b7 = conv_bn(g, conv_bn(g, conv_bn(g, x, width, 1), width, (1, 7)), 192, (7, 1))
            b7d = conv_bn(g, x, width, 1)
            for kernel, filters in (((7, 1), width), ((1, 7), width), ((7, 1), width), ((1, 7), 192)):
                b7d = conv_bn(g, b7d, filters, kernel)
            x = _join(g, f"mixed{4 + i}", b1, b7, b7d, _avg_branch(g, x, 192))
        b3 = conv_bn(g, conv_bn(g, x, 192, 1), 320, 3, 2, padding="valid")  # mixed8: 8x8
        b7 = conv_bn(g, conv_bn(g, conv_bn(g, x, 192, 1), 192, (1, 7)), 192, (7, 1))
        b7 = conv_bn(g, b7, 192, 3, 2, padding="valid")
        x = _join(g, "mixed8", b3, b7, g(pool(g.auto("max_pooling2d"), 3, 2), x))
        for i in range(2):  # mixed9, mixed10
            b1 = conv_bn(g, x, 320, 1)
            b3 = conv_bn(g, x, 384, 1)
            b3 = _join(g, f"mixed9_{i}", conv_bn(g, b3, 384, (1, 3)), conv_bn(g, b3, 384, (3, 1)))
            b3d = conv_bn(g, conv_bn(g, x, 448, 1), 384, 3)
            b3d = _join(g, g.auto("concatenate"), conv_bn(g, b3d, 384, (1, 3)), conv_bn(g, b3d, 384, (3, 1)))
            x = _join(g, f"mixed{9 + i}", b1, b3, b3d, _avg_branch(g, x, 192))
        return x

    @staticmethod
    def _resnet_v2(g: Graph, x: str) -> str:
        b0 = conv_bn(g, x, 96, 1)
        b1 = conv_bn(g, conv_bn(g, x, 48, 1), 64, 5)
        b2 = conv_bn(g, conv_bn(g, conv_bn(g, x, 64, 1), 96, 3), 96, 3)
        x = _join(g, "mixed_5b", b0, b1, b2, _avg_branch(g, x, 64))
        channels = 320
        for i in range(1, 11):
            x = _residual(g, x, channels, 0.17, f"block35_{i}", conv_bn(g, x, 32, 1),
                          conv_bn(g, conv_bn(g, x, 32, 1), 32, 3),
                          conv_bn(g, conv_bn(g, conv_bn(g, x, 32, 1), 48, 3), 64, 3))
        b0 = conv_bn(g, x, 384, 3, 2, padding="valid")
        b1 = conv_bn(g, conv_bn(g, conv_bn(g, x, 256, 1), 256, 3), 384, 3, 2, padding="valid")
        x = _join(g, "mixed_6a", b0, b1, g(pool(g.auto("max_pooling2d"), 3, 2), x))
        channels = 1088
        for i in range(1, 21):
            x = _residual(g, x, channels, 0.1, f"block17_{i}", conv_bn(g, x, 192, 1),
                          conv_bn(g, conv_bn(g, conv_bn(g, x, 128, 1), 160, (1, 7)), 192, (7, 1)))
        b0 = conv_bn(g, conv_bn(g, x, 256, 1), 384, 3, 2, padding="valid")
        b1 = conv_bn(g, conv_bn(g, x, 256, 1), 288, 3, 2, padding="valid")
        b2 = conv_bn(g, conv_bn(g, conv_bn(g, x, 256, 1), 288, 3), 320, 3, 2, padding="valid")
        x = _join(g, "mixed_7a", b0, b1, b2, g(pool(g.auto("max_pooling2d"), 3, 2), x))
        channels = 2080
        for i in range(1, 11):
            x = _residual(g, x, channels, 0.2 if i < 10 else 1.0, f"block8_{i}", conv_bn(g, x, 192, 1),
                          conv_bn(g, conv_bn(g, conv_bn(g, x, 192, 1), 224, (1, 3)), 256, (3, 1)),
                          activate=i < 10)
        return conv_bn(g, x, 1536, 1, name="conv_7b")


def _residual(g: Graph, x: str, channels: int, scale: float, name: str, *branches: str, activate: bool = True) -> str:
    """inception_resnet_block: the branches, concatenated, projected back and added, scaled."""
    up = g(conv(f"{name}_conv", channels, 1, padding="same"), _join(g, f"{name}_mixed", *branches))
    x = g(CustomScaleLayer(g.auto("custom_scale_layer"), scale=scale), x, up)
    return g(Activation(f"{name}_ac"), x) if activate else x


INCEPTIONS = variants(Inception)


@hookimpl
def tlc_backbones():
    return INCEPTIONS
