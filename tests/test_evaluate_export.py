"""`tlc evaluate` and `tlc export`: held-out metrics that add up, a labelled confusion matrix, and
artifacts that a separate program runs in its own runtime to the Keras model's probabilities."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import tlc

from .conftest import tlc as run
from .helpers import unboxed


SPEC = """
name: digits10
input: {shape: [8, 8, 1]}
backbone: {type: conv_stack, blocks: [{filters: 8, convs: 2}]}
head: {type: dense, units: [16], classes: 10, output_activation: linear}
train:
  data: {type: digits, test_split: 0.2, validation_split: 0.1}
  epochs: 2
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    spec = root / "digits10.yaml"
    spec.write_text(SPEC)
    result = run("train", spec, "--runs", root / "runs")
    assert result.exit_code == 0, result.output
    return root / "runs" / "digits10"


@pytest.mark.slow
def test_evaluate_json_adds_up_and_writes_its_files(trained):
    result = run("evaluate", trained, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    split = json.loads((trained / "split.json").read_text())
    assert report["split"] == "test" and report["examples"] == split["counts"]["test"] == 359
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == report["examples"]
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert sum(c["support"] for c in report["per_class"]) == report["examples"]
    assert [c["support"] for c in report["per_class"]] == confusion.sum(axis=1).tolist()
    assert report["classes"] == [str(i) for i in range(10)] and set(report["top_k"]) == {"3"}
    assert report["top_k"]["3"] >= report["accuracy"] and report["loss"] > 0
    assert json.loads((trained / "evaluation.json").read_text()) == report
    for png in ("confusion.png", "misclassified.png"):
        assert (trained / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = run("evaluate", trained, "--split", "val")
    assert text.exit_code == 0 and "val accuracy" in text.stdout and "precision" in text.stdout


@pytest.mark.slow
def test_evaluate_matches_keras_on_the_test_examples(trained):
    """The reported accuracy is the Keras model's on exactly the recorded test examples."""
    import keras

    from tlc import data

    spec = tlc.load_spec(trained / "spec.lock.yaml")
    test = data.load(spec).test
    model = keras.saving.load_model(trained / "model.keras")
    predicted = model.predict(test.images, verbose=0).argmax(axis=1)
    report = json.loads(run("evaluate", trained, "--json").stdout)
    assert report["accuracy"] == pytest.approx(float(np.mean(predicted == test.labels)))
    assert "tta" not in report and "accuracy_no_tta" not in report
    # the spec's head gives logits; the run's model.keras gives probabilities, which are averaged
    averaged = (model.predict(test.images, verbose=0) + model.predict(test.images[:, :, ::-1], verbose=0)) / 2
    with_tta = run("evaluate", trained, "--json", "--tta", "flip")
    assert with_tta.exit_code == 0, with_tta.output
    tta = json.loads(with_tta.stdout)
    assert tta["tta"] == "flip" and tta["accuracy_no_tta"] == pytest.approx(report["accuracy"])
    assert tta["accuracy"] == pytest.approx(float(np.mean(averaged.argmax(axis=1) == test.labels)))
    text = run("evaluate", trained, "--tta", "flip")
    assert f"(flip test-time augmentation; {report['accuracy']:.4f} without)" in text.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args,code,message", [
    (["evaluate", "nowhere"], 2, "nowhere: no such run folder"),
    (["evaluate", "{tmp}"], 2, "is not a finished tlc run (missing model.keras"),
    (["evaluate", "{run}", "--split", "train"], 2, "'train' is not one of 'test', 'val'."),
    (["export", "{run}", "--format", "pt"], 2,
     "'pt' is not one of 'saved_model', 'tflite', 'onnx'."),
    (["export", "{run}", "--format", "onnx", "-o", "{tmp}/model.bin"], 2, "must end in .onnx"),
    (["export", "{run}", "--format", "onnx", "-o", "{tmp}/a_file/model.onnx"], 1, "cannot write {tmp}/a_file/model.onnx"),
])
def test_bad_evaluate_and_export_input(trained, tmp_path, args, code, message):
    (tmp_path / "a_file").write_text("a file, not a folder")
    args = [a.format(run=trained, tmp=tmp_path) for a in args]
    result = run(*args)
    assert result.exit_code == code and message.format(tmp=tmp_path) in unboxed(result.stderr), result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_run_without_a_test_split_refuses_split_test(tmp_path):
    spec = tmp_path / "nt.yaml"
    spec.write_text(SPEC.replace("test_split: 0.2, ", "").replace("epochs: 2", "epochs: 1"))
    assert run("train", spec, "--runs", tmp_path / "runs").exit_code == 0
    result = run("evaluate", tmp_path / "runs" / "digits10", "--split", "test")
    assert result.exit_code == 2 and "has no test split (train.data.test_split was 0)" in result.stderr
    result = run("evaluate", tmp_path / "runs" / "digits10", "--json")  # falls back to val
    assert result.exit_code == 0 and json.loads(result.stdout)["split"] == "val"


