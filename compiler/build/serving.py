"""A trained model with its preprocessing inside and its task's answers out (probabilities,
values in their units), [0, 1] images in: what a
run saves as `model.keras` (in plain Keras operations, so `keras.models.load_model` alone reads it
and answers as `tlc predict` does) and what the predictor and `tlc export` run (the preprocessing
inside one layer, so exporters trace it on real tensors)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable

CLASSIFIER_ACTIVATIONS = ("softmax", "sigmoid", "linear")


def output_activation(model: Any) -> str | None:
    """The activation of the model's last layer when it is a classifier's (a Dense layer, or
    Keras's `Activation` after a 1x1 convolution as in MobileNet): softmax, sigmoid or linear;
    None when the model ends in anything else (a feature extractor)."""
    last = model.layers[-1]
    while getattr(last, "layers", None):  # a model inside a model (a run's self-contained model.keras)
        last = last.layers[-1]
    if type(last).__name__ == "Softmax":  # the finishing a self-contained model carries
        return "softmax"
    if type(last).__name__ not in ("Dense", "Activation"):
        return None
    activation = last.get_config().get("activation")
    return activation if activation in CLASSIFIER_ACTIVATIONS else None


def finishing(model: Any, task: Any = None, record: dict | None = None):
    """The layer that turns the model's outputs into its task's answers (`Task.finishing`: the one
    softmax or sigmoid over logits, a regression's values back in their units), or None when the
    outputs need nothing (probabilities already, or features). Without a task: classification's."""
    activation = output_activation(model)
    if activation is None:
        return None
    if task is None:
        import keras

        return keras.layers.Softmax(name="probabilities") if activation == "linear" else None
    return task.finishing(activation, record or {})


def serving_model(model: Any, preprocess: Callable | None, name: str = "model", finish: Any = None):
    """`model` with the preprocessing inside and probabilities out: [0, 1] images in.

    The preprocessing runs inside a layer, so exporters trace it on real tensors (applied to
    the symbolic input directly, tf2onnx turned one of its constants into a second graph input)."""
    import keras

    class Preprocess(keras.layers.Layer):
        def call(self, images):
            return preprocess(images)

    finish = finish or finishing(model)
    inputs = keras.Input(shape=tuple(int(d) for d in model.input_shape[1:]), name="images")
    outputs = model(Preprocess(name="preprocess")(inputs) if preprocess is not None else inputs)
    return keras.Model(inputs, finish(outputs) if finish is not None else outputs, name=f"{name}_serving")


def self_contained(model: Any, preprocess: Callable | None, finish: Any = None) -> tuple[Any, str | None]:
    """(`model` behind its backbone's preprocessing, written as Keras operations on the input, and
    finished like the predictor's serving model; a note when the preprocessing cannot be written
    so: the model alone is returned and takes preprocessed images). `finish`: the task's layer
    (`finishing`), else classification's. The trained model stays one layer inside, under its own
    name (`inner_model`)."""
    import keras

    inputs = keras.Input(shape=tuple(int(d) for d in model.input_shape[1:]), name="images")
    try:
        x = preprocess(inputs) if preprocess is not None else inputs
    except Exception as exc:  # a plugin's preprocessing in TensorFlow calls, not Keras operations
        from tlc.errors import one_line

        return model, (f"model.keras takes preprocessed images: the backbone's preprocessing is not "
                       f"written in Keras operations ({one_line(exc)}); tlc predict and export apply it")
    outputs = model(x)
    finish = finish or finishing(model)
    return keras.Model(inputs, finish(outputs) if finish is not None else outputs, name=f"{model.name}_images"), None


@contextlib.contextmanager
def uncompiled(model: Any):
    """`model` seen as not compiled inside the block, so what is saved then carries no loss or
    metrics: model.keras loads in plain Keras whatever the task trained with (tlc's own losses
    and metrics are registered only where tlc is imported)."""
    compiled = model.compiled
    model.compiled = False
    try:
        yield model
    finally:
        model.compiled = compiled


def inner_model(saved: Any, name: str) -> Any:
    """The trained model inside a self-contained one (`self_contained`), or `saved` itself when it
    is the trained model (a run saved before model.keras carried its preprocessing)."""
    inside = [layer for layer in saved.layers if layer.name == name and hasattr(layer, "layers")]
    return inside[0] if inside else saved
