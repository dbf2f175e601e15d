"""`dense`: a classifier on the backbone's feature map (pooling, hidden Dense layers, output)."""

from typing import Annotated, Literal

from pydantic import Field

from tlc import hookimpl
from tlc.plugin.components import Head
from tlc.plugin.fields import ActivationName, Count, Rate, WindowPair
from tlc.plan.layers import Dense, Dropout, Flatten, GlobalPooling2D, Layer, Pooling2D, Shape, pair


class DenseHead(Head):
    type: Literal["dense"] = "dense"
    pool_size: WindowPair | None = Field(None, description="an AveragePooling2D first (head_avgpool), "
                                                           "strides = pool_size")
    pooling: Literal["flatten", "avg", "max"] = Field(
        "flatten", description="flatten (head_flatten), avg (head_gap) or max (head_gmp)")
    units: Annotated[list[Count], Field(max_length=32)] = Field(
        [], description="hidden Dense sizes (head_dense1, head_dense2, ...)")
    activation: ActivationName = Field("relu", description="activation of the hidden Dense layers")
    dropout: Rate = Field(0, description="Dropout after each hidden Dense layer when > 0")
    classes: Count = Field(description="units of the output Dense layer, predictions")
    output_activation: Literal["softmax", "sigmoid", "linear"] = Field(
        "softmax", description="softmax, sigmoid or linear (logits)")

    def unused_fields(self) -> set[str]:
        return set() if self.units else {"dropout", "activation"}  # both act on hidden layers only

    def layers(self, feature_shape: Shape) -> list[Layer]:
        out: list[Layer] = []
        if self.pool_size is not None:
            out.append(Pooling2D("head_avgpool", mode="avg", pool_size=pair(self.pool_size)))
        out.append({
            "flatten": Flatten("head_flatten"),
            "avg": GlobalPooling2D("head_gap", mode="avg"),
            "max": GlobalPooling2D("head_gmp", mode="max"),
        }[self.pooling])
        for k, units in enumerate(self.units, start=1):
            out.append(Dense(f"head_dense{k}", units=units, activation=self.activation))
            if self.dropout > 0:
                out.append(Dropout(f"head_dropout{k}", rate=self.dropout))
        out.append(Dense("predictions", units=self.classes, activation=self.output_activation))
        return out


@hookimpl
def tlc_heads():
    return [DenseHead]
