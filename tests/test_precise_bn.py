"""Precise batch-norm statistics after training (`train.recalibrate_bn`): exact averages of the
batch statistics, only for the batch norms that trained in the last phase, on cached features
as on images, recorded in metrics.json and carried by the saved model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import tlc


SPEC = """
name: bn
input: {{shape: [12, 12, 3]}}
backbone: {{type: conv_stack, blocks: [{{filters: 4}}, {{filters: 6, batch_norm: true}}]}}
freeze: {freeze}
head: {{type: dense, pooling: avg, classes: 3}}
train:
  data: {{type: npz, path: data.npz, validation_split: 0.25}}
  epochs: 2
  batch_size: 8
{extra}"""


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(48) % 3
    x = rng.random((48, 12, 12, 3), dtype=np.float32) * 0.3
    x[np.arange(48), :, :, y] += 0.6  # the class is the bright channel
    np.savez(tmp_path / "data.npz", x=x, y=y)


@pytest.mark.slow
def test_the_moving_statistics_become_the_batch_size_weighted_average_of_the_batches():
    import keras

    from tlc.train.precise_bn import recalibrate, trained_batch_norms

    inputs = keras.Input((5, 5, 2))
    conv = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    trained = keras.layers.BatchNormalization(name="trained")(conv)
    frozen = keras.layers.BatchNormalization(name="frozen")(keras.layers.Conv2D(3, 1)(trained))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(frozen))
    model.get_layer("frozen").trainable = False
    frozen_before = [w.copy() for w in model.get_layer("frozen").get_weights()]
    layers = trained_batch_norms(model)
    assert [layer.name for layer in layers] == ["trained"]

    x = np.random.default_rng(1).normal(3.0, 2.0, (10, 5, 5, 2)).astype(np.float32)
    batches = [x[:4], x[4:8], x[8:]]  # the last one short: weights 4, 4, 2
    assert recalibrate(model, batches, layers) == 10
    conv_out = np.asarray(keras.Model(inputs, conv)(x))
    parts = [conv_out[:4], conv_out[4:8], conv_out[8:]]
    mean = sum(len(p) * p.mean(axis=(0, 1, 2)) for p in parts) / 10
    variance = sum(len(p) * p.var(axis=(0, 1, 2)) for p in parts) / 10
    layer = model.get_layer("trained")
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)
    assert layer.momentum == 0.99  # restored
    for after, before in zip(model.get_layer("frozen").get_weights(), frozen_before):
        np.testing.assert_array_equal(after, before)


@pytest.mark.slow
def test_a_run_recalibrates_on_cached_features_as_on_images_and_saves_the_statistics(write, data, tmp_path):
    import keras

    from tlc.train.loop import train

    cached = train(write(SPEC.format(freeze="{up_to: 3}", extra="")), tmp_path / "runs")
    record = cached.metrics["recalibrated_bn"]
    assert record["layers"] == ["block2_bn1"] and record["images"] == 36
    assert set(record["before"]) == set(record["after"]) == {"val_accuracy", "val_loss"}
    assert cached.metrics["final"]["val_loss"] == record["after"]["val_loss"]
    assert cached.metrics["feature_cache"][0].startswith("feature cache: on")
    history = (cached.folder / "history.csv").read_text().splitlines()
    assert len(history) == 3  # the history keeps the epochs' own rows
    saved = keras.saving.load_model(cached.folder / "model.keras").get_layer(cached.model.name)
    np.testing.assert_allclose(saved.get_layer("block2_bn1").moving_mean.numpy(),
                               cached.model.get_layer("block2_bn1").moving_mean.numpy())

    uncached = train(write(SPEC.format(freeze="{up_to: 3}", extra=""), "uncached.yaml"), tmp_path / "nocache",
                     use_cache=False)
    assert uncached.metrics["feature_cache"][0].startswith("feature cache: off")
    for name in ("moving_mean", "moving_variance"):  # the tail on features == the whole model on images
        np.testing.assert_allclose(getattr(uncached.model.get_layer("block2_bn1"), name).numpy(),
                                   getattr(cached.model.get_layer("block2_bn1"), name).numpy(), rtol=1e-4, atol=1e-5)
    assert uncached.metrics["recalibrated_bn"]["after"] == pytest.approx(record["after"], rel=1e-4)

    # the saved model, in inference mode on the validation split, scores what metrics.json says
    evaluated = tlc("evaluate", cached.folder, "--split", "val", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(record["after"]["val_accuracy"])


@pytest.mark.slow
@pytest.mark.parametrize("setting, expected", [("false", None), ("{images: 5}", 5), ("auto", 36)])
def test_the_setting_turns_it_off_or_sets_the_images(write, data, tmp_path, setting, expected):
    from tlc.train.loop import train

    result = train(write(SPEC.format(freeze="none", extra=f"  recalibrate_bn: {setting}\n")), tmp_path / "runs")
    record = result.metrics["recalibrated_bn"]
    assert (record and record["images"]) == expected
    if record:
        assert record["layers"] == ["block2_bn1"]


@pytest.mark.slow
def test_auto_leaves_a_model_whose_batch_norms_did_not_train_alone(write, data, tmp_path):
    from tlc.train.loop import train

    result = train(write(SPEC.format(freeze="all", extra="")), tmp_path / "runs")
    assert result.metrics["recalibrated_bn"] is None


def test_a_bad_setting_is_a_located_error(write, data):
    spec = write(SPEC.format(freeze="none", extra="  recalibrate_bn: sometimes\n"))
    checked = tlc("check", spec)
    assert checked.exit_code == 2
    assert "spec.yaml:10:19: train.recalibrate_bn: Input should be 'auto'; received: 'sometimes'" in checked.output
    checked = tlc("check", write(SPEC.format(freeze="none", extra="  recalibrate_bn: 5\n")))
    assert "train.recalibrate_bn: Input should be auto, true, false or {images: N}" in checked.output
