"""`xception`: keras.applications.Xception (depthwise-separable convolutions with residual
shortcuts), described as keras/src/applications/xception.py builds it."""

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, Add, BatchNormalization, Conv2D, Layer, SeparableConv2D

from .applications import Application, variants
from .blocks import classifier, pool


def sepconv(name: str, filters: int) -> SeparableConv2D:
    return SeparableConv2D(name, filters=filters, padding="same", use_bias=False)


class Xception(Application):

    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        x = g(Conv2D("block1_conv1", filters=32, strides=(2, 2), use_bias=False))
        x = g(BatchNormalization("block1_conv1_bn"), x)
        x = g(Activation("block1_conv1_act"), x)
        x = g(Conv2D("block1_conv2", filters=64, use_bias=False), x)
        x = g(BatchNormalization("block1_conv2_bn"), x)
        x = g(Activation("block1_conv2_act"), x)
        for block, filters in ((2, (128, 128)), (3, (256, 256)), (4, (728, 728))):
            x = self._down(g, x, block, filters, first_act=block > 2)
        for i in range(8):  # the middle flow
            residual, prefix = x, f"block{i + 5}"
            for k in (1, 2, 3):
                x = g(Activation(f"{prefix}_sepconv{k}_act"), x)
                x = g(sepconv(f"{prefix}_sepconv{k}", 728), x)
                x = g(BatchNormalization(f"{prefix}_sepconv{k}_bn"), x)
            x = g(Add(g.auto("add")), x, residual)
        x = self._down(g, x, 13, (728, 1024), first_act=True, shortcut=1024)
        for k, filters in ((1, 1536), (2, 2048)):
            x = g(sepconv(f"block14_sepconv{k}", filters), x)
            x = g(BatchNormalization(f"block14_sepconv{k}_bn"), x)
            x = g(Activation(f"block14_sepconv{k}_act"), x)
        if self.include_top:
            classifier(g, x, self.classes)
        return g.layers

    @staticmethod
    def _down(g: Graph, x: str, block: int, filters: tuple[int, int], first_act: bool,
              shortcut: int | None = None) -> str:
        """Two separable convolutions and a strided max pooling, plus a strided 1x1 shortcut."""
        residual = g(Conv2D(g.auto("conv2d"), filters=shortcut or filters[1], kernel_size=(1, 1), strides=(2, 2),
                            padding="same", use_bias=False), x)
        residual = g(BatchNormalization(g.auto("batch_normalization")), residual)
        name = f"block{block}"
        if first_act:
            x = g(Activation(f"{name}_sepconv1_act"), x)
        x = g(sepconv(f"{name}_sepconv1", filters[0]), x)
        x = g(BatchNormalization(f"{name}_sepconv1_bn"), x)
        x = g(Activation(f"{name}_sepconv2_act"), x)
        x = g(sepconv(f"{name}_sepconv2", filters[1]), x)
        x = g(BatchNormalization(f"{name}_sepconv2_bn"), x)
        x = g(pool(f"{name}_pool", 3, 2, padding="same"), x)
        return g(Add(g.auto("add")), x, residual)


XCEPTIONS = variants(Xception)


@hookimpl
def tlc_backbones():
    return XCEPTIONS
