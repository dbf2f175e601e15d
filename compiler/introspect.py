"""Plan a plugin backbone or head that has no static description, by building it in Keras.

Only used for types whose `layers()` returns None; importing Keras happens here and only then.
Building is symbolic (no data), with `weights` set to null so planning never downloads.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .layers import Layer, Shape


@dataclass(frozen=True)
class BuiltLayer(Layer):
    """A layer read off a built Keras model; its shapes and weights are already known."""

    keras_kind: str = "Layer"
    out: Shape = ()
    can_train: int = 0
    never_trains: int = 0
    random_at_training: bool = False

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.keras_kind

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.random_at_training

    def output_shape(self, shape: Shape) -> Shape:
        return self.out

    def weights(self, shape: Shape) -> tuple[int, int]:
        return (self.can_train, self.never_trains)


def backbone_layers(backbone: Any, shape: Shape):
    """(layers, None) or (None, Failure) for a backbone planned by building it."""
    try:
        model = backbone.model_copy(update={"weights": None}).build(tuple(shape))
    except Exception as exc:  # plugin code: any failure is a planning failure, not a crash
        return None, _failure(exc, shape)
    return [_describe(layer) for layer in model.layers], None


def head_layers(head: Any, feature_shape: Shape):
    import keras

    try:
        inputs = keras.Input(shape=tuple(feature_shape))
        model = keras.Model(inputs, head.build(inputs))
    except Exception as exc:
        return None, _failure(exc, feature_shape)
    return [_describe(layer) for layer in model.layers[1:]], None


def _describe(layer: Any) -> BuiltLayer:
    import keras

    return BuiltLayer(
        name=layer.name, keras_kind=type(layer).__name__,
        out=tuple(int(d) for d in layer.output.shape[1:]),
        can_train=_count(layer.trainable_weights), never_trains=_count(layer.non_trainable_weights),
        random_at_training=isinstance(layer, (keras.layers.Dropout, keras.layers.GaussianNoise,
                                              keras.layers.GaussianDropout, keras.layers.SpatialDropout2D)),
    )


def _count(weights) -> int:
    return sum(math.prod(int(d) for d in w.shape) for w in weights)


def _failure(exc: Exception, shape: Shape):
    from .plan import Failure

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    layer = _layer_named_in(str(exc))
    return Failure(layer, tuple(shape), f"could not be built by Keras: {first}", size_limited=True)


def _layer_named_in(text: str) -> str | None:
    """Keras 3 reports `Exception encountered when calling Conv2D.call()` plus the layer name."""
    match = re.search(r"name=['\"]?([\w.-]+)", text) or re.search(r"layer ['\"]([\w.-]+)['\"]", text)
    return match.group(1) if match else None
