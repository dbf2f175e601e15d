"""`conv_stack`: a custom stack of conv blocks, e.g. the seed article's feature extractor."""

from typing import Annotated, Literal

from pydantic import Field, Strict

from tlc import hookimpl
from tlc.components import Backbone, StrictModel
from tlc.fields import ActivationName, Count, Rate, WindowPair
from tlc.layers import (
    Activation, BatchNormalization, Conv2D, Dropout, Input, Layer, Pooling2D, Shape, pair,
)


class Block(StrictModel):
    filters: Count
    kernel_size: WindowPair = 3
    convs: Annotated[int, Strict(), Field(gt=0, le=64)] = 1
    strides: WindowPair = 1
    padding: Literal["valid", "same"] = "valid"
    activation: ActivationName = "relu"
    batch_norm: bool = False
    pool: Literal["max", "avg"] | None = "max"
    pool_size: WindowPair = 2
    dropout: Rate = 0


class ConvStack(Backbone):
    """Blocks of Conv2D (+ BatchNormalization + Activation), pooling and dropout, in order."""

    type: Literal["conv_stack"] = "conv_stack"
    blocks: Annotated[list[Block], Field(min_length=1, max_length=64)]

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
