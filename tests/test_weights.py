"""`backbone.weights`: a path loads by layer name; imagenet offline is a clear error."""
from __future__ import annotations

import urllib.error

import numpy as np

import tlc
from tlc.build.emit import compile as emit

from .conftest import EXAMPLES, tlc as run

SOURCE = """
name: source
input: {shape: [12, 12, 1]}
backbone: {type: conv_stack, blocks: [{filters: 4, convs: 2}, {filters: 6, pool: null}]}
head: {type: dense, classes: 5}
"""


def _saved_source(write, tmp_path):
    model = emit(tlc.load_spec(write(SOURCE, "source.yaml")))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    path = tmp_path / "source.keras"
    model.save(path)
    return model, path


def test_weights_path_copies_backbone_layers_by_name(write, tmp_path):
    source, path = _saved_source(write, tmp_path)
    target = emit(tlc.load_spec(write(
        "extends: source.yaml\nname: target\nbackbone: {weights: source.keras}\nfreeze: all\n"
        "head: {type: dense, units: [3], classes: 2}\n", "target.yaml")))
    for name in ("block1_conv1", "block1_conv2", "block2_conv1"):
        for mine, theirs in zip(target.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, theirs)
        assert target.get_layer(name).trainable is False
    assert target.get_layer("predictions").get_weights()[0].shape == (3, 2)  # the head is new


def test_weights_shape_mismatch_is_a_located_error(write, tmp_path):
    _saved_source(write, tmp_path)
    spec = write("extends: source.yaml\nname: rgb\ninput: {shape: [12, 12, 3]}\n"
                 "backbone: {weights: source.keras}\n", "rgb.yaml")
    result = run("build", spec, "-o", tmp_path / "out.keras")
    assert result.exit_code == 2
    assert "rgb.yaml:4:21: backbone.weights: layer 'block1_conv1': weights in" in result.output
    assert "(different input channels or filters?)" in result.output
    assert not (tmp_path / "out.keras").exists()


def test_weights_missing_layer_names_are_listed(write, tmp_path):
    _saved_source(write, tmp_path)
    spec = write("extends: source.yaml\nname: deeper\nbackbone:\n  weights: source.keras\n"
                 "  blocks: [{filters: 4, convs: 2}, {filters: 6, pool: null}, {filters: 2, padding: same, pool: null}]\n",
                 "deeper.yaml")
    result = run("build", spec, "-o", tmp_path / "out.keras")
    assert result.exit_code == 2
    assert "has no weights for backbone layer(s) block3_conv1; weights are matched by layer name" in result.output


def test_weights_missing_file(write, tmp_path):
    spec = write(SOURCE + "", "s.yaml")
    spec.write_text(spec.read_text().replace("type: conv_stack,", "type: conv_stack, weights: gone.keras,"))
    result = run("build", spec, "-o", tmp_path / "out.keras")
    assert result.exit_code == 2
    assert "s.yaml:3:39: backbone.weights: file not found:" in result.output and "gone.keras" in result.output


def test_imagenet_offline_names_the_file_to_cache(tmp_path, monkeypatch):
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "kh"))
    monkeypatch.chdir(tmp_path)
    result = run("build", EXAMPLES / "vgg16_frozen_300.yaml")
    assert result.exit_code == 1, result.output
    assert "weights: imagenet: could not download vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in result.output
    assert f"copy vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 into {tmp_path / 'kh' / 'models'}/" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "models").exists()


def test_weights_with_sha256_are_verified_before_loading(write, tmp_path):
    import hashlib

    _, path = _saved_source(write, tmp_path)
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    text = "extends: source.yaml\nname: pinned\nbackbone:\n  weights: {{path: source.keras, sha256: '{}'}}\n"
    ok = run("build", write(text.format(good), "pinned.yaml"), "-o", tmp_path / "ok.keras")
    assert ok.exit_code == 0, ok.output
    bad = run("build", write(text.format("0" * 64), "pinned.yaml"), "-o", tmp_path / "bad.keras")
    assert bad.exit_code == 2
    assert f"pinned.yaml:4:41: backbone.weights.sha256: {path} has sha256 {good}, not the expected {'0' * 64}" \
        in bad.output
    assert not (tmp_path / "bad.keras").exists()
    malformed = run("check", write(text.format("abc"), "pinned.yaml"))
    assert malformed.exit_code == 2 and "backbone.weights.sha256: String should match pattern" in malformed.output


def test_parameter_limit_for_build(write, tmp_path, monkeypatch):
    import tlc.spec.preflight

    monkeypatch.setattr(tlc.spec.preflight, "MAX_PARAMS", 100_000)
    result = run("build", EXAMPLES / "vgg16_partly_frozen.yaml", "-o", tmp_path / "m.keras")
    assert result.exit_code == 2
    assert ("the model would have 14,847,301 parameters, more than the limit of 100,000 "
            "(raise it with the TLC_MAX_PARAMS environment variable)") in result.output
