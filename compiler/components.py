"""`tlc.Backbone` and `tlc.Head`: the pydantic base classes that built-ins and plugins extend.

A subclass adds `type: Literal["name"]` and its own fields; validation is strict (unknown keys
are errors). It either describes its layers statically (`layers`, fast and TensorFlow-free)
or only implements `build` (Keras), in which case tlc plans it by building it symbolically.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # pragma: no cover
    from .layers import Layer, Shape


class StrictModel(BaseModel):
    """Pydantic model that refuses unknown keys: a typo in a spec must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class FieldError(Exception):
    """A component's complaint about a field that pydantic alone cannot see.

    `loc` is relative to the spec root, e.g. ("input", "shape"); tlc turns it into a
    located `file:line:col: field: message` error.
    """

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc, self.message = tuple(loc), message


class Backbone(StrictModel):
    """A feature extractor: from an input image to a feature map.

    `weights`: null, `imagenet` (only if the backbone supports it) or a path to a `.keras` model
    or a weights file, loaded by layer name by tlc. `output`: cut after this layer (name or index).
    """

    type: str
    weights: Annotated[str, Field(min_length=1)] | None = None
    output: Annotated[str, Field(min_length=1)] | Annotated[int, Field(strict=True, ge=0)] | None = None

    supports_imagenet: ClassVar[bool] = False

    @field_validator("weights")
    @classmethod
    def _imagenet_only_if_supported(cls, value: str | None) -> str | None:
        if value == "imagenet" and not cls.supports_imagenet:
            raise ValueError("this backbone has no imagenet weights; use null or a path to a model")
        return value

    def layers(self, input_shape: Shape) -> list[Layer] | None:
        """Static description: `[tlc.layers.Input(...), ...]`, or None to be planned by building."""
        return None

    def build(self, input_shape: Shape) -> Any:
        """A `keras.Model` from an Input named `input` to the feature map.

        The default chains the static `layers`; backbones without them must override this.
        """
        import keras

        described = self.layers(input_shape)
        if described is None:
            raise NotImplementedError(f"{type(self).__name__} has neither layers() nor build()")
        inputs = keras.Input(shape=tuple(input_shape), name=described[0].name)
        x = inputs
        for layer in described[1:]:
            x = layer.to_keras()(x)
        return keras.Model(inputs, x)

    def preprocess(self, images: Any) -> Any:
        """Images scaled to [0, 1] -> what the network expects. Identity by default."""
        return images


class Head(StrictModel):
    """What sits on the backbone's output: a classifier, or nothing (`none`)."""

    type: str

    def layers(self, feature_shape: Shape) -> list[Layer] | None:
        """Static description of the head's layers, or None to be planned by building."""
        return None

    def build(self, x: Any) -> Any:
        """Takes the backbone's output tensor, returns the model's output tensor."""
        described = self.layers(tuple(x.shape[1:]))
        if described is None:
            raise NotImplementedError(f"{type(self).__name__} has neither layers() nor build()")
        for layer in described:
            x = layer.to_keras()(x)
        return x
