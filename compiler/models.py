"""Keras models as tlc commands use them: one loader (a clear error naming the file) and one way
to turn a classifier's output into class probabilities, shared by predict, evaluate, export,
and the weights loader."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunError, one_line


class ModelLoadError(RunError):
    """A `.keras` file that will not load; `reason` says why (for callers that word it their way)."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: cannot load the model: {reason}")
        self.path, self.reason = path, reason


def load_model(path: str | Path, *, safe_mode: bool = True) -> Any:
    """A saved `.keras` model, uncompiled; a file that will not load is a `ModelLoadError`."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:
        hint = " (it contains code; pass --unsafe only if you trust it)" if "safe_mode" in str(exc) else ""
        raise ModelLoadError(path, f"{one_line(exc)}{hint}") from None


def output_activation(model: Any) -> str | None:
    """The activation of a final Dense layer (a classifier's: softmax, sigmoid or linear logits),
    or None when the model ends in anything else (a feature extractor)."""
    last = model.layers[-1]
    if type(last).__name__ != "Dense":
        return None
    activation = last.get_config().get("activation")
    return activation if isinstance(activation, str) else None


def probabilities(model: Any, batches: Any) -> np.ndarray:
    """Class scores for every batch of `batches` ((inputs, labels) pairs), in order, with a
    softmax over logits (`output_activation: linear`), so callers always get probabilities."""
    scores = np.concatenate([np.asarray(model.predict_on_batch(x)) for x, _ in batches])
    if output_activation(model) == "linear":
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    return scores
