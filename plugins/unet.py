"""`unet`: segmentation_models' (qubvel, the Keras library) Unet decoder over a backbone's taps,
block for block and name for name, so its parameter count equals that library's on the same
backbone and taps and its legacy .h5 weights load by name. Planned statically: a tap that is not
there, or a skip that meets its tap at another size, is found by `check`."""
from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import Field

from tlc import hookimpl
from tlc.errors import FieldError, did_you_mean
from tlc.plan.graph import HEAD_INPUT, BackboneMap
from tlc.plan.layers import (Activation, BatchNormalization, Conv2D, Conv2DTranspose, Layer, SkipConcatenate,
                             UpSampling2D)
from tlc.plugin.components import Head
from tlc.plugin.fields import Count

#: segmentation_models' decoder filters (its `decoder_filters` default), for a backbone of stride 32
DECODER_FILTERS = (256, 128, 64, 32, 16)
#: segmentation_models' taps (`Backbones._default_feature_layers`), at strides 16, 8, 4 and 2
AUTO_TAPS = {
    "vgg16": ("block5_conv3", "block4_conv3", "block3_conv3", "block2_conv2"),
    "vgg19": ("block5_conv4", "block4_conv4", "block3_conv4", "block2_conv2"),
    "mobilenet": ("conv_pw_11_relu", "conv_pw_5_relu", "conv_pw_3_relu", "conv_pw_1_relu"),
    "mobilenet_v2": ("block_13_expand_relu", "block_6_expand_relu", "block_3_expand_relu", "block_1_expand_relu"),
    **{f"efficientnet_b{k}": ("block6a_expand_activation", "block4a_expand_activation",
                              "block3a_expand_activation", "block2a_expand_activation") for k in range(8)},
    **{f"densenet{n}": ("pool4_conv", "pool3_conv", "pool2_conv", "conv1_relu") for n in (121, 169, 201)},
}
TapRef = Union[Annotated[int, Field(ge=0)], str]
TAPS = ("head", "taps")


def stride_of(backbone: BackboneMap, shape: tuple) -> int:
    """How many times smaller than the input a feature map is, as a power of two."""
    return 2 ** max(0, round(math.log2(max(backbone.input_shape[0] / max(shape[0], 1), 1.0))))


def auto_taps(backbone: BackboneMap, stages: int) -> list[str]:
    """segmentation_models' taps where it covers the backbone, else the last layer at each stride
    below the output's (16, 8, 4, 2 for a backbone of stride 32), found in the plan."""
    if backbone.type in AUTO_TAPS:
        return list(AUTO_TAPS[backbone.type][:stages - 1])
    last: dict[int, str] = {}
    for name, kind, shape in backbone.layers[1:]:
        if len(shape) == 3 and kind != "ZeroPadding2D":
            last[stride_of(backbone, shape)] = name
    return [last[2 ** k] for k in range(stages - 1, 0, -1) if 2 ** k in last]


def resolve_taps(taps, backbone: BackboneMap, stages: int) -> list[str]:
    """A decoder's taps' layer names, deepest first (at most one per stage but the last): `auto`,
    or names and indices checked against the backbone (a located error naming what is there)."""
    if taps == "auto":
        return auto_taps(backbone, stages)
    names = backbone.names
    out = []
    for i, ref in enumerate(taps):
        if isinstance(ref, int):
            if not 0 < ref < len(names):
                raise FieldError(TAPS + (i,), f"layer index {ref} is out of range; the backbone's layers are "
                                              f"1..{len(names) - 1}")
            ref = names[ref]
        elif ref not in names:
            raise FieldError(TAPS + (i,), f"no backbone layer named {ref!r}{did_you_mean(ref, names)}")
        out.append(ref)
    if len(out) >= stages:
        raise FieldError(TAPS, f"{len(out)} taps for {stages} decoder stages: at most {stages - 1} (the last "
                               "stage, at the input's size, has none)")
    return out


def upsamplings(backbone: BackboneMap) -> int:
    """How many x2 upsamplings bring the backbone's output back to the input's size."""
    return int(math.log2(stride_of(backbone, backbone.shape)))


def check_stages(filters: list, backbone: BackboneMap) -> list:
    """`decoder_filters`, refused (located) when it has another number of stages than upsamplings."""
    needed = upsamplings(backbone)
    if len(filters) != needed:
        raise FieldError(("head", "decoder_filters"),
                         f"{len(filters)} stage{'s' if len(filters) != 1 else ''} of x2 upsampling; the "
                         f"backbone's output ({backbone.layers[-1][0]}, stride {stride_of(backbone, backbone.shape)})"
                         f" needs {needed} to come back to the input's size")
    return filters


def tap_field():
    return Field("auto", description="the backbone layers the decoder reads, deepest first (names or indices); "
                                     "auto: segmentation_models' where it covers the backbone, else the last layer "
                                     "at each stride")


