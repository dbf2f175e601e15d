"""Reusable, validated field types for backbone and head models (built-in and plugin)."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import AfterValidator, Field, Strict

#: Keras activation names accepted by `keras.activations.get` (a test keeps this in sync).
ACTIVATIONS = (
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish",
    "relu", "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus",
    "softsign", "sparse_plus", "sparsemax", "squareplus", "swish", "tanh", "tanh_shrink",
)


def _known_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; Keras activations: {', '.join(ACTIVATIONS)}")
    return name


ActivationName = Annotated[str, AfterValidator(_known_activation)]
Count = Annotated[int, Strict(), Field(gt=0, le=65_536)]  # filters, units, classes
Window = Annotated[int, Strict(), Field(gt=0, le=1024)]
WindowPair = Union[Window, Annotated[list[Window], Field(min_length=2, max_length=2)]]
Rate = Annotated[float, Field(ge=0, lt=1)]
