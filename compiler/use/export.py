"""`tlc export RUN --format saved_model|tflite|onnx`: a deployable artifact that carries its
preprocessing, checked against the Keras model in its own runtime.

The artifact takes float32 images in [0, 1] of the spec's input shape, applies the backbone's
preprocessing inside (the classic deployment bug is preprocessing that did not travel with the
model), and returns class probabilities. It is written through Keras's `Model.export`, then
loaded in TensorFlow, the LiteRT interpreter or onnxruntime and run on held-out images.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tlc.errors import RunError, UsageError, one_line
from tlc.layout import RunLayout

from .formats import EXPORT_FORMATS
from .runtimes import quietly, run_artifact

TOLERANCE = 1e-4
CHECK_EXAMPLES = 32


def default_path(folder: Path, fmt: str) -> Path:
    return RunLayout(folder).export / f"model{EXPORT_FORMATS[fmt].suffix}"


def require_converters(fmt: str) -> None:
    """A missing converter or runtime is a clear message naming the package to install."""
    import importlib.util

    missing = [package for module, package in EXPORT_FORMATS[fmt].needs if importlib.util.find_spec(module) is None]
    if missing:
        raise RunError(f"--format {fmt} needs {' and '.join(missing)}: pip install {' '.join(missing)} "
                       "(`make install` installs them)")


def check_target(folder: Path, fmt: str, output: Path | None) -> Path:
    """Where the artifact goes; a format without its converter, or a wrong suffix, fails here,
    before TensorFlow is imported."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; formats: {', '.join(EXPORT_FORMATS)}")
    require_converters(fmt)
    target = Path(output) if output else default_path(folder, fmt)
    suffix = EXPORT_FORMATS[fmt].suffix
    if suffix and target.suffix != suffix:
        raise UsageError(f"-o for --format {fmt} must end in {suffix}, got {target}")
    return target


def export(run, fmt: str, output: Path | None = None, *, safe_mode: bool = True,
           quantize: str | None = None, calibration: int = 200, max_drop: float = 0.02) -> dict:
    """Write the artifact atomically, run it in its runtime, compare with Keras; returns the report.
    With `quantize` (tflite), the comparison is the held-out accuracy (`quantize`). `run` is a
    `Run` or its folder; the artifact is the predictor's serving model."""
    from tlc.atomic import replacing

    from .predictor import Predictor
    from .quantize import check_mode, quantized_export
    from .run import Run

    check_mode(fmt, quantize, calibration, max_drop)
    run = Run.of(run)
    target = check_target(run.folder, fmt, output)
    predictor = Predictor.of_run(run, safe_mode=safe_mode)
    if quantize:
        _make_parent(target)
        report = quantized_export(run, predictor, target, quantize, calibration=calibration, max_drop=max_drop)
        return {**report, "card": write_card(run, predictor, target)}
    part, _, images = run.held_out_images(CHECK_EXAMPLES)
    expected = predictor.probabilities(images)
    served = predictor.serving
    _make_parent(target)
    with replacing(target) as tmp, quietly():
        try:
            served.export(str(tmp), format=EXPORT_FORMATS[fmt].keras, verbose=False)
        except Exception as exc:
            raise RunError(f"exporting to {fmt} failed: {one_line(exc)}") from None
        difference = float(np.max(np.abs(run_artifact(fmt, tmp, images) - expected)))
        if difference > TOLERANCE:  # not kept: an artifact that disagrees with its model is a bug
            raise RunError(f"the {fmt} artifact differs from the Keras model by {difference:.2e} "
                           f"(more than {TOLERANCE:g}) on {len(images)} {part} images; nothing written")
    return {"format": fmt, "path": str(target), "bytes": _size(target), "max_abs_diff": difference,
            "examples": int(len(images)), "card": write_card(run, predictor, target)}


OUTPUTS = {"classification": "class probabilities (softmax), one per class, in the order of `classes`",
           "multi_label": "tag probabilities (sigmoid), one per tag in the order of `classes`; a tag is given "
                          "at or over its `thresholds` entry",
           "regression": "values in the targets' own units, one per target in the order of `classes`",
           "segmentation": "per-pixel class probabilities (softmax), (height, width, classes) at the input's size, "
                           "classes in the order of `classes`"}


def write_card(run, predictor, target: Path) -> str:
    """`<artifact>.json` beside the artifact: what goes in and what comes out (the task, the
    names of the outputs, a multi-label run's thresholds), so the artifact is used as the run
    answers without tlc."""
    from tlc.atomic import write_text

    task = run.spec.task
    card = {"name": run.spec.name, "task": task.type, "input": {"shape": list(predictor.input_shape), "range": [0, 1],
                                                                "layout": "NHWC, float32, RGB"},
            "outputs": OUTPUTS.get(task.type, "the model's outputs"), "classes": run.classes,
            **({"thresholds": predictor.record["thresholds"]} if "thresholds" in predictor.record else {})}
    path = target.with_name(target.name + ".json")
    write_text(path, json.dumps(card, indent=2) + "\n")
    return str(path)


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot write {target}: {exc.strerror or exc}") from None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return os.path.getsize(path)
