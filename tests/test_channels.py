"""The contract's channel rules: any channel count with `weights: null`; ImageNet weights (or a
3-channel model's, by path) adapted to 1 or more channels by their first convolution; the family
preprocessing with per-channel constants averaged over RGB for other channel counts."""
from __future__ import annotations

import numpy as np
import pytest

from .conftest import tlc as run
from .helpers import one_type_per_family, spec_from_data

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], "float32")
TORCH_MEAN, TORCH_STD = np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32")


def _spec(kind, channels, side=32, **backbone):
    return spec_from_data({"input": {"shape": [side, side, channels]}, "backbone": {"type": kind, **backbone},
                           "head": {"type": "none"}}, f"{kind}_{channels}")


@pytest.mark.parametrize("channels", [1, 2, 5])
def test_preprocessing_averages_per_channel_constants_for_other_channel_counts(channels):
    x = np.random.default_rng(1).random((2, 32, 32, channels), dtype=np.float32)
    caffe = np.asarray(_spec("vgg16", channels).backbone.preprocess(x))
    np.testing.assert_allclose(caffe, x * 255.0 - CAFFE_MEAN_BGR.mean(), rtol=1e-5, atol=1e-3)
    torch = np.asarray(_spec("densenet121", channels).backbone.preprocess(x))
    np.testing.assert_allclose(torch, (x - TORCH_MEAN.mean()) / TORCH_STD.mean(), rtol=1e-5, atol=1e-5)
    tf = np.asarray(_spec("mobilenet_v2", channels).backbone.preprocess(x))
    np.testing.assert_allclose(tf, x * 2.0 - 1.0, atol=1e-5)


def test_adapt_kernel_follows_timm():
    from tlc.build.weights import adapt_kernel

    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype("float32")
    np.testing.assert_allclose(adapt_kernel(kernel, 1), kernel.sum(axis=2, keepdims=True), rtol=1e-6)
    five = adapt_kernel(kernel, 5)
    assert five.shape == (3, 3, 5, 4)
    np.testing.assert_allclose(five, np.concatenate([kernel, kernel[:, :, :2]], axis=2) * 3 / 5, rtol=1e-6)
    gray = np.random.default_rng(1).random((3, 3))  # a gray patch: one channel, or the same on every channel
    for channels in (1, 6):  # exact when C is 1 or a multiple of 3; otherwise the mean response is kept
        response = np.einsum("hw,hwcf->f", gray, adapt_kernel(kernel, channels).sum(axis=2, keepdims=True))
        np.testing.assert_allclose(response, np.einsum("hw,hwcf->f", gray, kernel), rtol=1e-5)


