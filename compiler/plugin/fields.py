"""Reusable, validated field types for backbone and head models (built-in and plugin)."""

from typing import Annotated, Any, Union

from pydantic import AfterValidator, BaseModel, Discriminator, Field, Strict, Tag

# A validated mapping is a model instance when serialised, so BaseModel counts as a map.
_KINDS = (("<map>", (dict, BaseModel)), ("<list>", list), ("<bool>", bool), ("<int>", int),
          ("<float>", float), ("<str>", str))


def _kind(value: Any) -> str:
    for tag, cls in _KINDS:
        if isinstance(value, cls):
            return tag
    return "<other>"


def by_kind(expected: str, **branches: Any) -> Any:
    """A union whose branch is chosen by the value's YAML kind (map, list, int, str ...), so a
    wrong value gets one error from the branch it was meant for, not one per branch.

    `by_kind("an integer or [h, w]", int=Window, list=list[Window])`
    """
    return Annotated[
        Union[tuple(Annotated[t, Tag(f"<{kind}>")] for kind, t in branches.items())],
        Discriminator(_kind, custom_error_type="wrong_kind",
                      custom_error_message=f"Input should be {expected}"),
    ]

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
WindowPair = by_kind("an integer or a list [height, width]",
                     int=Window, list=Annotated[list[Window], Field(min_length=2, max_length=2)])
Rate = Annotated[float, Field(ge=0, lt=1)]
