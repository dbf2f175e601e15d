"""`linknet`: segmentation_models' (qubvel, the Keras library) Linknet decoder over a backbone's
taps, block for block and name for name (`decoder_stage0a_conv`, `decoder_stage0_upsampling`,
`decoder_stage0b_conv`, `decoder_stage0c_conv`, `decoder_stage0_add`), so its parameter count
equals that library's on the same backbone and taps. Where U-Net concatenates a tap, Linknet adds
it: each stage ends with the tap's channels, which is why its filters are the taps' own."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tlc import hookimpl
from tlc.errors import FieldError
from tlc.plan.graph import HEAD_INPUT, BackboneMap
from tlc.plan.layers import Conv2DTranspose, Layer, SkipAdd, UpSampling2D
from tlc.plugin.fields import Count

from .unet import DecoderHead, check_stages, resolve_taps, upsamplings

#: segmentation_models' Linknet `decoder_filters` for its last stage (the others take their tap's channels)
LAST_FILTERS = 16
FILTERS = ("head", "decoder_filters")


class LinknetHead(DecoderHead):
    """segmentation_models' Linknet: per stage a 1x1 convolution to a quarter of the incoming
    channels, an x2 upsampling and a 3x3 convolution (or a 4x4 stride-2 transposed convolution),
    a 1x1 convolution to the tap's channels and the tap added; a final 3x3 convolution to `classes`."""

    type: Literal["linknet"] = "linknet"
    decoder_filters: Annotated[list[Count | None], Field(min_length=1, max_length=8)] | None = Field(
        None, description="filters of each stage's last 1x1 convolution, one stage per x2 upsampling back to the "
                          "input's size; null for a stage with a tap (it takes the tap's channels) (default: "
                          "segmentation_models' null, ..., null, 16)")
    block: Literal["upsampling", "transpose"] = Field(
        "upsampling", description="upsampling (UpSampling2D and a 3x3 convolution) or transpose (a 4x4 stride-2 "
                                  "Conv2DTranspose with batch norm and ReLU)")

    def widths(self, backbone: BackboneMap, taps: list[str], stages: int) -> list[int]:
        """Each stage's output channels: its tap's, else the stage's `decoder_filters` entry."""
        given = list(self.decoder_filters) if self.decoder_filters is not None else \
            [None] * (stages - 1) + [LAST_FILTERS]
        out = []
        for i, width in enumerate(check_stages(given, backbone)):
            if i < len(taps):
                channels = backbone.shape_of(taps[i])[-1]
                if width is not None and width != channels:
                    raise FieldError(FILTERS + (i,), f"{width}, but stage {i} adds its tap {taps[i]}, of {channels} "
                                                     f"channels: leave it null")
                out.append(channels)
            elif width is None:
                raise FieldError(FILTERS + (i,), f"stage {i} has no tap to take its width from: give a number")
            else:
                out.append(width)
        return out

    def layers_over(self, backbone: BackboneMap) -> list[Layer]:
        stages = upsamplings(backbone)
        taps = resolve_taps(self.taps, backbone, stages)
        out: list[Layer] = []
        x, channels = HEAD_INPUT, backbone.shape[-1]

        def conv(name: str, width: int, source: str, kernel: int) -> str:
            return self.conv_bn_relu(out, name, source, width, kernel)

        if backbone.layers[-1][1] == "MaxPooling2D":  # segmentation_models' center block (VGG)
            x = conv("center_block1", 512, x, 3)
            x = conv("center_block2", 512, x, 3)
            channels = 512
        for i, width in enumerate(self.widths(backbone, taps, stages)):
            quarter = max(1, channels // 4)
            x = conv(f"decoder_stage{i}a", quarter, x, 1)
            if self.block == "upsampling":
                out.append(UpSampling2D(f"decoder_stage{i}_upsampling", inputs=(x,), size=(2, 2)))
                x = conv(f"decoder_stage{i}b", quarter, f"decoder_stage{i}_upsampling", 3)
            else:
                out.append(Conv2DTranspose(f"decoder_stage{i}b_transpose", inputs=(x,), filters=quarter,
                                           kernel_size=(4, 4), strides=(2, 2), padding="same",
                                           use_bias=not self.batch_norm))
                x = self.bn_relu(out, f"decoder_stage{i}b", f"decoder_stage{i}b_transpose")
            x = conv(f"decoder_stage{i}c", width, x, 1)
            if i < len(taps):
                source = backbone.layers[-1][0] if i == 0 else f"decoder_stage{i - 1}_add"
                out.append(SkipAdd(f"decoder_stage{i}_add", inputs=(x, taps[i]), source=source, tap=taps[i]))
                x = f"decoder_stage{i}_add"
            channels = width
        self.classify(out, x)
        return out


@hookimpl
def tlc_heads():
    return [LinknetHead]