def _fake_imagenet_file(kind: str, keras_dir, build, adjust=None):
    """Weights of a 3-channel model saved as the file keras.applications looks for in the cache
    (a legacy .h5 of the model's weights), so nothing is downloaded."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    model = build()
    if adjust:
        adjust(model)
    name = {"vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "efficientnet_b0": "efficientnetb0_notop.h5"}[kind]
    (keras_dir / "models").mkdir(parents=True, exist_ok=True)
    with h5py.File(keras_dir / "models" / name, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return model


@pytest.fixture
def keras_cache(tmp_path, monkeypatch):
    """A Keras home whose files are taken as they are (the real files' hashes cannot match)."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "kh"))
    monkeypatch.setattr(file_utils, "validate_file", lambda *args, **kwargs: True)
    return tmp_path / "kh"


@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 4])
def test_imagenet_weights_on_other_channel_counts_adapt_the_first_convolution(channels, keras_cache, write,
                                                                              tmp_path):
    import keras

    donor = _fake_imagenet_file("vgg16", keras_cache, lambda: keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(32, 32, 3)))
    path = write(f"input: {{shape: [32, 32, {channels}]}}\nbackbone: {{type: vgg16, weights: imagenet, "
                 "output: block2_pool}\nfreeze: all\nhead: {type: dense, pooling: avg, classes: 2}\n")
    checked = run("check", path)
    assert checked.exit_code == 0, checked.output
    built = run("build", path, "-o", tmp_path / "m.keras")
    assert built.exit_code == 0, built.output
    assert (f"weights: the ImageNet weights were made for 3 input channels; adapted to {channels}: block1_conv1"
            in built.output)
    model = keras.saving.load_model(tmp_path / "m.keras")
    kernel, bias = donor.get_layer("block1_conv1").get_weights()
    from tlc.build.weights import adapt_kernel

    got_kernel, got_bias = model.get_layer("block1_conv1").get_weights()
    np.testing.assert_allclose(got_kernel, adapt_kernel(kernel, channels), rtol=1e-6)
    np.testing.assert_array_equal(got_bias, bias)
    for name in ("block1_conv2", "block2_conv1", "block2_conv2"):
        for got, want in zip(model.get_layer(name).get_weights(), donor.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_efficientnet_imagenet_on_one_channel_averages_its_statistics_and_folds_its_scale(keras_cache, write,
                                                                                        tmp_path):
    import keras

    def normalization(model):  # by type: its auto name counts the Normalization layers made before in the process
        [layer] = [layer for layer in model.layers if type(layer).__name__ == "Normalization"]
        return layer

    def statistics(model):
        layer = normalization(model)
        layer.set_weights([np.array([0.4, 0.5, 0.6], "float32"), np.array([0.04, 0.05, 0.06], "float32"),
                           np.array(0, "int64")])

    donor = _fake_imagenet_file("efficientnet_b0", keras_cache, lambda: keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(32, 32, 3)), statistics)
    path = write("input: {shape: [32, 32, 1]}\nbackbone: {type: efficientnet_b0, weights: imagenet}\n"
                 "freeze: all\nhead: {type: dense, pooling: avg, classes: 2}\n")
    checked = run("check", "--json", path)
    assert checked.exit_code == 0, checked.output
    built = run("build", path, "-o", tmp_path / "m.keras")
    assert built.exit_code == 0, built.output
    model = keras.saving.load_model(tmp_path / "m.keras")
    import json

    assert model.count_params() == json.loads(checked.stdout)["params"]["total"]
    mean, variance, _ = normalization(model).get_weights()
    np.testing.assert_allclose(mean, [0.5], rtol=1e-6)
    np.testing.assert_allclose(variance, [0.05], rtol=1e-6)
    std = np.array([0.229, 0.224, 0.225], "float32")  # keras.applications' ImageNet-only rescaling 1/sqrt(std)
    folded = (donor.get_layer("stem_conv").get_weights()[0] / np.sqrt(std)[None, None, :, None]).sum(axis=2,
                                                                                                     keepdims=True)
    np.testing.assert_allclose(model.get_layer("stem_conv").get_weights()[0], folded, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_three_channel_source_model_feeds_a_one_channel_spec(write, tmp_path):
    import keras

    source = write("name: rgb\ninput: {shape: [8, 8, 3]}\n"
                   "backbone: {type: conv_stack, blocks: [{filters: 4, convs: 2, padding: same}, {filters: 6, pool: null}]}\n"
                   "head: {type: dense, classes: 2}\n", "rgb.yaml")
    assert run("build", source, "-o", tmp_path / "rgb.keras").exit_code == 0
    gray = write("input: {shape: [8, 8, 1]}\n"
                 "backbone: {type: conv_stack, weights: rgb.keras, blocks: [{filters: 4, convs: 2, padding: same}, "
                 "{filters: 6, pool: null}]}\nfreeze: all\nhead: {type: dense, classes: 2}\n", "gray.yaml")
    built = run("build", gray, "-o", tmp_path / "gray.keras")
    assert built.exit_code == 0, built.output
    assert f"weights: {tmp_path / 'rgb.keras'} were made for 3 input channels; adapted to 1: block1_conv1" \
        in built.output
    rgb, one = keras.saving.load_model(tmp_path / "rgb.keras"), keras.saving.load_model(tmp_path / "gray.keras")
    np.testing.assert_allclose(one.get_layer("block1_conv1").get_weights()[0],
                               rgb.get_layer("block1_conv1").get_weights()[0].sum(axis=2, keepdims=True), rtol=1e-6)
    image = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    cut = lambda m: keras.Model(m.input, m.get_layer("block2_conv1").output)  # noqa: E731
    np.testing.assert_allclose(cut(one).predict(image, verbose=0), cut(rgb).predict(np.repeat(image, 3, -1), verbose=0),
                               rtol=1e-4, atol=1e-5)  # a gray image gives the 3-channel model's features


@pytest.mark.slow
@pytest.mark.parametrize("kind", one_type_per_family())
def test_imagenet_weights_on_grayscale_for_every_family(kind, monkeypatch, tmp_path):
    """Every family loads (fake) ImageNet weights through keras.applications' own path at 3
    channels and adapts them to 1: the layer that reads the image is summed over RGB, every
    other weight is the donor's, and the adapted model runs on the family's preprocessing."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.utils import file_utils

    from tlc.build.emit import compile as emit
    from tlc.plan.graph import fresh_layer_names
    from tlc.plugin.registry import get_registry
    from tlc.build.weights import adapt_kernel

    cls = get_registry().backbones[kind].cls
    m = cls.min_size
    with fresh_layer_names():  # Keras's automatic names (conv2d, add, ...) as in the model tlc builds
        donor = getattr(keras.applications, cls.keras_function)(include_top=False, weights=None,
                                                                 input_shape=(m, m, 3))
    path = tmp_path / "imagenet.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, donor)
    asked = []
    monkeypatch.setattr(file_utils, "get_file", lambda name, *args, **kwargs: asked.append(name) or str(path))
    spec = _spec(kind, 1, side=m, weights="imagenet")
    notes: list[str] = []
    model = emit(spec, notes=notes)
    first = cls.row.first_conv.format(type=kind)
    assert asked and notes == [f"weights: the ImageNet weights were made for 3 input channels; adapted to 1: "
                               f"{'normalization, ' if kind == 'efficientnet_b0' else ''}{first} (kernels summed "
                               "over RGB; per-channel statistics averaged over RGB)"]
    scale = 1 / np.sqrt(TORCH_STD)[None, None, :, None] if kind == "efficientnet_b0" else 1  # its folded rescaling
    np.testing.assert_allclose(model.get_layer(first).get_weights()[0],
                               adapt_kernel(donor.get_layer(first).get_weights()[0] * scale, 1), rtol=1e-5, atol=1e-6)
    for layer in model.layers:
        if layer.weights and layer.name not in (first, "normalization"):
            for got, want in zip(layer.get_weights(), donor.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(got, want)
    x = np.asarray(spec.backbone.preprocess(np.random.default_rng(0).random((2, m, m, 1), dtype=np.float32)))
    before = np.asarray(model([x]))
    assert np.isfinite(before).all()
    if cls.preprocess_mode == "none":  # normalization inside the model: the .keras round trip keeps it
        from tlc.build.loading import load_model  # (keras-team/keras#20147 was EfficientNet's after a reload)

        model.save(tmp_path / "m.keras")
        np.testing.assert_allclose(np.asarray(load_model(str(tmp_path / "m.keras"))([x])), before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["convnext_tiny", "efficientnet_v2_b0"])
def test_families_that_normalize_inside_the_model_get_the_averaged_statistics_outside_it(kind):
    """Keras drops these models' ImageNet normalization below 3 channels (ConvNeXt) or swaps it
    for a [-1, 1] rescaling (EfficientNetV2 B0-B3); tlc's preprocessing restores the averaged
    normalization, so what the first convolution sees is what it does at 3 channels."""
    x = np.random.default_rng(2).random((2, 32, 32, 1), dtype=np.float32)
    normalized = (x - TORCH_MEAN.mean()) / TORCH_STD.mean()
    got = np.asarray(_spec(kind, 1).backbone.preprocess(x))
    seen = got if kind == "convnext_tiny" else got / 128.0 - 1.0  # after the model's Rescaling(1/128, -1)
    np.testing.assert_allclose(seen, normalized, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(_spec(kind, 3).backbone.preprocess(np.repeat(x, 3, -1))),
                               np.repeat(x, 3, -1) * 255.0, rtol=1e-6)
