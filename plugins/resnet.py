"""`resnet50/101/152` and `resnet50/101/152_v2`: keras.applications ResNet and ResNetV2,
described layer by layer as keras/src/applications/resnet.py builds them (same names, order)."""

from typing import ClassVar

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, Add, BatchNormalization, Layer

from .applications import Application, variants
from .blocks import classifier, conv, pad, pool


def _block_v1(g: Graph, x: str, filters: int, stride: int, conv_shortcut: bool, name: str) -> str:
    if conv_shortcut:
        shortcut = g(conv(f"{name}_0_conv", 4 * filters, 1, stride), x)
        shortcut = g(BatchNormalization(f"{name}_0_bn", epsilon=1.001e-5), shortcut)
    else:
        shortcut = x
    y = g(conv(f"{name}_1_conv", filters, 1, stride), x)
    y = g(BatchNormalization(f"{name}_1_bn", epsilon=1.001e-5), y)
    y = g(Activation(f"{name}_1_relu"), y)
    y = g(conv(f"{name}_2_conv", filters, 3, padding="same"), y)
    y = g(BatchNormalization(f"{name}_2_bn", epsilon=1.001e-5), y)
    y = g(Activation(f"{name}_2_relu"), y)
    y = g(conv(f"{name}_3_conv", 4 * filters, 1), y)
    y = g(BatchNormalization(f"{name}_3_bn", epsilon=1.001e-5), y)
    y = g(Add(f"{name}_add"), shortcut, y)
    return g(Activation(f"{name}_out"), y)


def _block_v2(g: Graph, x: str, filters: int, stride: int, conv_shortcut: bool, name: str) -> str:
    preact = g(BatchNormalization(f"{name}_preact_bn", epsilon=1.001e-5), x)
    preact = g(Activation(f"{name}_preact_relu"), preact)
    if conv_shortcut:
        shortcut = g(conv(f"{name}_0_conv", 4 * filters, 1, stride), preact)
    else:
        shortcut = g(pool(g.auto("max_pooling2d"), 1, stride), x) if stride > 1 else x
    y = g(conv(f"{name}_1_conv", filters, 1, bias=False), preact)
    y = g(BatchNormalization(f"{name}_1_bn", epsilon=1.001e-5), y)
    y = g(Activation(f"{name}_1_relu"), y)
    y = g(pad(f"{name}_2_pad", 1), y)
    y = g(conv(f"{name}_2_conv", filters, 3, stride, bias=False), y)
    y = g(BatchNormalization(f"{name}_2_bn", epsilon=1.001e-5), y)
    y = g(Activation(f"{name}_2_relu"), y)
    y = g(conv(f"{name}_3_conv", 4 * filters, 1), y)
    return g(Add(f"{name}_out"), shortcut, y)


class ResNet(Application):
    """ResNet v1 (`preact` False) or v2: stem, stacks of bottleneck blocks, (post-activation)."""

    blocks: ClassVar[tuple[int, ...]]  # blocks per stack (conv2 .. conv5)
    preact: ClassVar[bool] = False  # ResNetV2: batch norm and ReLU before each block

    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        x = g(pad("conv1_pad", 3))
        x = g(conv("conv1_conv", 64, 7, 2), x)
        if not self.preact:
            x = g(BatchNormalization("conv1_bn", epsilon=1.001e-5), x)
            x = g(Activation("conv1_relu"), x)
        x = g(pad("pool1_pad", 1), x)
        x = g(pool("pool1_pool", 3, 2), x)
        for stack, (filters, n) in enumerate(zip((64, 128, 256, 512), self.blocks), start=2):
            if self.preact:  # the stride sits on each stack's last block; conv5 keeps its size
                stride = 1 if stack == 5 else 2
                for i in range(1, n + 1):
                    x = _block_v2(g, x, filters, stride if i == n else 1, i == 1, f"conv{stack}_block{i}")
            else:
                for i in range(1, n + 1):
                    stride = (1 if stack == 2 else 2) if i == 1 else 1
                    x = _block_v1(g, x, filters, stride, i == 1, f"conv{stack}_block{i}")
        if self.preact:
            x = g(BatchNormalization("post_bn", epsilon=1.001e-5), x)
            x = g(Activation("post_relu"), x)
        if self.include_top:
            classifier(g, x, self.classes)
        return g.layers


RESNETS = variants(ResNet)


@hookimpl
def tlc_backbones():
    return RESNETS
