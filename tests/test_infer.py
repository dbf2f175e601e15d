"""Patterns 1 and 2: `tlc predict` (classifier) and `tlc extract` (standalone feature extractor)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import tlc
from tlc.train.loop import train

from .conftest import tlc as run

pytestmark = pytest.mark.slow

FC2 = """
input: {shape: [32, 32, 3]}
backbone: {type: vgg16, include_top: true, classes: 10, output: fc2}
freeze: all
head: {type: none}
"""


def _png_folder(tmp_path, count, size, channels):
    import keras

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        keras.utils.save_img(folder / f"img{i}.png", rng.integers(0, 255, (size, size, channels)).astype("uint8"))
    return folder


def test_extract_fc2_features_from_a_folder(write, tmp_path):
    spec = write(FC2)
    folder = _png_folder(tmp_path, 3, 40, 3)
    result = run("extract", spec, folder, "-o", tmp_path / "f.npy")
    assert result.exit_code == 0, result.output
    features = np.load(tmp_path / "f.npy")
    assert features.shape == (3, 4096) == (3, *tlc.check(spec).output_shape)
    assert (tmp_path / "f.sources.txt").read_text().splitlines() == [str(folder / f"img{i}.png") for i in range(3)]


def test_extract_cut_backbone_from_npz(write, tmp_path):
    spec = write("input: {shape: [8, 8, 1]}\nbackbone: {type: conv_stack, blocks: [{filters: 6}]}\nhead: {type: none}\n")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).integers(0, 255, (5, 8, 8)).astype("uint8"))
    result = run("extract", spec, tmp_path / "d.npz", "-o", tmp_path / "f.npy")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "f.npy").shape == (5, 3, 3, 6)
    assert "wrote" in result.output and "features (5, 3, 3, 6)" in result.output
    bad = run("extract", spec, tmp_path / "d.npz", "-o", tmp_path / "f.txt")
    assert bad.exit_code == 2 and "--output must end in .npy" in bad.output


def test_predict_with_a_trained_run_uses_its_class_names(write, tmp_path):
    spec = write("name: d\ninput: {shape: [8, 8, 1]}\nbackbone: {type: conv_stack, blocks: [{filters: 8, convs: 2}]}\n"
                 "head: {type: dense, classes: 3}\n"
                 "train: {data: {type: digits, classes: [3, 5, 7]}, epochs: 2, seed: 0}\n")
    result = train(tlc.load_spec(spec), tmp_path / "runs")
    folder = _png_folder(tmp_path, 2, 8, 1)
    out = run("predict", result.folder / "model.keras", folder, "--top", "2", "--json")
    assert out.exit_code == 0, out.output
    predictions = json.loads(out.stdout)
    assert [p["image"] for p in predictions] == [str(folder / "img0.png"), str(folder / "img1.png")]
    for p in predictions:
        assert len(p["top"]) == 2 and {t["class"] for t in p["top"]} <= {"3", "5", "7"}
        assert p["top"][0]["probability"] >= p["top"][1]["probability"]
    text = run("predict", result.folder / "model.keras", folder / "img0.png")
    assert text.exit_code == 0 and text.stdout.startswith(f"{folder / 'img0.png'}: ")


def test_predict_refuses_a_feature_extractor_and_missing_images(write, tmp_path):
    spec = write(FC2)
    folder = _png_folder(tmp_path, 1, 32, 3)
    assert "not class scores; use tlc extract" in run("predict", spec, folder).output
    missing = run("predict", spec, tmp_path / "nope.png")
    assert missing.exit_code == 2 and "nope.png: file not found" in missing.output
