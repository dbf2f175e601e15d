"""Running exported artifacts in their own runtimes (TensorFlow, the LiteRT interpreter,
onnxruntime), quietly: what `tlc export` checks a float or a quantized artifact with."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def quietly():
    """The converters' and runtimes' notices (TFLite's 'Created XNNPACK delegate', tf2onnx's
    NumPy FutureWarning) are not the user's business; errors still raise."""
    from tlc.show.quiet import fd2_silenced

    with warnings.catch_warnings(), fd2_silenced():
        warnings.simplefilter("ignore")
        yield


def run_artifact(fmt: str, path: Path, images: np.ndarray) -> np.ndarray:
    """The artifact's probabilities for `images`, computed by its own runtime."""
    if fmt == "saved_model":
        import tensorflow as tf

        artifact = tf.saved_model.load(str(path))
        return np.asarray(artifact.serve(tf.constant(images)))
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: images})[0])
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inputs = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inputs["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inputs["index"], images)
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
