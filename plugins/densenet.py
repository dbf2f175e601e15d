"""`densenet121/169/201`: keras.applications DenseNet (dense blocks joined by concatenation,
halved by transition blocks), described as keras/src/applications/densenet.py builds them."""

from typing import ClassVar

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, BatchNormalization, Concatenate, Layer

from .applications import Application, variants
from .blocks import classifier, conv, pad, pool

GROWTH_RATE = 32


class DenseNet(Application):
    blocks: ClassVar[tuple[int, ...]]  # conv blocks per dense block

    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        x = g(pad(g.auto("zero_padding2d"), 3))
        x = g(conv("conv1_conv", 64, 7, 2, bias=False), x)
        x = g(BatchNormalization("conv1_bn", epsilon=1.001e-5), x)
        x = g(Activation("conv1_relu"), x)
        x = g(pad(g.auto("zero_padding2d"), 1), x)
        x = g(pool("pool1", 3, 2), x)
        channels = 64
        for stage, n in enumerate(self.blocks, start=2):
            for i in range(1, n + 1):
                x = self._conv_block(g, x, f"conv{stage}_block{i}")
                channels += GROWTH_RATE
            if stage < 5:
                channels = int(channels * 0.5)
                x = self._transition(g, x, channels, f"pool{stage}")
        x = g(BatchNormalization("bn", epsilon=1.001e-5), x)
        x = g(Activation("relu"), x)
        if self.include_top:
            classifier(g, x, self.classes)
        return g.layers

    @staticmethod
    def _conv_block(g: Graph, x: str, name: str) -> str:
        y = g(BatchNormalization(f"{name}_0_bn", epsilon=1.001e-5), x)
        y = g(Activation(f"{name}_0_relu"), y)
        y = g(conv(f"{name}_1_conv", 4 * GROWTH_RATE, 1, bias=False), y)
        y = g(BatchNormalization(f"{name}_1_bn", epsilon=1.001e-5), y)
        y = g(Activation(f"{name}_1_relu"), y)
        y = g(conv(f"{name}_2_conv", GROWTH_RATE, 3, padding="same", bias=False), y)
        return g(Concatenate(f"{name}_concat"), x, y)

    @staticmethod
    def _transition(g: Graph, x: str, channels: int, name: str) -> str:
        x = g(BatchNormalization(f"{name}_bn", epsilon=1.001e-5), x)
        x = g(Activation(f"{name}_relu"), x)
        x = g(conv(f"{name}_conv", channels, 1, bias=False), x)
        return g(pool(f"{name}_pool", 2, 2, mode="avg"), x)


DENSENETS = variants(DenseNet)


@hookimpl
def tlc_backbones():
    return DENSENETS
