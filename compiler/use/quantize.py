"""`tlc export --format tflite --quantize float16|dynamic|int8`: a smaller LiteRT model, checked
by its task's metric (accuracy, mAP, MAE) instead of by equality.

The artifact is converted through Keras's own LiteRT exporter (which goes through a SavedModel,
around Keras 3's broken `TFLiteConverter.from_keras_model`), with the converter's quantization
settings: float16 weights, dynamic-range int8 weights, or full-integer int8 calibrated on
training images (`representative_dataset`), its float32 input and output kept so callers do not
change. It then runs in the LiteRT interpreter on the whole held-out split beside the Keras
model; a drop of the metric above `max_drop` writes nothing (TAO's INT8 calibration, checked).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tlc.errors import RunError, UsageError, one_line

from .formats import QUANTIZE_MODES

BATCH = 32


def check_mode(fmt: str, mode: str | None, calibration: int, max_drop: float) -> None:
    """Refused before TensorFlow loads: a mode for another format, an unknown mode, bad numbers."""
    if mode is None:
        return
    if fmt != "tflite":
        raise UsageError(f"--quantize is for --format tflite (got --format {fmt})")
    if mode not in QUANTIZE_MODES:
        raise UsageError(f"unknown --quantize {mode!r}; modes: {', '.join(QUANTIZE_MODES)}")
    if calibration < 1:
        raise UsageError(f"--calibration must be at least 1, got {calibration}")
    if not 0 <= max_drop <= 1:
        raise UsageError(f"--max-drop must be between 0 and 1, got {max_drop}")


def converter_settings(mode: str, calibration_images: np.ndarray | None) -> dict:
    """The TFLiteConverter attributes for `mode` (Keras's exporter sets them on its converter)."""
    import tensorflow as tf

    settings: dict = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if mode == "float16":
        settings["target_spec"] = {"supported_types": [tf.float16]}
    elif mode == "int8":
        def representative():
            for image in calibration_images:
                yield [image[None].astype("float32")]

        settings["representative_dataset"] = representative
        settings["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
    return settings


def calibration_set(run, size: int) -> np.ndarray:
    """Up to `size` training images in [0, 1], spread over the training set (seeded)."""

    examples = run.training()
    if len(examples) > size:
        picked = np.sort(np.random.default_rng(0).choice(len(examples), size, replace=False))
        examples = examples.take(picked)
    return run.images(examples, BATCH)


def litert_scores(path: Path, images: np.ndarray) -> np.ndarray:
    """Class probabilities from the LiteRT interpreter, a batch at a time."""
    from .runtimes import run_artifact

    return np.concatenate([run_artifact("tflite", path, images[i:i + BATCH]) for i in range(0, len(images), BATCH)])


def quantized_export(run, predictor, target: Path, mode: str, *, calibration: int, max_drop: float) -> dict:
    """Convert the predictor's serving model, check it on the held-out split beside the predictor,
    and write `target` only when the drop is allowed."""
    import tempfile

    from tlc.atomic import replacing

    from .runtimes import quietly

    served = predictor.serving
    part, examples, images = run.held_out_images()
    keras_scores = predictor.probabilities(images, BATCH)
    calibrate = calibration_set(run, calibration) if mode == "int8" else None
    with replacing(target) as tmp, quietly():
        try:
            served.export(str(tmp), format="litert", verbose=False, **converter_settings(mode, calibrate))
            with tempfile.TemporaryDirectory() as scratch:  # the float32 artifact, to say how much smaller
                reference = Path(scratch) / "float32.tflite"
                served.export(str(reference), format="litert", verbose=False)
                float_bytes = reference.stat().st_size
        except Exception as exc:
            raise RunError(f"quantizing to {mode} failed: {one_line(exc)}") from None
        scores = litert_scores(tmp, images)
        checked, (metric, value, keras_value, drop) = _checked(run.spec.task, examples.labels, scores, keras_scores,
                                                               run.classes, predictor.record)
        if drop > max_drop:
            raise RunError(f"{mode} quantization drops {part} {metric} from {keras_value:.4g} to {value:.4g} "
                           f"({drop:.4f}, more than --max-drop {max_drop:g}) on {len(images)} images; nothing "
                           "written (try --quantize float16 or dynamic, or more --calibration images)")
    return {"format": "tflite", "path": str(target), "bytes": target.stat().st_size, "quantize": mode,
            "float32_bytes": float_bytes, **checked, "split": part, "examples": int(len(images)),
            "max_abs_diff": float(np.max(np.abs(scores - keras_scores)))}


def _checked(task, targets, scores, keras_scores, names: list[str], record: dict) -> tuple[dict, tuple]:
    """(the report's fields, (metric, value, Keras's value, drop)): the quantized model's metric
    beside the Keras model's, and how much worse it is: absolute where higher is better, relative
    to the Keras value where lower is (MAE 1.00 -> 1.02 drops 0.02). Classification reports
    `accuracy`, `keras_accuracy` and `agreement` (the same top class); another task `metric`,
    `value` and `keras_value`."""
    if task.type == "classification":
        accuracy = float(np.mean(scores.argmax(1) == targets))
        keras_accuracy = float(np.mean(keras_scores.argmax(1) == targets))
        fields = {"accuracy": accuracy, "keras_accuracy": keras_accuracy,
                  "agreement": float(np.mean(scores.argmax(1) == keras_scores.argmax(1)))}
        return fields, ("accuracy", accuracy, keras_accuracy, keras_accuracy - accuracy)
    files = [""] * len(targets)
    value = float(task.evaluate(targets, scores, names, files, record)[task.metric])
    keras_value = float(task.evaluate(targets, keras_scores, names, files, record)[task.metric])
    drop = keras_value - value if task.higher.get(task.metric, True) else \
        (value - keras_value) / max(abs(keras_value), 1e-12)
    return {"metric": task.metric, "value": value, "keras_value": keras_value}, (task.metric, value, keras_value, drop)
