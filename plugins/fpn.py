"""`fpn`: segmentation_models' (qubvel, the Keras library) FPN decoder over a backbone's taps,
block for block and name for name (`fpn_stage_p5_conv`, `segm_stage5a_conv`, `head_conv`), so
its parameter count equals that library's on the same backbone and taps."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from tlc import hookimpl
from tlc.errors import FieldError
from tlc.plan.graph import HEAD_INPUT, BackboneMap
from tlc.plan.layers import Add, Concatenate, Conv2D, Layer, SkipAdd, SpatialDropout2D, UpSampling2D
from tlc.plugin.fields import Count, Rate

from .unet import DecoderHead, resolve_taps, stride_of


class FpnHead(DecoderHead):
    """segmentation_models' FPN: per tap (deepest first) the pyramid level `p` = upsampled level
    above + 1x1 projection of the tap; each level through two 3x3 convolutions, upsampled to the
    finest and aggregated; a 3x3 convolution, a bilinear x2 upsampling and `head_conv` to `classes`."""

    type: Literal["fpn"] = "fpn"
    pyramid_filters: Count = Field(256, description="filters of the pyramid's 1x1 projections (segmentation "
                                                    "channels: half of them)")
    aggregation: Literal["concat", "sum"] = Field("concat", description="how the levels join (segmentation_models' "
                                                                        "FPN default: concat)")
    dropout: Rate | None = Field(None, description="SpatialDropout2D rate after the aggregation (none by default)")

    def layers_over(self, backbone: BackboneMap) -> list[Layer]:
        stages = int(math.log2(stride_of(backbone, backbone.shape)))
        taps = resolve_taps(self.taps, backbone, stages)
        if not taps:
            raise FieldError(("head", "taps"), "an FPN needs at least one tap below the backbone's output")
        half = self.pyramid_filters // 2
        out: list[Layer] = []

        def conv(name: str, width: int, source: str) -> str:
            return self.conv_bn_relu(out, name, source, width)

        x, width, levels = HEAD_INPUT, backbone.shape[-1], []
        for tap in taps:
            stage = int(math.log2(stride_of(backbone, backbone.shape_of(tap)))) + 1
            source = backbone.layers[-1][0] if x == HEAD_INPUT else x
            if width != self.pyramid_filters:
                out.append(Conv2D(f"fpn_stage_p{stage}_pre_conv", inputs=(x,), filters=self.pyramid_filters,
                                  kernel_size=(1, 1), kernel_initializer="he_uniform"))
                x = f"fpn_stage_p{stage}_pre_conv"
            out.append(Conv2D(f"fpn_stage_p{stage}_conv", inputs=(tap,), filters=self.pyramid_filters,
                              kernel_size=(1, 1), kernel_initializer="he_uniform"))
            out.append(UpSampling2D(f"fpn_stage_p{stage}_upsampling", inputs=(x,), size=(2, 2)))
            out.append(SkipAdd(f"fpn_stage_p{stage}_add", inputs=(f"fpn_stage_p{stage}_upsampling",
                                                                  f"fpn_stage_p{stage}_conv"), source=source, tap=tap))
            x, width = f"fpn_stage_p{stage}_add", self.pyramid_filters
            levels.append((stage, x))
        finest = levels[-1][0]
        joined = []
        for stage, level in levels:
            s = conv(f"segm_stage{stage}a", half, level)
            s = conv(f"segm_stage{stage}b", half, s)
            if stage != finest:
                factor = 2 ** (stage - finest)
                out.append(UpSampling2D(f"upsampling_stage{stage}", inputs=(s,), size=(factor, factor)))
                s = f"upsampling_stage{stage}"
            joined.append(s)
        joined = [joined[-1], *joined[:-1][::-1]]  # segmentation_models joins [s2, s3, s4, s5]
        if self.aggregation == "sum":
            out.append(Add("aggregation_sum", inputs=tuple(joined)))
            x = "aggregation_sum"
        else:
            out.append(Concatenate("aggregation_concat", inputs=tuple(joined)))
            x = "aggregation_concat"
        if self.dropout:
            out.append(SpatialDropout2D("pyramid_dropout", inputs=(x,), rate=self.dropout))
            x = "pyramid_dropout"
        x = conv("final_stage", half, x)
        up = 2 ** (finest - 1)
        out.append(UpSampling2D("final_upsampling", inputs=(x,), size=(up, up), interpolation="bilinear"))
        self.classify(out, "final_upsampling", "head_conv")
        return out


@hookimpl
def tlc_heads():
    return [FpnHead]
