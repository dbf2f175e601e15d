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


DECODED = [("conv_stack", "unet"), ("vgg16", "unet"), ("mobilenet_v2", "deeplab_v3_plus"), ("resnet50", "fpn"),
           ("densenet121", "unet"), ("efficientnet_b0", "fpn"), ("efficientnet_v2_b0", "unet"), ("mobilenet", "unet"),
           ("mobilenet_v3_small", "deeplab_v3_plus"), ("convnext_tiny", "fpn"), ("nasnet_mobile", "deeplab_v3_plus")]
UNALIGNED = ("inception_v3", "xception")  # unpadded convolutions: no decoder's skips ever align


def test_every_backbone_family_is_decoded_or_refused_by_check(tmp_path):
    """Each family has a decoder here that trains (below), or check refuses every decoder on it."""
    assert sorted([kind for kind, _ in DECODED] + list(UNALIGNED)) == BACKBONES
    for kind in UNALIGNED:
        for decoder in ("unet", "fpn", "deeplab_v3_plus"):
            spec = tmp_path / f"{kind}_{decoder}.yaml"
            spec.write_text(f"task: segmentation\ninput: {{shape: [224, 224, 3]}}\nbackbone: {{type: {kind}, "
                            f"weights: null}}\nhead: {{type: {decoder}, classes: 3}}\n")
            done = tlc("check", spec)
            assert done.exit_code == 1 and "no input near it aligns them" in " ".join(done.output.split()), \
                done.output


@pytest.mark.parametrize("kind, decoder", DECODED)
def test_a_decoder_check_accepts_builds_trains_and_segments(kind, decoder, tmp_path):
    """A decoder over every family's taps at the smallest input check names (test_decoders plans
    every decoder on more backbones against Keras): trained a step on npz masks (the frozen encoder
    runs whole: its taps cross the feature cache's boundary), its masks at the input's size."""
    import keras

    from tlc.train.loop import train

    backbone = f"{{type: {kind}, weights: null" + (", blocks: [{filters: 4, padding: same}, {filters: 8, padding: "
                                                   "same}]" if kind == "conv_stack" else "") + "}"
    probe = tmp_path / "probe.yaml"
    probe.write_text(f"task: segmentation\ninput: {{shape: [224, 224, 3]}}\nbackbone: {backbone}\n"
                     f"head: {{type: {decoder}, classes: 3}}\n")
    report = json.loads(tlc("check", probe, "--json").stdout)
    assert report["ok"], report
    side = max(report["min_input"])
    rng = np.random.default_rng(0)
    x = rng.random((6, side, side, 3), dtype=np.float32)
    y = rng.integers(0, 3, (6, side, side)).astype("uint8")
    y[:, 0, 0] = 255  # an ignored pixel
    np.savez(tmp_path / "tiny.npz", x=x, y=y)
    spec = tmp_path / f"{kind}.yaml"
    spec.write_text(f"task: segmentation\ninput: {{shape: [{side}, {side}, 3]}}\nbackbone: {backbone}\nfreeze: all\n"
                    f"head: {{type: {decoder}, classes: 3}}\n"
                    "train: {data: {type: npz, path: tiny.npz, validation_split: 0.34}, epochs: 1, batch_size: 2, "
                    "class_weight: balanced}\n")
    checked = tlc("check", spec, "--json")
    assert checked.exit_code == 0, checked.output
    planned = json.loads(checked.stdout)
    assert planned["output_shape"] == [side, side, 3] and planned["taps"]
    result = train(spec, tmp_path / "runs")
    assert result.metrics["params"] == planned["params"] and np.isfinite(result.metrics["final"]["loss"])
    assert 0 <= result.metrics["final"]["val_miou"] <= 1
    assert sum(result.metrics["task"]["pixels"]) == int((y[:4] != 255).sum())  # (the 4 training masks')
    masks = np.asarray(result.model(x[:1], training=False))
    assert masks.shape == (1, side, side, 3)
    keras.backend.clear_session()
