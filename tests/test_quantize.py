"""`tlc export --format tflite --quantize`: smaller LiteRT models checked by held-out accuracy in
the LiteRT interpreter, int8 calibrated on training images with a float32 interface; a drop
over `--max-drop` writes nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import tlc
from .helpers import unboxed

pytestmark = pytest.mark.slow


def test_int8_is_full_integer_inside_float32_outside_and_as_accurate(shapes_run, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    folder, _ = shapes_run
    target = tmp_path / "int8.tflite"
    result = tlc("export", folder, "--format", "tflite", "--quantize", "int8", "--calibration", "64", "-o", target,
                 "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"format", "path", "bytes", "quantize", "accuracy", "keras_accuracy", "agreement", "examples"} <= set(report)
    assert report["quantize"] == "int8" and report["split"] == "test" and report["examples"] == 90
    assert report["keras_accuracy"] - report["accuracy"] <= 0.02 and report["agreement"] >= 0.95
    assert report["bytes"] == target.stat().st_size and report["float32_bytes"] / report["bytes"] > 2.5
    interpreter = Interpreter(model_path=str(target))
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in kinds  # the weights and activations inside are integers


@pytest.mark.parametrize("mode,smaller", [("float16", 1.7), ("dynamic", 2.5)])
def test_float16_and_dynamic_are_smaller_and_say_so(shapes_run, tmp_path, mode, smaller):
    folder, _ = shapes_run
    result = tlc("export", folder, "--format", "tflite", "--quantize", mode, "-o", tmp_path / "m.tflite")
    assert result.exit_code == 0, result.output
    assert f"x smaller than float32): {mode} accuracy" in result.output
    ratio = float(result.output.split(" MB, ")[1].split("x smaller")[0])
    assert ratio > smaller, result.output


def test_a_drop_over_max_drop_writes_nothing(shapes_run, tmp_path, monkeypatch):
    from tlc.use import quantize
    from tlc.errors import RunError
    from tlc.use.export import export

    folder, _ = shapes_run
    target = tmp_path / "bad.tflite"
    real = quantize.litert_scores
    monkeypatch.setattr(quantize, "litert_scores", lambda path, images: np.roll(real(path, images), 1, axis=1))
    with pytest.raises(RunError, match=r"int8 quantization drops test accuracy from .* more than --max-drop 0.02.*"
                                       r"nothing written"):
        export(folder, "tflite", target, quantize="int8", calibration=16)
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (["--format", "onnx", "--quantize", "int8"], "--quantize is for --format tflite (got --format onnx)"),
    (["--format", "tflite", "--quantize", "int4"],
     "'int4' is not one of 'float16', 'dynamic', 'int8'."),
    (["--format", "tflite", "--quantize", "int8", "--calibration", "0"], "--calibration must be at least 1"),
    (["--format", "tflite", "--quantize", "int8", "--max-drop", "2"], "--max-drop must be between 0 and 1"),
])
def test_bad_quantize_options_are_usage_errors(shapes_run, args, message):
    folder, _ = shapes_run
    result = tlc("export", folder, *args)
    assert result.exit_code == 2 and message in unboxed(result.output) and "Traceback" not in result.output, result.output
