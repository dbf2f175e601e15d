"""`deeplab_v3_plus`: DeepLabV3+ (Chen et al. 2018) over a backbone's output and one low-level
tap, as Keras's own example ("Multiclass semantic segmentation using DeepLabV3+", keras.io) builds
it: atrous spatial pyramid pooling (image pooling, a 1x1 and three dilated 3x3 convolutions,
joined and projected), upsampled bilinearly to the low-level tap, joined with its 1x1 projection,
two 3x3 convolutions, upsampled to the input and a 1x1 convolution to `classes`. Planned
statically like the other decoders: the join meets its tap at one size or `check` says which
inputs work."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from tlc import hookimpl
from tlc.errors import FieldError
from tlc.plan.graph import HEAD_INPUT, BackboneMap
from tlc.plan.layers import Concatenate, GlobalPooling2D, Layer, SkipConcatenate, UpSampling2D
from tlc.plugin.fields import Count

from .unet import AUTO_TAPS, TAPS, DecoderHead, TapRef, resolve_taps, stride_of

#: the low-level tap's stride (the paper's and the Keras example's: conv2_block3_2_relu of ResNet50)
LOW_LEVEL_STRIDE = 4


def low_level_tap(backbone: BackboneMap) -> str:
    """The last layer at stride 4: segmentation_models' where it names one, else from the plan."""
    if backbone.type in AUTO_TAPS:
        return AUTO_TAPS[backbone.type][2]
    at = [name for name, kind, shape in backbone.layers[1:]
          if len(shape) == 3 and kind != "ZeroPadding2D" and stride_of(backbone, shape) == LOW_LEVEL_STRIDE]
    if not at:
        raise FieldError(TAPS, "the backbone has no layer at stride 4 for the low-level features: name one "
                               "in taps: [layer]")
    return at[-1]


class DeepLabV3PlusHead(DecoderHead):
    """DeepLabV3+: atrous spatial pyramid pooling over the backbone's output, joined with a
    low-level tap's 1x1 projection, refined and upsampled to the input's size."""

    type: Literal["deeplab_v3_plus"] = "deeplab_v3_plus"
    taps: Union[Literal["auto"], Annotated[list[TapRef], Field(min_length=1, max_length=1)]] = Field(
        "auto", description="the low-level tap (a layer name or index); auto: the last layer at stride 4 "
                            "(segmentation_models' where it names one)")
    filters: Count = Field(256, description="filters of the pyramid's branches, its projection and the decoder")
    atrous_rates: Annotated[list[Count], Field(min_length=1, max_length=6)] = Field(
        [6, 12, 18], description="the dilation of each 3x3 pyramid branch (the paper's for output stride 16)")
    low_level_filters: Count = Field(48, description="filters of the low-level tap's 1x1 projection")

    def layers_over(self, backbone: BackboneMap) -> list[Layer]:
        tap = low_level_tap(backbone) if self.taps == "auto" else resolve_taps(self.taps, backbone, 2)[0]
        high, low = stride_of(backbone, backbone.shape), stride_of(backbone, backbone.shape_of(tap))
        if low >= high:
            raise FieldError(TAPS, f"{tap} is at stride {low}, not below the backbone's output (stride {high}): "
                                   "the low-level tap must be finer")
        out: list[Layer] = []

        def conv(name: str, source: str, width: int, kernel: int = 1, rate: int = 1, bias: bool = False) -> str:
            return self.conv_bn_relu(out, name, source, width, kernel, rate=rate, bias=bias, initializer="he_normal")

        h, w, _ = backbone.shape
        out.append(GlobalPooling2D("aspp_pooling", inputs=(HEAD_INPUT,), keepdims=True))
        pooled = conv("aspp_pooling", "aspp_pooling", self.filters, bias=True)  # (the Keras example's bias)
        out.append(UpSampling2D("aspp_pooling_upsampling", inputs=(pooled,), size=(h, w), interpolation="bilinear"))
        branches = ["aspp_pooling_upsampling", conv("aspp_1x1", HEAD_INPUT, self.filters)]
        branches += [conv(f"aspp_rate{rate}", HEAD_INPUT, self.filters, 3, rate) for rate in self.atrous_rates]
        out.append(Concatenate("aspp_concat", inputs=tuple(branches)))
        x = conv("aspp_projection", "aspp_concat", self.filters)
        factor = high // low
        out.append(UpSampling2D("decoder_upsampling", inputs=(x,), size=(factor, factor), interpolation="bilinear"))
        projected = conv("low_level", tap, self.low_level_filters)
        out.append(SkipConcatenate("decoder_concat", inputs=("decoder_upsampling", projected),
                                   source=backbone.layers[-1][0], factor=factor, tap=tap))
        x = conv("decoder_stage0", "decoder_concat", self.filters, 3)
        x = conv("decoder_stage1", x, self.filters, 3)
        out.append(UpSampling2D("final_upsampling", inputs=(x,), size=(low, low), interpolation="bilinear"))
        self.classify(out, "final_upsampling", kernel=1)
        return out


@hookimpl
def tlc_heads():
    return [DeepLabV3PlusHead]
