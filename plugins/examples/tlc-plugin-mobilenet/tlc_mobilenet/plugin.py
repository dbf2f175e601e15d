"""The plugin module named by the `tlc` entry point: it registers its types through the hooks."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

import tlc
from tlc.layers import Conv2D, Dense, GlobalPooling2D


class MobileNetV2(tlc.Backbone):
    """keras.applications.MobileNetV2 without its top; planned by building it (no static layers)."""

    type: Literal["mobilenet_v2"] = "mobilenet_v2"
    alpha: Literal[0.35, 0.5, 0.75, 1.0, 1.3, 1.4] = 1.0

    supports_imagenet = True

    def build(self, input_shape):
        import keras

        inputs = keras.Input(shape=tuple(input_shape), name="input")
        return keras.applications.MobileNetV2(
            input_tensor=inputs, include_top=False, alpha=self.alpha,
            weights="imagenet" if self.weights == "imagenet" else None,
        )

    def preprocess(self, images):
        return images * 2.0 - 1.0  # MobileNetV2 expects [-1, 1]


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
    return [MobileNetV2]


@tlc.hookimpl
def tlc_heads():
    return [ConvHead]
