"""Test helpers that talk to Keras directly, independent of tlc's arithmetic."""
from __future__ import annotations

import math

from tlc.components import Backbone


def keras_layers(model) -> list[dict]:
    """What Keras itself says about each layer."""
    return [{"name": layer.name, "kind": type(layer).__name__,
             "output_shape": tuple(int(d) for d in layer.output.shape[1:]),
             "params": layer.count_params(), "trainable": layer.trainable}
            for layer in model.layers]


def trainable_count(model) -> int:
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def keras_builds(spec, height: int, width: int) -> bool:
    """Does plain Keras accept this spec's layers at height x width? (No tlc planning involved.)"""
    import keras

    backbone: Backbone = spec.backbone.model_copy(update={"weights": None})
    try:
        model = backbone.build((height, width, spec.input.shape[2]))
        if spec.backbone.output is not None:
            model = keras.Model(model.input, model.get_layer(spec.backbone.output).output
                                if isinstance(spec.backbone.output, str)
                                else model.layers[spec.backbone.output].output)
        spec.head.build(model.output)
    except ValueError:
        return False
    return True


def with_input(spec, height: int, width: int):
    from tlc.spec import InputSpec

    return spec.model_copy(update={"input": InputSpec(shape=[height, width, spec.input.shape[2]])})


def without_weights(spec):
    """The same spec with `weights: null`, for building offline."""
    return spec.model_copy(update={"backbone": spec.backbone.model_copy(update={"weights": None})})
