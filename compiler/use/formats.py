"""The closed tables the CLI offers as choices: what `tlc export` writes (one row per artifact
format, and the quantization modes) and the test-time augmentations, read by the CLI (`--format`,
`--quantize`, `--tta`) and by export, quantize and the predictor alike. No TensorFlow or NumPy
here, so the CLI's choices cost nothing at start-up."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    name: str  # what `--format` takes
    keras: str  # `Model.export(format=...)`
    suffix: str  # the artifact's file suffix ("" for a folder)
    needs: tuple[tuple[str, str], ...] = ()  # (module, pip package) the converter and runtime need


EXPORT_FORMATS = {row.name: row for row in (
    ExportFormat("saved_model", "tf_saved_model", ""),
    ExportFormat("tflite", "litert", ".tflite", (("ai_edge_litert", "ai-edge-litert"),)),
    ExportFormat("onnx", "onnx", ".onnx", (("tf2onnx", "tf2onnx"), ("onnxruntime", "onnxruntime"))),
)}
#: `--quantize` (LiteRT only): float16 weights, dynamic-range int8 weights, full-integer int8
QUANTIZE_MODES = ("float16", "dynamic", "int8")
#: `--tta` (evaluate, predict, explain; `?tta=` in serve): name -> how many views are averaged
TTA = {"flip": 2}  # the image and its horizontal flip (mmpretrain's default `--tta`)
