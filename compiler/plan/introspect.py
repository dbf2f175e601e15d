"""Plan a plugin backbone or head that has no static description, by building it in Keras.

Only used for types whose `layers()` returns None; importing Keras happens here and only then.
Building is symbolic (no data), with `weights` set to null so planning never downloads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tlc.errors import one_line

from .graph import fresh_layer_names
from .layers import Failure, Layer, Shape


@dataclass(frozen=True)
class BuiltLayer(Layer):
    """A layer read off a built Keras model; its shapes and weights are already known."""

    keras_kind: str = "Layer"
    out: Shape = ()
    can_train: int = 0
    never_trains: int = 0

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.keras_kind

    def output_shape(self, shape: Shape) -> Shape:
        return self.out

    def weights(self, shape: Shape) -> tuple[int, int]:
        return (self.can_train, self.never_trains)


def backbone_layers(backbone: Any, shape: Shape):
    """(layers, None) or (None, Failure) for a backbone planned by building it."""
    _keras()
    try:
        with fresh_layer_names():  # as `tlc build` names them
            model = backbone.model_copy(update={"weights": None}).build(tuple(shape))
    except Exception as exc:  # plugin code: any failure is a planning failure, not a crash
        return None, _failure(exc, shape)
    return [_describe(layer) for layer in model.layers], None


def head_layers(head: Any, feature_shape: Shape):
    keras = _keras()

    try:
        inputs = keras.Input(shape=tuple(feature_shape))
        model = keras.Model(inputs, head.build(inputs))
    except Exception as exc:
        return None, _failure(exc, feature_shape)
    return [_describe(layer) for layer in model.layers[1:]], None


def failing_layer(backbone: Any, feasible: Shape, shape: Shape) -> tuple[str, Shape] | None:
    """(name, input shape) of the first layer that fails when a backbone built at `feasible`
    is run on `shape`, or None if that cannot be told (Keras private API, guarded)."""
    keras = _keras()

    try:
        with fresh_layer_names():
            model = backbone.model_copy(update={"weights": None}).build(tuple(feasible))
    except Exception:
        return None
    reached: dict = {}

    def track(operation):
        def call(*args, **kwargs):
            reached["name"] = operation.name
            reached["shape"] = tuple(int(d) for d in args[0].shape[1:]) if args and hasattr(args[0], "shape") else None
            return operation(*args, **kwargs)

        return call

    try:
        model._run_through_graph(keras.KerasTensor((None, *shape)), operation_fn=track)
    except Exception:
        if "name" in reached:
            return reached["name"], reached["shape"]
    return None


def _keras():
    """Keras, imported without TensorFlow's start-up chatter (`tlc check` of a plugin type)."""
    from tlc.show.quiet import import_keras_quietly

    import_keras_quietly()
    import keras

    return keras


def _describe(layer: Any) -> BuiltLayer:
    return BuiltLayer(
        name=layer.name, keras_kind=type(layer).__name__,
        out=tuple(int(d) for d in layer.output.shape[1:]),
        can_train=count_weights(layer.trainable_weights), never_trains=count_weights(layer.non_trainable_weights),
    )


def count_weights(weights) -> int:
    """How many numbers a list of Keras weights holds."""
    return sum(math.prod(int(d) for d in w.shape) for w in weights)


def _failure(exc: Exception, shape: Shape):
    return Failure(None, tuple(shape), f"could not be built by Keras: {one_line(exc)}", size_limited=True)
