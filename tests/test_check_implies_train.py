"""What `check` accepts must build, train and predict: every built-in backbone family (one type
of each family module, whose variants share its code) at 1 and 3 channels with `weights: null`,
at its smallest feasible input, on tiny generated data, with the output shape and parameter
counts `check` reported; and the saved model.keras predicts what the trained model did (the
Keras 3 `.keras` round trip of every family)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tlc.plugin.registry import BUILTIN_TYPES

from .conftest import tlc

pytestmark = pytest.mark.slow

BACKBONES = sorted(kinds["backbone"][0] for kinds in BUILTIN_TYPES.values() if "backbone" in kinds)
EXTRA = {"conv_stack": "blocks: [{filters: 4, convs: 2, batch_norm: true}, {filters: 6, dropout: 0.25}], "}
CLASSES = 3


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", BACKBONES)
def test_a_spec_check_accepts_builds_trains_and_predicts(kind, channels, tmp_path):
    import keras
    from PIL import Image

    from tlc.train.loop import train

    probe = tmp_path / "probe.yaml"
    probe.write_text(f"input: {{shape: [8, 8, {channels}]}}\nbackbone: {{type: {kind}, {EXTRA.get(kind, '')}"
                     "weights: null}\nhead: {type: dense, pooling: avg, classes: 3}\n")
    side = max(json.loads(tlc("check", probe, "--json").stdout)["min_input"] or [8, 8])
    rng = np.random.default_rng(0)
    x = rng.random((2 * CLASSES, side, side, channels), dtype=np.float32)
    np.savez(tmp_path / "tiny.npz", x=x, y=np.arange(2 * CLASSES) % CLASSES)
    spec = tmp_path / f"{kind}.yaml"
    spec.write_text(f"input: {{shape: [{side}, {side}, {channels}]}}\n"
                    f"backbone: {{type: {kind}, {EXTRA.get(kind, '')}weights: null}}\n"
                    "freeze: all\n"  # the feature-cache path: the frozen backbone runs once, the head trains
                    f"head: {{type: dense, pooling: avg, units: [4], dropout: 0.1, classes: {CLASSES}}}\n"
                    "train: {data: {type: npz, path: tiny.npz, validation_split: 0.5}, epochs: 1, batch_size: 3}\n")

    checked = tlc("check", spec, "--json")
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["ok"] and report["output_shape"] == [CLASSES]

    result = train(spec, tmp_path / "runs")
    assert result.metrics["params"] == report["params"]
    assert result.metrics["epochs"] == 1 and np.isfinite(result.metrics["final"]["loss"])
    assert tuple(result.model.output.shape[1:]) == (CLASSES,)
    assert result.model.count_params() == report["params"]["total"]
    assert tlc("check", result.folder / "spec.lock.yaml").exit_code == 0  # the resolved spec is a valid spec

    image = tmp_path / "one.png"
    Image.fromarray((x[0] * 255).astype("uint8").squeeze(-1) if channels == 1 else (x[0] * 255).astype("uint8")) \
        .save(image)
    predicted = tlc("predict", result.folder, image, "--json", "--top", CLASSES)
    assert predicted.exit_code == 0, predicted.output
    [answer] = json.loads(predicted.stdout)
    probabilities = [t["probability"] for t in answer["top"]]
    assert len(probabilities) == CLASSES and abs(sum(probabilities) - 1) < 1e-4
    from tlc.data.images import decode_many
    from tlc.spec.validation import load_spec

    lock = load_spec(result.folder / "spec.lock.yaml")
    (h, w, c) = lock.input.hwc
    inputs = lock.backbone.preprocess(decode_many([image], (h, w), c) / np.float32(255))  # decoded, preprocessed
    before = np.asarray(result.model([inputs], training=False))[0]
    np.testing.assert_allclose(probabilities, before[[t["index"] for t in answer["top"]]], rtol=1e-4, atol=1e-6)
    if channels == 3:  # Grad-CAM on every family, through the family's preprocessing like predict
        explained = tlc("explain", result.folder, image, "-o", tmp_path / "cam", "--json")
        assert explained.exit_code == 0, explained.output
        [record] = json.loads(explained.stdout)
        assert record["class"] == answer["top"][0]["class"] and (tmp_path / "cam" / "one.cam.png").is_file()
        assert abs(record["probability"] - probabilities[0]) < 1e-4
    keras.backend.clear_session()


@pytest.mark.parametrize("kind, task", [("conv_stack", "multi_label"), ("mobilenet_v2", "regression")])
def test_a_task_spec_check_accepts_builds_trains_and_answers(kind, task, tmp_path):
    """Tags and numbers through the same path: check, train on the frozen backbone's cached
    features, and predict the task's answer from model.keras (sigmoid probabilities with their
    thresholds; values in the targets' units)."""
    import keras
    from PIL import Image

    from tlc.train.loop import train

    probe = tmp_path / "probe.yaml"
    probe.write_text(f"input: {{shape: [8, 8, 3]}}\nbackbone: {{type: {kind}, {EXTRA.get(kind, '')}weights: null}}\n"
                     "head: {type: dense, pooling: avg, classes: 3}\n")
    side = max(json.loads(tlc("check", probe, "--json").stdout)["min_input"] or [8, 8])
    rng = np.random.default_rng(0)
    x = rng.random((12, side, side, 3), dtype=np.float32)
    y = (rng.random((12, CLASSES)) < 0.5).astype("int64") if task == "multi_label" else rng.normal(40, 5, (12, 2))
    np.savez(tmp_path / "tiny.npz", x=x, y=y)
    spec = tmp_path / f"{kind}.yaml"
    spec.write_text(f"task: {{type: {task}{', targets: [a, b]' if task == 'regression' else ''}}}\n"
                    f"input: {{shape: [{side}, {side}, 3]}}\n"
                    f"backbone: {{type: {kind}, {EXTRA.get(kind, '')}weights: null}}\n"
                    "freeze: all\n"
                    f"head: {{type: dense, pooling: avg, units: [4]{', classes: 3' if task == 'multi_label' else ''}}}\n"
                    "train: {data: {type: npz, path: tiny.npz, validation_split: 0.25}, epochs: 1, batch_size: 4}\n")
    checked = tlc("check", spec, "--json")
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    width = CLASSES if task == "multi_label" else 2
    assert report["ok"] and report["output_shape"] == [width]

    result = train(spec, tmp_path / "runs")
    assert result.metrics["params"] == report["params"] and result.metrics["task"]["type"] == task
    assert np.isfinite(result.metrics["final"]["loss"])
    image = tmp_path / "one.png"
    Image.fromarray((x[0] * 255).astype("uint8")).save(image)
    predicted = tlc("predict", result.folder, image, "--json")
    assert predicted.exit_code == 0, predicted.output
    [answer] = json.loads(predicted.stdout)
    saved = np.asarray(keras.saving.load_model(result.folder / "model.keras")(
        np.asarray(Image.open(image), "float32")[None] / 255, training=False))[0]
    if task == "multi_label":
        got = {s["class"]: s["probability"] for s in answer["scores"]}
        np.testing.assert_allclose([got[str(k)] for k in range(CLASSES)], saved, rtol=1e-4, atol=1e-6)
        assert all(0 <= p <= 1 for p in got.values())
    else:
        np.testing.assert_allclose([answer["values"]["a"], answer["values"]["b"]], saved, rtol=1e-4, atol=1e-4)
        assert 20 < answer["values"]["a"] < 60  # in the targets' units, not standardised
    keras.backend.clear_session()
