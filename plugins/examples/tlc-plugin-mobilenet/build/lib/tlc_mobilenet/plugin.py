"""The plugin module named by the `tlc` entry point: it registers its types through the hooks."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

import tlc
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, Add, BatchNormalization, Conv2D, Dense, GlobalPooling2D, Input


class MobileNetV3Small(tlc.Backbone):
    """keras.applications.MobileNetV3Small without its top, planned by building it (no static
    description), so `tlc check` imports TensorFlow for it: the way any Keras-built network can
    be a plugin. (tlc's built-in `mobilenet_v3_small` is the same network, described statically.)"""

    type: Literal["keras_mobilenet_v3_small"] = "keras_mobilenet_v3_small"
    alpha: Literal[0.75, 1.0] = 1.0
    minimalistic: bool = False

    supports_imagenet = True

    def build(self, input_shape):
        import keras

        inputs = keras.Input(shape=tuple(input_shape), name="input")
        return keras.applications.MobileNetV3Small(
            input_tensor=inputs, include_top=False, alpha=self.alpha, minimalistic=self.minimalistic,
            weights="imagenet" if self.weights == "imagenet" else None,
        )

    def preprocess(self, images):
        return images * 255.0  # the model rescales 0..255 to [-1, 1] itself


class TinyResNet(tlc.Backbone):
    """A small residual network described statically as a graph: checked without TensorFlow,
    built by tlc from the same description."""

    type: Literal["tiny_resnet"] = "tiny_resnet"
    width: Annotated[int, Field(gt=0, le=1024)] = 16
    blocks: Annotated[int, Field(gt=0, le=16)] = 2

    def layers(self, input_shape):
        g = Graph(Input("input"))
        x = g(Conv2D("stem_conv", filters=self.width, strides=(2, 2), padding="same", use_bias=False))
        x = g(BatchNormalization("stem_bn"), x)
        x = g(Activation("stem_relu"), x)
        for i in range(1, self.blocks + 1):
            y = g(Conv2D(f"block{i}_conv1", filters=self.width, padding="same", activation="relu"), x)
            y = g(Conv2D(f"block{i}_conv2", filters=self.width, padding="same"), y)
            x = g(Add(f"block{i}_add"), x, y)  # the shortcut: two inputs
            x = g(Activation(f"block{i}_out"), x)
        return g.layers


class ConvHead(tlc.Head):
    """1x1 convolution, global average pooling, softmax classifier; described statically."""

    type: Literal["conv_head"] = "conv_head"
    filters: Annotated[int, Field(gt=0, le=4096)] = 64
    classes: Annotated[int, Field(gt=0)]

    def layers(self, feature_shape):
        return [
            Conv2D("head_conv", filters=self.filters, kernel_size=(1, 1), activation="relu"),
            GlobalPooling2D("head_gap", mode="avg"),
            Dense("predictions", units=self.classes, activation="softmax"),
        ]


@tlc.hookimpl
def tlc_backbones():
    return [MobileNetV3Small, TinyResNet]


@tlc.hookimpl
def tlc_heads():
    return [ConvHead]
