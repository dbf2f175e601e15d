"""Data sources for `tlc train`: npz, directory, cifar10 (offline), class subsets, resize."""
from __future__ import annotations

import numpy as np
import pytest

import tlc
from tlc.errors import RunError
from tlc.train import data

pytestmark = pytest.mark.slow

HEAD = "backbone: {type: conv_stack, blocks: [{filters: 4}]}\nhead: {type: dense, classes: 3}\n"


def test_npz_source_scales_uint8_and_relabels_classes(write, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 6, 6)).astype("uint8")
    y = np.arange(40) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = tlc.load_spec(write("input: {shape: [6, 6, 1]}\n" + HEAD +
                               "train: {data: {type: npz, path: d.npz, classes: [4, 0, 2], validation_split: 0.25}}\n"))
    d = data.load(spec)
    assert d.class_names == ["4", "0", "2"]
    assert len(d.y_train) + len(d.y_val) == 24 and len(d.y_val) == 6
    assert set(np.concatenate([d.y_train, d.y_val])) == {0, 1, 2}
    assert d.x_train.dtype == np.float32 and d.x_train.max() <= 1.0 and d.x_train.shape[1:] == (6, 6, 1)
    # relabelling keeps images with their labels: class "4" (label 0) came from y == 4
    originals = {tuple(x[i].ravel()): y[i] for i in range(40)}
    for image, label in zip(d.x_train, d.y_train):
        assert originals[tuple(np.round(image.ravel() * 255).astype("uint8"))] == [4, 0, 2][label]


def test_directory_source_with_resize_and_rgb(write, tmp_path):
    import keras

    rng = np.random.default_rng(1)
    for name in ("cat", "dog", "fox"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(4):
            keras.utils.save_img(tmp_path / "imgs" / name / f"{i}.png", rng.integers(0, 255, (20, 30, 3)).astype("uint8"))
    spec = tlc.load_spec(write("input: {shape: [10, 12, 3]}\n" + HEAD +
                               "train: {data: {type: directory, path: imgs, validation_split: 0.25}}\n"))
    d = data.load(spec)
    assert d.class_names == ["cat", "dog", "fox"]
    assert d.x_train.shape == (9, 10, 12, 3) and d.x_val.shape == (3, 10, 12, 3)


def test_directory_needs_class_folders(write, tmp_path):
    (tmp_path / "flat").mkdir()
    spec = tlc.load_spec(write("input: {shape: [8, 8, 1]}\n" + HEAD + "train: {data: {type: directory, path: flat}}\n"))
    with pytest.raises(tlc.SpecError, match=r"spec\.yaml:4:39: train\.data\.path: .*flat needs one sub-folder per class"):
        data.load(spec)


def test_digits_resized_to_rgb(write):
    spec = tlc.load_spec(write("input: {shape: [16, 16, 3]}\n" + HEAD.replace("classes: 3", "classes: 10") +
                               "train: {data: {type: digits, resize: [16, 16]}}\n"))
    d = data.load(spec)
    assert d.x_train.shape[1:] == (16, 16, 3)
    np.testing.assert_array_equal(d.x_train[..., 0], d.x_train[..., 2])  # grey repeated


def test_cifar10_offline_names_the_cache_file(write, monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    spec = tlc.load_spec(write("input: {shape: [32, 32, 3]}\n" + HEAD + "train: {data: {type: cifar10}}\n"))
    with pytest.raises(RunError, match=r"cifar10 could not be downloaded.*cifar-10-batches-py\.tar\.gz"):
        data.load(spec)
