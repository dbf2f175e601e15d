"""`conv_stack`: a custom stack of conv blocks, e.g. the seed article's feature extractor."""

from typing import Annotated, Literal

from pydantic import Field, Strict

from tlc import hookimpl
from tlc.plugin.components import Backbone, StrictModel
from tlc.plugin.fields import ActivationName, Count, Rate, WindowPair
from tlc.plan.layers import (
    Activation, BatchNormalization, Conv2D, Dropout, Input, Layer, Pooling2D, Shape, pair,
)


class Block(StrictModel):
    filters: Count = Field(description="Conv2D filters")
    kernel_size: WindowPair = Field(3, description="an int or [kh, kw]")
    convs: Annotated[int, Strict(), Field(gt=0, le=64)] = Field(1, description="Conv2D layers in the block")
    strides: WindowPair = Field(1, description="an int or [sh, sw], for every conv of the block")
    padding: Literal["valid", "same"] = Field("valid", description="valid or same (convs only)")
    activation: ActivationName = Field("relu", description="a Keras activation name")
    batch_norm: bool = Field(False, description="each conv gets use_bias: false, then BatchNormalization "
                                                "and an Activation layer")
    pool: Literal["max", "avg"] | None = Field("max", description="max, avg or null (no pooling layer)")
    pool_size: WindowPair = Field(2, description="an int or [ph, pw]; strides = pool_size, valid")
    dropout: Rate = Field(0, description="a Dropout layer after the block when > 0")


class ConvStack(Backbone):
    """Blocks of Conv2D (+ BatchNormalization + Activation), pooling and dropout, in order."""

    type: Literal["conv_stack"] = "conv_stack"
    blocks: Annotated[list[Block], Field(min_length=1, max_length=64)] = Field(
        description="the blocks, in order; layers are named block{i}_conv{j}, block{i}_pool, ...")

    def layers(self, input_shape: Shape) -> list[Layer]:
        out: list[Layer] = [Input("input")]
        for i, block in enumerate(self.blocks, start=1):
            conv = dict(filters=block.filters, kernel_size=pair(block.kernel_size),
                        strides=pair(block.strides), padding=block.padding)
            for j in range(1, block.convs + 1):
                if block.batch_norm:
                    out += [
                        Conv2D(f"block{i}_conv{j}", **conv, activation=None, use_bias=False),
                        BatchNormalization(f"block{i}_bn{j}"),
                        Activation(f"block{i}_act{j}", activation=block.activation),
                    ]
                else:
                    out.append(Conv2D(f"block{i}_conv{j}", **conv, activation=block.activation))
            if block.pool:
                out.append(Pooling2D(f"block{i}_pool", mode=block.pool, pool_size=pair(block.pool_size)))
            if block.dropout > 0:
                out.append(Dropout(f"block{i}_dropout", rate=block.dropout))
        return out


@hookimpl
def tlc_backbones():
    return [ConvStack]
