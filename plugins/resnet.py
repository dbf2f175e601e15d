"""`resnet50`, `resnet101` and `resnet50_v2`: keras.applications ResNet and ResNetV2, described
layer by layer as keras/src/applications/resnet.py builds them (same names, same order)."""

from typing import ClassVar, Literal

from tlc import hookimpl
from tlc.graph import Graph
from tlc.layers import Activation, Add, BatchNormalization, Conv2D, Dense, GlobalPooling2D, Layer, Pooling2D, \
    ZeroPadding2D

from .applications import Application


def conv(name: str, filters: int, kernel: int, stride: int = 1, padding: str = "valid", bias: bool = True) -> Conv2D:
    return Conv2D(name, filters=filters, kernel_size=(kernel, kernel), strides=(stride, stride), padding=padding,
                  use_bias=bias)


def pool(name: str, size: int, stride: int, mode: str = "max", padding: str = "valid") -> Pooling2D:
    return Pooling2D(name, mode=mode, pool_size=(size, size), strides=(stride, stride), padding=padding)


def pad(name: str, p: int) -> ZeroPadding2D:
    return ZeroPadding2D(name, padding=((p, p), (p, p)))


def classifier(g: Graph, x: str, classes: int, pooling: str = "avg_pool") -> None:
    """Keras's include_top: global average pooling, then a softmax Dense named predictions."""
    x = g(GlobalPooling2D(pooling, mode="avg"), x)
    g(Dense("predictions", units=classes, activation="softmax"), x)


def _block_v1(g: Graph, x: str, filters: int, stride: int, conv_shortcut: bool, name: str) -> str:
    if conv_shortcut:
        shortcut = g(conv(f"{name}_0_conv", 4 * filters, 1, stride), x)
        shortcut = g(BatchNormalization(f"{name}_0_bn"), shortcut)
    else:
        shortcut = x
    y = g(conv(f"{name}_1_conv", filters, 1, stride), x)
    y = g(BatchNormalization(f"{name}_1_bn"), y)
    y = g(Activation(f"{name}_1_relu"), y)
    y = g(conv(f"{name}_2_conv", filters, 3, padding="same"), y)
    y = g(BatchNormalization(f"{name}_2_bn"), y)
    y = g(Activation(f"{name}_2_relu"), y)
    y = g(conv(f"{name}_3_conv", 4 * filters, 1), y)
    y = g(BatchNormalization(f"{name}_3_bn"), y)
    y = g(Add(f"{name}_add"), shortcut, y)
    return g(Activation(f"{name}_out"), y)


def _block_v2(g: Graph, x: str, filters: int, stride: int, conv_shortcut: bool, name: str) -> str:
    preact = g(BatchNormalization(f"{name}_preact_bn"), x)
    preact = g(Activation(f"{name}_preact_relu"), preact)
    if conv_shortcut:
        shortcut = g(conv(f"{name}_0_conv", 4 * filters, 1, stride), preact)
    else:
        shortcut = g(pool(g.auto("max_pooling2d"), 1, stride), x) if stride > 1 else x
    y = g(conv(f"{name}_1_conv", filters, 1, bias=False), preact)
    y = g(BatchNormalization(f"{name}_1_bn"), y)
    y = g(Activation(f"{name}_1_relu"), y)
    y = g(pad(f"{name}_2_pad", 1), y)
    y = g(conv(f"{name}_2_conv", filters, 3, stride, bias=False), y)
    y = g(BatchNormalization(f"{name}_2_bn"), y)
    y = g(Activation(f"{name}_2_relu"), y)
    y = g(conv(f"{name}_3_conv", 4 * filters, 1), y)
    return g(Add(f"{name}_out"), shortcut, y)


class ResNet(Application):
    """ResNet v1 (`preact` False) or v2: stem, stacks of bottleneck blocks, (post-activation)."""

    preprocess_mode = "caffe"
    blocks: ClassVar[tuple[int, ...]] = (3, 4, 6, 3)  # blocks per stack (conv2 .. conv5)
    preact: ClassVar[bool] = False  # ResNetV2: batch norm and ReLU before each block

    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        x = g(pad("conv1_pad", 3))
        x = g(conv("conv1_conv", 64, 7, 2), x)
        if not self.preact:
            x = g(BatchNormalization("conv1_bn"), x)
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
            x = g(BatchNormalization("post_bn"), x)
            x = g(Activation("post_relu"), x)
        if self.include_top:
            classifier(g, x, self.classes)
        return g.layers


class ResNet50(ResNet):
    type: Literal["resnet50"] = "resnet50"
    keras_function = "ResNet50"


class ResNet101(ResNet):
    type: Literal["resnet101"] = "resnet101"
    keras_function = "ResNet101"
    blocks = (3, 4, 23, 3)


class ResNet50V2(ResNet):
    type: Literal["resnet50_v2"] = "resnet50_v2"
    keras_function = "ResNet50V2"
    preprocess_mode = "tf"
    preact = True


@hookimpl
def tlc_backbones():
    return [ResNet50, ResNet101, ResNet50V2]
