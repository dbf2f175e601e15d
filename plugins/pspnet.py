"""`pspnet`: segmentation_models' (qubvel, the Keras library) PSPNet over a backbone cut at its
`downsample_factor`, block for block and name for name (`psp_level1_pooling`, `psp_level1_conv`,
..., `psp_concat`, `aggregation_conv`, `final_conv`, `final_upsampling`), so its parameter count
equals that library's. The pyramid pools the feature map into 1x1, 2x2, 3x3 and 6x6 bins, so its
sides must divide by 6: the input is a multiple of 6 x the factor (48 for 8), found by `check`
with the nearest sizes that work, where segmentation_models raises when it builds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from tlc import hookimpl
from tlc.errors import FieldError
from tlc.plan.graph import HEAD_INPUT, BackboneMap
from tlc.plan.layers import (Activation, Concatenate, Conv2D, DoesNotFit, Layer, Pooling2D, Shape, SpatialDropout2D,
                             UpSampling2D)
from tlc.plugin.fields import Count, Rate

from .unet import AUTO_TAPS, DecoderHead, auto_taps, stride_of

LEVELS = (1, 2, 3, 6)  # segmentation_models' bins per side
FACTORS = {16: 0, 8: 1, 4: 2}  # downsample_factor -> its entry in segmentation_models' feature layers


@dataclass(frozen=True)
class PyramidPooling2D(Pooling2D):
    """One pyramid level's pooling: windows of a `level`-th of the feature map, which must divide
    into `level` bins exactly (else the level's upsampling would not meet the map's size)."""

    not_keras: ClassVar[tuple[str, ...]] = ("mode", "level")
    level: int = 1

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = shape
        if h % self.level or w % self.level:
            raise DoesNotFit(f"pools {h}x{w} into {self.level}x{self.level} bins: the feature map's sides must "
                             f"divide by {self.level}", misaligned=True)
        return super().output_shape(shape)


class PspHead(DecoderHead):
    """segmentation_models' PSPNet: the backbone's stride-`downsample_factor` features pooled at
    four levels (each pooled, a 1x1 convolution with batch norm and ReLU, upsampled back
    bilinearly), concatenated with the features, a 1x1 `aggregation` convolution, optional spatial
    dropout, a 3x3 `final_conv` to `classes` and a bilinear upsampling by the factor."""

    type: Literal["pspnet"] = "pspnet"
    taps: Literal["auto"] = Field("auto", description="none: the pyramid reads the backbone's output")
    downsample_factor: Literal[4, 8, 16] = Field(
        8, description="the backbone's output stride: cut there (backbone.output), by default at segmentation_models' "
                       "PSPNet layer for the factor where its table has the backbone")
    filters: Count = Field(512, description="filters of each level's 1x1 convolution and of the aggregation "
                                            "(segmentation_models' psp_conv_filters)")
    pooling: Literal["avg", "max"] = Field("avg", description="each level's pooling (psp_pooling_type)")
    dropout: Rate | None = Field(None, description="SpatialDropout2D rate before the last convolution (psp_dropout)")

    @classmethod
    def backbone_defaults(cls, head: dict, backbone_type: str | None) -> dict:
        """segmentation_models' cut for the factor, where its table has the backbone (VGG16 at 8:
        block4_conv3); elsewhere `check` names the layer to write."""
        factor = head.get("downsample_factor", 8)
        if backbone_type in AUTO_TAPS and factor in FACTORS:
            return {"output": AUTO_TAPS[backbone_type][FACTORS[factor]]}
        return {}

    def input_period(self, stride: int) -> int | None:
        return LEVELS[-1] * stride

    def layers_over(self, backbone: BackboneMap) -> list[Layer]:
        stride, factor = stride_of(backbone, backbone.shape), self.downsample_factor
        if stride != factor:
            raise FieldError(("head", "downsample_factor"), f"{factor}, but the backbone's output "
                                                            f"{backbone.layers[-1][0]} is at stride {stride}: "
                                                            f"{self._cut(backbone, factor)}")
        h, w, _ = backbone.shape
        out: list[Layer] = []
        levels = []
        for level in LEVELS:
            size = (max(1, h // level), max(1, w // level))
            out.append(PyramidPooling2D(f"psp_level{level}_pooling", inputs=(HEAD_INPUT,), mode=self.pooling,
                                        pool_size=size, strides=size, padding="same", level=level))
            x = self.conv_bn_relu(out, f"psp_level{level}", f"psp_level{level}_pooling", self.filters, 1)
            out.append(UpSampling2D(f"psp_level{level}_upsampling", inputs=(x,), size=size, interpolation="bilinear"))
            levels.append(f"psp_level{level}_upsampling")
        out.append(Concatenate("psp_concat", inputs=(HEAD_INPUT, *levels)))
        x = self.conv_bn_relu(out, "aggregation", "psp_concat", self.filters, 1)
        if self.dropout:
            out.append(SpatialDropout2D("spatial_dropout", inputs=(x,), rate=self.dropout))
            x = "spatial_dropout"
        out.append(Conv2D("final_conv", inputs=(x,), filters=self.classes, kernel_size=(3, 3), padding="same"))
        out.append(UpSampling2D("final_upsampling", inputs=("final_conv",), size=(factor, factor),
                                interpolation="bilinear"))
        out.append(Activation(self.activation, inputs=("final_upsampling",), activation=self.activation))
        return out

    @staticmethod
    def _cut(backbone: BackboneMap, factor: int) -> str:
        """What to write so the backbone ends at stride `factor`: the last layer at that stride
        (a backbone in segmentation_models' table is cut at its layer without being told)."""
        found = [n for n in auto_taps(backbone, 5) if stride_of(backbone, backbone.shape_of(n)) == factor]
        if not found:
            return f"PSPNet reads features at stride {factor}; cut the backbone there (backbone.output)"
        return f"cut it there with backbone: {{output: {found[0]}}} (its last layer at stride {factor})"


@hookimpl
def tlc_heads():
    return [PspHead]
