"""`tlc explain`: Grad-CAM that is right, not only drawn. On generated images whose class is a
shape in one quadrant over noise, the trained model's heat-map peak lies in that quadrant."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import tlc



def quadrant(y: int, x: int, height: int, width: int) -> int:
    return 2 * (y >= height // 2) + (x >= width // 2)


@pytest.mark.slow
def test_the_heat_map_peaks_where_the_shape_is(shapes_run, tmp_path):
    folder, drawn = shapes_run
    split = json.loads((folder / "split.json").read_text())
    truth = {path: (label, q) for path, label, q in drawn}
    test_files = [path for path, _ in split["test_files"]]
    result = tlc("explain", folder, *test_files, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == len(test_files) == 90
    hits = sum(quadrant(*r["peak"], 48, 48) == truth[r["image"]][1] for r in records)
    correct = sum(r["class"] == truth[r["image"]][0] for r in records)
    assert correct >= 80 and hits >= 0.8 * len(records), (hits, correct)
    assert {r["layer"] for r in records} == {"block3_conv1"}  # the backbone's last spatial map
    assert all(Path(r["png"]).is_file() and Path(r["png"]).name == Path(r["image"]).stem + ".cam.png" for r in records)
    from PIL import Image

    with Image.open(tmp_path / "out" / "explain.png") as grid:
        assert grid.size[0] > 800 and grid.size[1] > 800


@pytest.mark.slow
def test_explain_a_chosen_class_and_layer_and_bad_choices(shapes_run, tmp_path):
    folder, drawn = shapes_run
    circle = next(path for path, label, _ in drawn if label == "circle")
    result = tlc("explain", folder, circle, "--class", "square", "--layer", "block2_conv1", "-o", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["class"] == "square" and record["layer"] == "block2_conv1" and record["probability"] < 0.5
    assert not (tmp_path / "explain.png").exists()  # one image: no grid
    for args, message in ((["--class", "hexagon"], "--class hexagon: the run's classes are circle, square, triangle"),
                          (["--layer", "nope"], "--layer nope: the model has no layer of that name"),
                          (["--layer", "predictions"], "--layer predictions: its output (3,) is not a feature map")):
        bad = tlc("explain", folder, circle, *args)
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output, bad.output
    missing = tlc("explain", folder, tmp_path / "nope.png")
    assert missing.exit_code == 2 and "nope.png: file not found" in missing.output


def test_grad_cam_on_a_zoo_backbone_names_its_last_feature_map():
    """Every built-in backbone has a default layer, from the static plan (no TensorFlow)."""
    from tlc.use.explain import default_layer
    from tlc.plugin import zoo

    from .helpers import spec_from_data

    for row in zoo.MODELS:
        spec = spec_from_data({"input": {"shape": [row.min_size + 64] * 2 + [3]}, "backbone": {"type": row.type},
                               "head": {"type": "dense", "pooling": "avg", "classes": 2}})
        assert default_layer(spec) not in ("input", "head_gap", "predictions"), row.type
    resnet = spec_from_data({"input": {"shape": [96, 96, 3]}, "backbone": {"type": "resnet50"},
                             "head": {"type": "dense", "pooling": "avg", "classes": 2}})
    assert default_layer(resnet) == "conv5_block3_out"


@pytest.mark.slow
def test_evaluate_draws_heat_maps_on_the_misclassified(shapes_run, tmp_path):
    import shutil

    folder, _ = shapes_run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    result = tlc("evaluate", copy, "--split", "val")
    assert result.exit_code == 0, result.output
    from tlc.use.explain import heat_maps
    from tlc.use.predictor import Predictor
    from tlc.use.run import Run

    run = Run.open(copy)
    images = np.random.default_rng(0).random((2, 48, 48, 3), dtype=np.float32)
    heats = heat_maps(Predictor.of_run(run), run.spec, images, [0, 1])
    assert heats.shape == (2, 48, 48) and heats.min() >= 0 and heats.max() <= 1


@pytest.mark.slow
def test_images_of_the_same_name_get_heat_maps_of_their_own(shapes_run, tmp_path):
    """`tlc explain RUN a/x.png b/x.png` once wrote x.cam.png twice; each input keeps its own file."""
    import shutil

    folder, drawn = shapes_run
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = shutil.copy(drawn[0][0], tmp_path / "a" / "x.png"), shutil.copy(drawn[-1][0], tmp_path / "b" / "x.png")
    result = tlc("explain", folder, first, second, first, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    written = [Path(r["png"]).name for r in json.loads(result.stdout)]
    assert written == ["a_x.cam.png", "b_x.cam.png", "a_x-2.cam.png"]
    assert all((tmp_path / "out" / name).is_file() for name in written)


def test_output_names_keep_as_much_of_the_path_as_tells_them_apart():
    from tlc.use.predict import output_stems

    assert output_stems([Path("p/a/x.png"), Path("p/b/x.jpg"), Path("y.png")]) == ["a_x", "b_x", "y"]
    assert output_stems([Path("one/same/x.png"), Path("two/same/x.png")]) == ["one_same_x", "two_same_x"]
    assert output_stems([Path("x.png"), Path("x.png")]) == ["x", "x-2"]


@pytest.mark.slow
def test_flip_averages_the_heat_map_with_the_mirror_images_mirrored_back(shapes_run):
    from tlc.use.explain import Explainer
    from tlc.data.images import decode_many
    from tlc.use.predictor import Predictor
    from tlc.use.run import Run

    folder, drawn = shapes_run
    run = Run.open(folder)
    explainer = Explainer(run, Predictor.of_run(run))
    (h, w, c) = run.spec.input.hwc
    images = decode_many([p for p, _, _ in drawn[:3]], (h, w), c) / np.float32(255)
    flipped = explainer(images, tta="flip")
    chosen = [e.class_index for e in flipped]
    for i, item in enumerate(flipped):
        plain = explainer(images[i:i + 1], chosen[i])[0]
        mirrored = explainer(images[i:i + 1, :, ::-1], chosen[i])[0]
        np.testing.assert_allclose(item.heat, (plain.heat + mirrored.heat[:, ::-1]) / 2, atol=1e-5)
        assert abs(item.probability - (plain.probability + mirrored.probability) / 2) < 1e-5