RUNTIME = {
    "saved_model": "import tensorflow as tf\nm = tf.saved_model.load(path)\nout = m.serve(tf.constant(x)).numpy()\n",
    "onnx": "import onnxruntime as ort\ns = ort.InferenceSession(path)\nout = s.run(None, {s.get_inputs()[0].name: x})[0]\n",
    "tflite": ("from ai_edge_litert.interpreter import Interpreter\ni = Interpreter(model_path=path)\n"
               "d = i.get_input_details()[0]\ni.resize_tensor_input(d['index'], x.shape)\ni.allocate_tensors()\n"
               "i.set_tensor(d['index'], x)\ni.invoke()\nout = i.get_tensor(i.get_output_details()[0]['index'])\n"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["saved_model", "tflite", "onnx"])
def test_export_runs_in_its_own_runtime_like_keras(trained, tmp_path, fmt):
    result = run("export", trained, "--format", fmt, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == fmt and report["max_abs_diff"] <= 1e-4 and report["examples"] == 32
    path = trained / "export" / ("model" + {"saved_model": "", "tflite": ".tflite", "onnx": ".onnx"}[fmt])
    assert report["path"] == str(path) and report["bytes"] > 10_000
    # a separate program, only the artifact's runtime: real digits in [0, 1] in, probabilities out
    import keras

    from tlc import data

    x = data.load(tlc.load_spec(trained / "spec.lock.yaml")).test.images[:50]
    np.save(tmp_path / "x.npy", x)
    code = f"import numpy as np\nx = np.load({str(tmp_path / 'x.npy')!r})\npath = {str(path)!r}\n" + RUNTIME[fmt] + \
        f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the linear head's logits, finished by a softmax inside the run's self-contained model.keras
    expected = keras.saving.load_model(trained / "model.keras").predict(x, verbose=0)
    got = np.load(tmp_path / "out.npy")
    assert got.shape == (50, 10)
    np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.slow
def test_the_artifact_carries_the_backbones_preprocessing(tmp_path, write):
    """VGG16 with ImageNet weights expects caffe-style input; the exported model takes [0, 1]
    images and does that itself (no weights are needed to check the arithmetic)."""
    import keras
    import onnxruntime as ort

    from tlc.build.serving import serving_model

    spec = tlc.load_spec(write("input: {shape: [32, 32, 3]}\nbackbone: {type: vgg16, weights: imagenet}\n"
                               "head: {type: dense, classes: 3}\n"))
    inputs = keras.Input((32, 32, 3))
    tiny = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(inputs))))
    served = serving_model(tiny, spec.backbone.preprocess)
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    served.predict(x, verbose=0)  # as `tlc export` does before exporting (Keras wants a called model)
    served.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    from keras.applications.vgg16 import preprocess_input

    expected = tiny.predict(preprocess_input(x * 255.0), verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert not np.allclose(tiny.predict(x, verbose=0), expected, atol=1e-3)  # preprocessing matters here


@pytest.mark.slow
def test_export_without_its_converter_names_the_package(trained, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    result = run("export", trained, "--format", "onnx")
    assert result.exit_code == 1
    assert "--format onnx needs tf2onnx: pip install tf2onnx" in result.stderr


@pytest.mark.slow
def test_compare_shows_the_test_accuracy_of_evaluated_runs(trained, tmp_path):
    assert run("evaluate", trained).exit_code == 0
    result = run("compare", trained, "-o", tmp_path / "c.png")
    accuracy = json.loads((trained / "evaluation.json").read_text())["accuracy"]
    assert result.exit_code == 0 and f"{accuracy:.3f}" in result.stdout


def test_the_misclassified_grid_takes_the_worst_mistakes_of_every_class_in_turn():
    from tlc.task.classification import worst_mistakes

    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    probabilities = np.array([[.1, .9, 0], [.2, .8, 0], [.9, .1, 0], [.7, .3, 0], [0, .4, .6], [.6, .4, 0],
                              [0, 0, 1], [.1, .2, .7]])
    assert worst_mistakes(labels, probabilities).tolist() == [0, 3, 5, 1, 4]  # 2, 6, 7 are right
    assert worst_mistakes(labels, probabilities, limit=2).tolist() == [0, 3]
    assert worst_mistakes(labels, np.eye(3)[labels]).tolist() == []