class DecoderHead(Head):
    """What segmentation_models' decoders share: classes per pixel, taps, batch norm and the
    output activation."""

    classes: Count = Field(description="classes per pixel, the background included (the last convolution's filters)")
    taps: Union[Literal["auto"], Annotated[list[TapRef], Field(min_length=1, max_length=8)]] = tap_field()
    batch_norm: bool = Field(True, description="batch norm after each decoder convolution (segmentation_models' "
                                               "decoder_use_batchnorm, pyramid_use_batchnorm)")
    output_activation: Literal["softmax", "sigmoid", "linear"] | None = Field(
        None, description="per pixel: softmax (default), sigmoid (the default for classes: 1) or linear (logits)")

    tasks = ("segmentation",)

    @property
    def activation(self) -> str:
        return self.output_activation or ("sigmoid" if self.classes == 1 else "softmax")

    def input_period(self, stride: int) -> int | None:
        return stride

    def conv_bn_relu(self, out: list[Layer], name: str, source: str, width: int, kernel: int = 3, *, rate: int = 1,
                     bias: bool = False, initializer: str = "he_uniform") -> str:
        """segmentation_models' Conv2dBn with ReLU: `{name}_conv` (no bias under batch norm, unless
        `bias`), `{name}_bn`, `{name}_relu`, appended to `out`; returns the last one's name."""
        out.append(Conv2D(f"{name}_conv", inputs=(source,), filters=width, kernel_size=(kernel, kernel),
                          padding="same", dilation_rate=(rate, rate), use_bias=bias or not self.batch_norm,
                          kernel_initializer=initializer))
        return self.bn_relu(out, name, f"{name}_conv")

    def classify(self, out: list[Layer], source: str, name: str = "final_conv", kernel: int = 3) -> None:
        """The last convolution to `classes` per pixel (`name`) and the output activation after it."""
        out.append(Conv2D(name, inputs=(source,), filters=self.classes, kernel_size=(kernel, kernel), padding="same"))
        out.append(Activation(self.activation, inputs=(name,), activation=self.activation))

    def bn_relu(self, out: list[Layer], name: str, source: str) -> str:
        """`{name}_bn` (with batch norm) and `{name}_relu` after `source`."""
        if self.batch_norm:
            out.append(BatchNormalization(f"{name}_bn", inputs=(source,)))
            source = f"{name}_bn"
        out.append(Activation(f"{name}_relu", inputs=(source,), activation="relu"))
        return f"{name}_relu"


class UnetHead(DecoderHead):
    """segmentation_models' Unet: a decoder stage per `decoder_filters` entry, each an x2
    upsampling (or a 4x4 stride-2 transposed convolution with batch norm and ReLU) joined with
    its tap, then 3x3 convolutions with batch norm and ReLU; a final 3x3 convolution to `classes`."""

    type: Literal["unet"] = "unet"
    decoder_filters: Annotated[list[Count], Field(min_length=1, max_length=8)] | None = Field(
        None, description="filters of each decoder stage, one stage per x2 upsampling back to the input's size "
                          "(default: segmentation_models' 256, 128, 64, 32, 16, the last ones for a smaller stride)")
    block: Literal["upsampling", "transpose"] = Field(
        "upsampling", description="upsampling (UpSampling2D, two 3x3 convolutions) or transpose (a 4x4 stride-2 "
                                  "Conv2DTranspose, one 3x3 convolution)")

    def stages(self, backbone: BackboneMap) -> list[int]:
        """Each stage's filters: as many stages as x2 upsamplings bring the backbone's output back
        to the input's size."""
        needed = upsamplings(backbone)
        filters = list(self.decoder_filters) if self.decoder_filters is not None else \
            list(DECODER_FILTERS[len(DECODER_FILTERS) - needed:]) if needed <= len(DECODER_FILTERS) else \
            [DECODER_FILTERS[0]] * (needed - len(DECODER_FILTERS)) + list(DECODER_FILTERS)
        return check_stages(filters, backbone)

    def layers_over(self, backbone: BackboneMap) -> list[Layer]:
        filters = self.stages(backbone)
        taps = resolve_taps(self.taps, backbone, len(filters))
        out: list[Layer] = []
        x = HEAD_INPUT

        def conv(name: str, width: int, source: str) -> str:
            return self.conv_bn_relu(out, name, source, width)

        if backbone.layers[-1][1] == "MaxPooling2D":  # segmentation_models' center block (VGG)
            x = conv("center_block1", 512, x)
            x = conv("center_block2", 512, x)
        for i, width in enumerate(filters):
            source = backbone.layers[-1][0] if i == 0 else f"decoder_stage{i - 1}b"
            if self.block == "upsampling":
                out.append(UpSampling2D(f"decoder_stage{i}_upsampling", inputs=(x,), size=(2, 2)))
                x = f"decoder_stage{i}_upsampling"
            else:
                out.append(Conv2DTranspose(f"decoder_stage{i}a_transpose", inputs=(x,), filters=width,
                                           kernel_size=(4, 4), strides=(2, 2), padding="same",
                                           use_bias=not self.batch_norm))
                x = self.bn_relu(out, f"decoder_stage{i}a", f"decoder_stage{i}a_transpose")
            if i < len(taps):
                out.append(SkipConcatenate(f"decoder_stage{i}_concat", inputs=(x, taps[i]), source=source))
                x = f"decoder_stage{i}_concat"
            if self.block == "upsampling":
                x = conv(f"decoder_stage{i}a", width, x)
            x = conv(f"decoder_stage{i}b", width, x)
        self.classify(out, x)
        return out


@hookimpl
def tlc_heads():
    return [UnetHead]
