"""Segmentation (contract section 9): masks read as class indices (palette indices, never colours;
a missing, extra or out-of-range mask named), trained with ignored pixels left out, evaluated as
scikit-learn's Jaccard on what model.keras gives in plain Keras, and answered as mask files at the
photo's own size; what segmentation cannot train with yet is refused by `check`, located."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

import tlc

from .conftest import tlc as run_cli
from .helpers import draw_masks, spec_from_data, unboxed

SEG_SPEC = {
    "task": "segmentation",
    "input": {"shape": [64, 64, 3]},
    "backbone": {"type": "conv_stack", "blocks": [{"filters": 16, "padding": "same"}, {"filters": 32, "padding": "same"},
                                                  {"filters": 32, "padding": "same", "pool": None}]},
    "freeze": "none",
    "head": {"type": "unet", "classes": 3, "decoder_filters": [32, 16]},
}


def masks_spec(path, **data):
    return spec_from_data({**SEG_SPEC, "train": {"data": {"type": "masks", "path": str(path), **data}}}, "seg")


def loaded(spec):
    from tlc.data import load

    return load(spec)


def test_palette_masks_are_read_as_indices_never_colours(tmp_path):
    from PIL import Image

    draw_masks(tmp_path, 6)
    dataset = loaded(masks_spec(tmp_path, classes=["background", "circle", "square"], validation_split=0))
    mask = np.asarray(Image.open(tmp_path / "masks" / "0000.png"))
    assert Image.open(tmp_path / "masks" / "0000.png").mode == "P" and set(np.unique(mask)) == {0, 1, 2, 255}
    stems = [f.split("/")[-1][:4] for f in dataset.train.files]
    np.testing.assert_array_equal(dataset.train.labels[stems.index("0000")], mask)
    assert dataset.class_names == ["background", "circle", "square"]


def test_masks_are_kept_in_the_store_beside_the_images_and_a_changed_mask_is_read_again(tmp_path):
    import os

    from PIL import Image

    from tlc.data.store import keeping_in

    draw_masks(tmp_path / "pets", 6)
    spec = masks_spec(tmp_path / "pets", validation_split=0)
    plain = loaded(spec).train
    with keeping_in(tmp_path / "store"):
        first = loaded(spec).train
    [kept] = (tmp_path / "store").glob("*.json")
    assert json.loads(kept.read_text())["decode"].startswith("mask|") and json.loads(kept.read_text())["shape"] == \
        [64, 64, 1]
    np.testing.assert_array_equal(first.labels, plain.labels)
    changed = tmp_path / "pets" / "masks" / "0004.png"
    values = np.asarray(Image.open(changed)).copy()
    values[:8, :8] = 2
    Image.fromarray(values, "L").save(changed)
    os.utime(changed, ns=(10**18, 10**18))
    from tlc.data.store import MaskStore

    reads = []
    original = MaskStore.decode
    MaskStore.decode = lambda self, path: (reads.append(path), original(self, path))[1]
    try:
        with keeping_in(tmp_path / "store"):
            again = loaded(spec).train
    finally:
        MaskStore.decode = original
    assert reads == [str(changed)]  # the others came from the store
    stems = [f.split("/")[-1][:4] for f in again.files]
    assert (again.labels[stems.index("0004")][:8, :8] == 2).all()


def test_a_mask_that_does_not_decode_is_named_or_skipped_with_its_image(tmp_path):
    """`on_error: error` names the mask; `skip` leaves the pair out, named, and the store does not
    keep its row, so a second (stored) load says so again."""
    from tlc.data.store import keeping_in

    draw_masks(tmp_path / "pets", 6)
    broken = tmp_path / "pets" / "masks" / "0002.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(tlc.SpecError, match=re.escape(f"{broken}: not a readable mask (") + ".*"
                       + re.escape("; remove it and its image, or set train.data.on_error: skip")):
        loaded(masks_spec(tmp_path / "pets", validation_split=0))
    for _ in range(2):
        with keeping_in(tmp_path / "store"):
            dataset = loaded(masks_spec(tmp_path / "pets", validation_split=0, on_error="skip"))
        assert [f.split("/")[-1] for f in dataset.skipped] == ["0002.png"] and len(dataset.train) == 5
        assert dataset.skipped_why == [f"{broken}: not a readable mask (not an image format Pillow reads)"]
        assert "0002" not in " ".join(dataset.train.files)


COLOURS = {"background": [0, 0, 0], "circle": [200, 30, 30], "square": [30, 30, 200], "ignore": [255, 255, 255]}


def draw_rgb_masks(indexed, rgb) -> None:
    """`rgb/`: the images of `indexed/` (moved) and its masks drawn in COLOURS."""
    from PIL import Image

    (rgb / "masks").mkdir(parents=True)
    (indexed / "images").rename(rgb / "images")
    by_value = {0: COLOURS["background"], 1: COLOURS["circle"], 2: COLOURS["square"], 255: COLOURS["ignore"]}
    for mask in sorted((indexed / "masks").iterdir()):
        values = np.asarray(Image.open(mask))
        drawn = np.zeros((*values.shape, 3), "uint8")
        for value, colour in by_value.items():
            drawn[values == value] = colour
        Image.fromarray(drawn, "RGB").save(rgb / "masks" / mask.name)


def test_rgb_masks_are_read_through_colors_and_a_stray_colour_is_named(tmp_path):
    from PIL import Image

    draw_masks(tmp_path / "indexed", 4)
    indexed = loaded(masks_spec(tmp_path / "indexed", classes=["background", "circle", "square"], validation_split=0))
    draw_rgb_masks(tmp_path / "indexed", tmp_path / "rgb")
    spec = masks_spec(tmp_path / "rgb", classes=["background", "circle", "square"], validation_split=0,
                      colors=COLOURS)
    np.testing.assert_array_equal(loaded(spec).train.labels, indexed.train.labels)
    stray = np.asarray(Image.open(tmp_path / "rgb" / "masks" / "0002.png")).copy()
    stray[5, 9] = [1, 2, 3]
    Image.fromarray(stray, "RGB").save(tmp_path / "rgb" / "masks" / "0002.png")
    with pytest.raises(tlc.SpecError, match=r"masks/0002.png: colour \(1, 2, 3\) at \(9, 5\) is no class's"):
        loaded(spec)


@pytest.mark.slow
def test_a_run_on_rgb_masks_draws_its_masks_in_their_colours(tmp_path):
    from PIL import Image

    draw_masks(tmp_path / "indexed", 12)
    draw_rgb_masks(tmp_path / "indexed", tmp_path / "rgb")
    spec = {**SEG_SPEC, "name": "rgb", "train": {
        "data": {"type": "masks", "path": str(tmp_path / "rgb"), "classes": ["background", "circle", "square"],
                 "colors": COLOURS, "validation_split": 0.25}, "epochs": 1, "batch_size": 4}}
    (tmp_path / "rgb.yaml").write_text(yaml.safe_dump(spec))
    done = run_cli("train", tmp_path / "rgb.yaml", "--runs", tmp_path / "runs")
    assert done.exit_code == 0, done.output
    run = tmp_path / "runs" / "rgb"
    own = [COLOURS["background"], COLOURS["circle"], COLOURS["square"]]
    assert json.loads((run / "metrics.json").read_text())["task"]["colors"] == own
    result = run_cli("predict", run, tmp_path / "rgb" / "images" / "0001.png", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    mask = Image.open(json.loads(result.stdout)[0]["mask"])
    assert mask.getpalette()[:9] == [v for colour in own for v in colour]


def test_balanced_class_weights_weigh_pixels_as_scikit_learn_weighs_them():
    import keras
    from sklearn.utils.class_weight import compute_class_weight

    from tlc.task.segmentation import Segmentation, pixel_class_weights, pixel_loss_class

    rng = np.random.default_rng(0)
    masks = rng.choice([0, 0, 0, 0, 1, 2, 255], size=(4, 16, 16)).astype("uint8")
    record = Segmentation().record(masks)
    weights = pixel_class_weights(record["pixels"], 4)  # class 3 has no pixel: weight 1
    counted = masks[masks != 255]
    np.testing.assert_allclose(weights[:3], compute_class_weight("balanced", classes=np.arange(3), y=counted))
    assert weights[3] == 1.0
    probabilities = keras.ops.softmax(rng.normal(size=(4, 16, 16, 4)).astype("float32")).numpy()
    loss = pixel_loss_class()("ce", 4, 255, False, class_weights=weights)
    got = float(loss(masks, probabilities))
    keep = masks != 255
    p_true = np.take_along_axis(probabilities, np.where(keep, masks, 0)[..., None].astype(int), -1)[..., 0]
    per_pixel = -np.log(np.clip(p_true, 1e-7, 1)) * np.asarray(weights)[np.where(keep, masks, 0)] * keep
    np.testing.assert_allclose(got, np.mean(per_pixel.sum(axis=(1, 2)) / keep.sum(axis=(1, 2))), rtol=1e-5)
    assert loss.get_config()["class_weights"] == weights  # (saved with a checkpoint for --resume)


@pytest.mark.parametrize("kind", ["ce", "dice", "ce_dice", "jaccard", "ce_jaccard", "focal"])
def test_each_pixel_loss_is_its_formula_over_the_counted_pixels_of_each_image(kind):
    """Each loss against NumPy, per image over the pixels not ignored, then the batch's mean: the
    soft Dice and Jaccard scores smoothed by 1 and averaged over the classes."""
    import keras

    from tlc.task.segmentation import pixel_loss_class

    rng = np.random.default_rng(1)
    masks = rng.choice([0, 0, 1, 2, 255], size=(3, 8, 8)).astype("uint8")
    probabilities = keras.ops.softmax(rng.normal(size=(3, 8, 8, 3)).astype("float32")).numpy().astype("float64")
    got = float(pixel_loss_class()(kind, 3, 255, False)(masks, probabilities.astype("float32")))
    keep = masks != 255
    one_hot = np.eye(3)[np.where(keep, masks, 0)] * keep[..., None]
    p_true = (probabilities * one_hot).sum(-1)
    ce = -np.log(np.clip(p_true, 1e-7, 1)) * keep * ((1 - p_true) ** 2 if kind == "focal" else 1)
    counted = probabilities * keep[..., None]
    overlap, total = (counted * one_hot).sum(axis=(1, 2)), (counted + one_hot).sum(axis=(1, 2))
    dice = 1 - ((2 * overlap + 1) / (total + 1)).mean(-1)
    jaccard = 1 - ((overlap + 1) / (total - overlap + 1)).mean(-1)
    per_image = {"ce": 0, "focal": 0, "dice": dice, "ce_dice": dice, "jaccard": jaccard, "ce_jaccard": jaccard}[kind]
    if kind in ("ce", "focal", "ce_dice", "ce_jaccard"):
        per_image = per_image + ce.sum(axis=(1, 2)) / keep.sum(axis=(1, 2))
    np.testing.assert_allclose(got, np.mean(per_image), rtol=1e-5)


def write_coco(folder, portrait_stored_size: bool = True):
    """Five 64x64 photos and one portrait phone photo stored 80x60 with EXIF 6: a bright square
    (category "square", id 7, a polygon) and a bright disk ("circle", id 3, RLE) in each, a crowd
    region in the first; the portrait's JSON entry gives its stored size and stored coordinates."""
    import json as jsonlib

    from PIL import Image
    from pycocotools import mask as rle

    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for i in range(6):
        w, h = (80, 60) if i == 5 else (64, 64)
        pixels = rng.integers(0, 60, (h, w, 3)).astype("uint8")
        x0, y0 = int(rng.integers(2, 20)), int(rng.integers(2, 20))
        pixels[y0:y0 + 16, x0:x0 + 24] = 250
        yy, xx = np.mgrid[:h, :w]
        disk = (yy - 44) ** 2 + (xx - 48) ** 2 <= 8 ** 2
        pixels[disk] = 250
        exif = Image.Exif()
        if i == 5:
            exif[0x0112] = 6
        Image.fromarray(pixels).save(folder / "images" / f"{i}.png", exif=exif)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
        square = [x0, y0, x0 + 24, y0, x0 + 24, y0 + 16, x0, y0 + 16]
        annotations.append({"id": 3 * i + 1, "image_id": i + 1, "category_id": 7, "segmentation": [square],
                            "area": 384.0, "bbox": [x0, y0, 24, 16], "iscrowd": 0})
        encoded = rle.encode(np.asfortranarray(disk.astype("uint8")))
        encoded["counts"] = encoded["counts"].decode()
        annotations.append({"id": 3 * i + 2, "image_id": i + 1, "category_id": 3, "segmentation": encoded,
                            "area": float(disk.sum()), "bbox": [40, 36, 16, 16], "iscrowd": 0})
        if i == 0:
            annotations.append({"id": 99, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 16.0,
                                "segmentation": [[0, 60, 4, 60, 4, 64, 0, 64]], "bbox": [0, 60, 4, 4]})
    (folder / "instances.json").write_text(jsonlib.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 7, "name": "square"}, {"id": 3, "name": "circle"}]}))
    return folder / "instances.json"


def test_coco_polygons_and_rle_become_masks_over_the_upright_photo(tmp_path):
    """Each mask covers what its photo shows bright (the portrait's too, turned as the photo is);
    classes follow the category ids; a crowd is ignored."""
    from tlc.data.images import decode_many

    path = write_coco(tmp_path)
    dataset = loaded(spec_from_data({**SEG_SPEC, "train": {"data": {"type": "coco", "path": str(path),
                                                                    "validation_split": 0}}}, "coco"))
    assert dataset.class_names == ["background", "circle", "square"]
    for file, mask in zip(dataset.train.files, dataset.train.labels):
        bright = decode_many(np.array([file]), (64, 64), 3)[0].min(axis=-1) > 200
        labelled = (mask == 1) | (mask == 2)
        assert (bright == labelled).mean() > 0.97, file
        if file.endswith("/0.png"):
            assert (mask == 255).sum() >= 9 and set(np.unique(mask)) == {0, 1, 2, 255}


def test_a_coco_spec_that_check_accepts_trains(tmp_path):
    from tlc.train.loop import train

    path = write_coco(tmp_path)
    spec = {**SEG_SPEC, "name": "coco", "train": {"data": {"type": "coco", "path": path.name, "validation_split": 0.34},
                                                  "epochs": 1, "batch_size": 2}}
    (tmp_path / "coco.yaml").write_text(yaml.safe_dump(spec))
    assert run_cli("check", tmp_path / "coco.yaml").exit_code == 0
    result = train(tlc.load_spec(tmp_path / "coco.yaml"), tmp_path / "runs")
    assert result.metrics["classes"] == ["background", "circle", "square"] and 0 <= result.metrics["final"]["miou"] <= 1


def test_an_unreadable_coco_photo_costs_only_itself(tmp_path):
    """With `on_error: skip`, the photo is skipped and named, the others keep their masks."""
    path = write_coco(tmp_path)
    (tmp_path / "images" / "2.png").write_bytes(b"not a png")
    dataset = loaded(spec_from_data({**SEG_SPEC, "train": {"data": {
        "type": "coco", "path": str(path), "validation_split": 0, "on_error": "skip"}}}, "coco"))
    assert [f.split("/")[-1] for f in dataset.skipped] == ["2.png"] and len(dataset.train) == 5
    assert all({1, 2} <= set(np.unique(mask)) for mask in dataset.train.labels)


def test_coco_masks_are_kept_in_the_store_and_a_changed_json_is_drawn_again(tmp_path, monkeypatch):
    """The second load rasterizes nothing (the masks come from the store); editing the JSON (a new
    version, another key) draws them all again, with the edit."""
    import json as jsonlib
    import os

    from tlc.data import coco
    from tlc.data.store import keeping_in

    path = write_coco(tmp_path)
    spec = spec_from_data({**SEG_SPEC, "train": {"data": {"type": "coco", "path": str(path), "validation_split": 0}}},
                          "coco")
    drawn = []
    rasterized = coco._rasterized
    monkeypatch.setattr(coco, "_rasterized", lambda *a: (drawn.append(a[1]["id"]), rasterized(*a))[1])
    plain = loaded(spec).train
    with keeping_in(tmp_path / "store"):
        first = loaded(spec).train
        assert len(drawn) == 12
        again = loaded(spec).train
    assert len(drawn) == 12  # all six read from the store
    np.testing.assert_array_equal(first.labels, plain.labels)
    np.testing.assert_array_equal(again.labels, plain.labels)
    [kept] = (tmp_path / "store").glob("*.json")
    assert f"|from {path.resolve()}|" in jsonlib.loads(kept.read_text())["decode"]

    document = jsonlib.loads(path.read_text())
    document["annotations"] = [a for a in document["annotations"] if a["category_id"] != 7]  # no squares
    path.write_text(jsonlib.dumps(document))
    os.utime(path, ns=(10**18, 10**18))
    with keeping_in(tmp_path / "store"):
        edited = loaded(spec).train
    assert len(drawn) == 18 and len(list((tmp_path / "store").glob("*.json"))) == 2
    assert 2 in plain.labels and 2 not in edited.labels


@pytest.mark.parametrize("change, message", [
    ({"classes": ["background", "triangle"]}, "has no category 'triangle'; it has circle, square"),
    ({"missing": True}, "image 3.png (id 4) is neither beside the JSON nor in images/"),
    ({"twice": True}, "image 2.png is listed twice (ids 3 and 7)"),
])
def test_a_coco_file_that_does_not_fit_is_named(tmp_path, change, message):
    path = write_coco(tmp_path)
    if change.pop("missing", None):
        (tmp_path / "images" / "3.png").unlink()
    if change.pop("twice", None):
        document = json.loads(path.read_text())
        document["images"].append({**document["images"][2], "id": 7})
        path.write_text(json.dumps(document))
    head = {**SEG_SPEC["head"], "classes": 2} if "classes" in change else SEG_SPEC["head"]
    spec = spec_from_data({**SEG_SPEC, "head": head, "train": {"data": {"type": "coco", "path": str(path), **change}}},
                          "coco")
    with pytest.raises(tlc.SpecError, match=re.escape(message)):
        loaded(spec)


@pytest.mark.parametrize("damage, message", [
    ("missing", r"images/0003.png has no mask \(masks/0003.png\)"),
    ("extra", r"masks/9999.png is a mask of no image"),
    ("value", r"masks/0002.png: mask value 7 is neither a class \(0..2: 0, 1, 2\) nor ignored \(255\)"),
    ("rgb", r"masks/0001.png: a mask must be greyscale or palette indices; this one is RGB"),
    ("jpeg", r"masks/0002.jpg: mask value \d+ is neither a class \(0..2: 0, 1, 2\) nor ignored \(255\); JPEG "
             r"compression blurs a mask's edges into values of no class: save masks as PNG"),
])
def test_a_mask_that_does_not_fit_is_named(tmp_path, damage, message):
    from PIL import Image

    draw_masks(tmp_path, 4)
    masks = tmp_path / "masks"
    if damage == "missing":
        (masks / "0003.png").unlink()
    elif damage == "extra":
        Image.new("L", (64, 64)).save(masks / "9999.png")
    elif damage == "value":
        values = np.asarray(Image.open(masks / "0002.png")).copy()
        values[0, 0] = 7
        Image.fromarray(values, "L").save(masks / "0002.png")
    elif damage == "jpeg":
        Image.fromarray(np.asarray(Image.open(masks / "0002.png")), "L").save(masks / "0002.jpg", quality=90)
        (masks / "0002.png").unlink()
    else:
        Image.open(masks / "0001.png").convert("RGB").save(masks / "0001.png")
    with pytest.raises(tlc.SpecError, match=message):
        loaded(masks_spec(tmp_path))


@pytest.mark.parametrize("change, field, message", [
    ({"head": {"type": "dense", "pooling": "avg", "classes": 3}}, "task",
     "the dense head serves classification, multi_label, regression, not segmentation; use head: {type: unet, ...} "
     "(or fpn, linknet, pspnet, deeplab_v3_plus)"),
    ({"train": {"data": {"type": "masks", "path": "pets", "classes": ["background", "cat"]}}}, "train.data.classes",
     "names 2 classes; head.classes is 3"),
    ({"train": {"data": {"type": "masks", "path": "pets", "classes": ["background", "cat", "dog"],
                         "colors": {"background": [0, 0, 0], "bird": [1, 1, 1]}}}}, "train.data.colors.bird",
     "no class named 'bird'; the classes are background, cat, dog, ignore"),
    ({"head": {"type": "unet", "classes": 3, "output_activation": "sigmoid"}}, "head.output_activation",
     "sigmoid does not fit task segmentation"),
])
def test_check_refuses_what_segmentation_cannot_train_with(write, change, field, message):
    path = write(yaml.safe_dump({**SEG_SPEC, "train": {"data": {"type": "masks", "path": "pets"}}, **change}))
    result = run_cli("check", path)
    said = unboxed(result.output)
    assert result.exit_code == 2 and f"{field}: " in said and message in said, result.output


def test_a_decoder_head_without_task_means_segmentation(write):
    said = {**SEG_SPEC, "train": {"data": {"type": "masks", "path": "pets"}}}
    unsaid = {k: v for k, v in said.items() if k != "task"}
    spec = tlc.load_spec(write(yaml.safe_dump(unsaid), "unsaid.yaml"))
    assert spec.task.type == "segmentation"
    assert spec.model_dump(exclude={"name"}) == tlc.load_spec(write(yaml.safe_dump(said), "said.yaml")).model_dump(
        exclude={"name"})  # the same spec: it builds, trains and answers as one that says task: segmentation
    result = run_cli("check", write(yaml.safe_dump(unsaid), "unsaid.yaml"))
    assert result.exit_code == 0 and "output 64x64x3" in result.output, result.output


@pytest.mark.parametrize("augment, geometric", [
    ({"flip": "horizontal", "rotation": 0.1, "zoom": 0.2, "translation": 0.1}, True),
    ({"contrast": 0.5, "brightness": 0.3}, False),
])
def test_geometric_augmentation_moves_each_mask_with_its_image(augment, geometric):
    """Images whose colour is their mask (class c: channel c lit): after augmentation the mask
    still says what the image shows, with no value the mask did not have; photometric layers
    leave masks alone."""
    from tlc.data.augment import Augmenter
    from tlc.data.pipeline import Feed
    from tlc.data.sources import Examples
    from tlc.spec.models import AugmentSpec

    rng = np.random.default_rng(0)
    masks = np.zeros((8, 48, 48), "uint8")
    for m in masks:
        y, x = rng.integers(4, 24, 2)
        m[y:y + 20, x:x + 16], m[:6, :] = 1, 2
    images = np.eye(3, dtype="float32")[masks]
    feed = Feed(Examples(masks, images=images), (48, 48, 3), augment=Augmenter(AugmentSpec(**augment), seed=1))
    ids = np.arange(8, dtype="int64")
    x, y = feed.loader(training=True)(np.int64(0), np.int64(0), ids)
    x, y = x.numpy(), y.numpy()
    assert y.dtype == np.uint8 and set(np.unique(y)) <= {0, 1, 2}
    if geometric:
        assert (y != masks).mean() > 0.02  # they moved
        assert (x.argmax(axis=-1) == y).mean() > 0.97  # together (bilinear images blur the edges only)
    else:
        np.testing.assert_array_equal(y, masks)
        assert not np.allclose(x, images)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    """A U-Net on generated masks (a circle and a square over noise; 160 images, and a broken one
    that `on_error: skip` leaves out), trained once (~10 s)."""
    import shutil

    from tlc.train.loop import train

    folder = tmp_path_factory.mktemp("seg")
    draw_masks(folder / "pets", 160)
    (folder / "pets" / "images" / "zz_broken.png").write_bytes(b"not a png")
    shutil.copy(folder / "pets" / "masks" / "0000.png", folder / "pets" / "masks" / "zz_broken.png")
    spec = {**SEG_SPEC, "name": "seg", "train": {
        "data": {"type": "masks", "path": "pets", "classes": ["background", "circle", "square"],
                 "validation_split": 0.2, "test_split": 0.15, "on_error": "skip"},
        "epochs": 8, "batch_size": 16, "optimizer": {"learning_rate": 0.003}}}
    (folder / "seg.yaml").write_text(yaml.safe_dump(spec))
    result = train(tlc.load_spec(folder / "seg.yaml"), folder / "runs")
    return folder, result.folder


def plain_keras_outputs(run, files) -> np.ndarray:
    code = ("import sys, json, numpy as np, keras; from PIL import Image\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "x = np.stack([np.asarray(Image.open(f).convert('RGB'), 'float32') / 255 for f in sys.argv[2:]])\n"
            "np.save(sys.stdout.buffer, np.asarray(m(x, training=False)))")
    done = subprocess.run([sys.executable, "-c", code, str(run / "model.keras"), *map(str, files)],
                          capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    import io

    return np.load(io.BytesIO(done.stdout))


@pytest.mark.slow
def test_a_unet_trains_and_evaluates_as_scikit_learns_jaccard(seg_run):
    from PIL import Image
    from sklearn.metrics import jaccard_score

    folder, run = seg_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"miou", "pixel_accuracy", "val_miou", "val_pixel_accuracy"} <= set(metrics["final"])
    assert [f.split("/")[-1] for f in metrics["skipped_files"]] == ["zz_broken.png"]
    result = run_cli("evaluate", run, "--json")  # (the source still lists the broken file)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    split = json.loads((run / "split.json").read_text())
    files = [f for f, _ in split["test_files"]]
    assert report["examples"] == len(files) == 24
    truth = np.stack([np.asarray(Image.open(folder / "pets" / "masks" / (f.split("/")[-1]))) for f in files])
    predicted = plain_keras_outputs(run, files).argmax(axis=-1)  # model.keras: per-pixel softmax, plain Keras
    counted = truth != 255
    expected = jaccard_score(truth[counted], predicted[counted], labels=[0, 1, 2], average=None)
    assert [c["iou"] for c in report["per_class"]] == pytest.approx(expected, abs=1e-6)
    assert report["miou"] == pytest.approx(expected.mean(), abs=1e-6)
    assert sum(c["pixels"] for c in report["per_class"]) == int(counted.sum())
    assert report["miou"] > 0.5, report["miou"]
    assert (run / "worst.png").stat().st_size > 10_000 and "worst.png" in report["figures"]


@pytest.mark.slow
def test_predict_writes_each_mask_at_the_photos_own_size(seg_run, tmp_path):
    from PIL import Image

    folder, run = seg_run
    photo = tmp_path / "wide.png"
    Image.open(folder / "pets" / "images" / "0001.png").resize((96, 64)).save(photo)
    result = run_cli("predict", run, photo, folder / "pets" / "images" / "0002.png", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    wide, square = json.loads(result.stdout)
    mask = Image.open(wide["mask"])
    assert mask.mode == "P" and mask.size == (96, 64) and set(np.unique(np.asarray(mask))) <= {0, 1, 2}
    assert Image.open(wide["overlay"]).size == (96, 64)
    assert abs(sum(c["fraction"] for c in square["classes"]) - 1) < 1e-6
    assert {c["class"] for c in square["classes"]} <= {"background", "circle", "square"}


@pytest.mark.slow
def test_a_unet_learns_from_a_teachers_masks(seg_run, tmp_path):
    """Distillation of masks: the teacher run's per-pixel probabilities (at its 64x64, resized to
    the student's 32x32) beside each mask; the student's loss is the temperature-scaled KL per
    pixel plus its cross-entropy, and its metrics read the masks."""
    import keras

    from tlc.task.segmentation import pixel_loss_class
    from tlc.train.loop import train

    folder, teacher = seg_run
    spec = {**SEG_SPEC, "name": "student", "input": {"shape": [32, 32, 3]},
            "head": {"type": "unet", "classes": 3, "decoder_filters": [16, 8]}, "train": {
                "data": {"type": "masks", "path": str(folder / "pets"), "classes": ["background", "circle", "square"],
                         "validation_split": 0.2, "test_split": 0.15},
                "distill": {"teacher": str(teacher), "alpha": 0.7, "temperature": 2.0},
                "augment": {"flip": "horizontal", "rotation": 0.1, "views": 2}, "epochs": 2, "batch_size": 16}}
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(spec))
    assert run_cli("check", tmp_path / "student.yaml").exit_code == 0
    result = train(tlc.load_spec(tmp_path / "student.yaml"), tmp_path / "runs")
    record = result.metrics["distill"]
    assert record["probabilities"] == "computed" and record["views"] == 2 and 0.3 < record["teacher_val_miou"] <= 1
    # each view's masks moved as the student's augmentation moves its photos, at the student's size
    [moved] = (result.folder / "cache").glob("*-teacher-masks.npy")
    moved, n = np.load(moved), result.metrics["examples"]["train"]
    from tlc.data.augment import Augmenter
    from tlc.data.pipeline import Feed
    from tlc.spec.models import AugmentSpec

    labels = loaded(tlc.load_spec(tmp_path / "student.yaml")).train.labels
    feed = Feed(tlc.data.Examples(labels, images=np.zeros((n, 32, 32, 3), "float32")), (32, 32, 3),
                augment=Augmenter(AugmentSpec(flip="horizontal", rotation=0.1, views=2), seed=0))
    view1 = np.concatenate([y.numpy() for _, y in feed.augmented_view(1, 16)])
    assert moved.shape == (2 * n, 32, 32) and np.array_equal(moved[n:], view1) and (moved[:n] != moved[n:]).any()
    assert 0 <= result.metrics["final"]["val_miou"] <= 1 and np.isfinite(result.metrics["final"]["loss"])
    # the loss: alpha * T^2 * KL + (1 - alpha) * CE; a teacher agreeing with the student leaves the CE
    rng = np.random.default_rng(1)
    student = keras.ops.softmax(rng.normal(size=(2, 8, 8, 3)).astype("float32")).numpy()
    masks = rng.integers(0, 3, (2, 8, 8)).astype("float32")
    loss = pixel_loss_class()("ce", 3, 255, False, temperature=2.0, alpha=0.7)
    plain = float(pixel_loss_class()("ce", 3, 255, False)(masks, student))
    same = float(loss(np.concatenate([masks[..., None], student], axis=-1), student))
    assert same == pytest.approx(0.3 * plain, rel=1e-4)
    other = float(loss(np.concatenate([masks[..., None], student[:, ::-1]], axis=-1), student))
    assert other > same
    keras.backend.clear_session()


def test_evaluate_data_takes_another_masks_folder(seg_run, tmp_path):
    folder, run = seg_run
    draw_masks(tmp_path / "more", 12, seed=9)
    report = json.loads(run_cli("evaluate", run, "--data", tmp_path / "more", "--json").stdout)
    assert report["examples"] == 12 and report["data"] == str(tmp_path / "more")



@pytest.mark.slow
def test_flip_tta_mirrors_the_mirror_images_masks_back(seg_run):
    from tlc.use.run import Run

    folder, run = seg_run
    predictor = Run(run).predictor
    from PIL import Image

    image = np.asarray(Image.open(folder / "pets" / "images" / "0003.png"), "float32")[None] / 255
    plain, mirrored = predictor(image), predictor(image[:, :, ::-1])
    np.testing.assert_allclose(predictor(image, "flip"), (plain + mirrored[:, :, ::-1]) / 2, atol=1e-5)


@pytest.mark.slow
def test_serve_sends_the_mask_and_the_page_draws_it(seg_run, tmp_path):
    import base64
    import io

    import httpx
    from PIL import Image

    from .helpers import serving
    from .test_page import BROWSER_ARGS, chromium_path

    folder, run = seg_run
    photo = tmp_path / "wide.png"
    Image.open(folder / "pets" / "images" / "0004.png").resize((96, 64)).save(photo)
    [cli] = json.loads(run_cli("predict", run, photo, "-o", tmp_path / "out", "--json").stdout)
    with serving(run) as (url, _, _):
        answer = httpx.post(f"{url}/predict", files={"file": (photo.name, photo.read_bytes())}).json()
        png = httpx.post(f"{url}/predict?format=png", files={"file": (photo.name, photo.read_bytes())})
        meta = httpx.get(f"{url}/metadata").json()
        [prediction] = answer["predictions"]
        served = Image.open(io.BytesIO(base64.b64decode(prediction["mask"])))
        assert served.mode == "P" and served.size == (96, 64) and png.headers["content-type"] == "image/png"
        np.testing.assert_array_equal(np.asarray(served), np.asarray(Image.open(cli["mask"])))
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png.content))), np.asarray(served))
        assert prediction["classes"] == cli["classes"] and len(meta["task"]["colors"]) == 3
        heat = httpx.post(f"{url}/explain?class=circle", files={"file": (photo.name, photo.read_bytes())})
        assert heat.status_code == 200 and heat.headers["x-tlc-class"] == "circle"

        from playwright.sync_api import expect, sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(f"{url}/")
            expect(page.locator("#classes-title")).to_have_text("Classes in the image")
            expect(page.locator("label[for=opacity]")).to_have_text("Mask opacity")
            page.set_input_files("#file", str(photo))
            expect(page.locator("#heat")).to_be_visible()
            assert page.eval_on_selector("#heat", "img => img.src.startsWith('data:image/png;base64,')")
            assert page.eval_on_selector("#heat", "img => img.naturalWidth") == 96
            expect(page.locator("#classes li")).to_have_count(len(cli["classes"]))
            page.screenshot(path=str(tmp_path / "mask.png"), full_page=True)
            browser.close()


@pytest.mark.slow
def test_explain_follows_a_classs_pixels_and_export_checks_miou(seg_run, tmp_path):
    folder, run = seg_run
    image = folder / "pets" / "images" / "0003.png"
    [record] = json.loads(run_cli("explain", run, image, "--class", "circle", "-o", tmp_path / "cam", "--json").stdout)
    [answer] = json.loads(run_cli("predict", run, image, "-o", tmp_path / "out", "--json").stdout)
    circle = next((c["fraction"] for c in answer["classes"] if c["class"] == "circle"), 0.0)
    assert record["class"] == "circle" and record["fraction"] == pytest.approx(circle, abs=1e-6)
    exported = run_cli("export", run, "--format", "tflite", "--quantize", "int8", "-o", tmp_path / "m.tflite", "--json")
    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.stdout)
    assert report["metric"] == "miou" and abs(report["value"] - report["keras_value"]) < 0.05
    assert json.loads((tmp_path / "m.tflite.json").read_text())["task"] == "segmentation"


@pytest.mark.slow
def test_a_frozen_encoders_taps_are_cached_with_each_views_masks_and_train_as_uncached(tmp_path):
    """A frozen encoder under a U-Net: its output and taps are computed once per augmented view,
    the view's moved masks kept beside them; training on them matches augmenting on the fly."""
    from tlc.train.loop import train

    from .helpers import rows_of

    draw_masks(tmp_path / "few", 24, (32, 32), seed=5)
    encoder = {"type": "conv_stack", "blocks": [{"filters": 8, "padding": "same"}, {"filters": 8, "padding": "same"},
                                                {"filters": 16, "padding": "same"}]}  # stride 8: two taps
    spec = {**SEG_SPEC, "name": "taps", "input": {"shape": [32, 32, 3]}, "backbone": encoder, "freeze": "all",
            "head": {"type": "unet", "classes": 3, "decoder_filters": [16, 8, 8]}, "train": {
        "data": {"type": "masks", "path": str(tmp_path / "few"), "classes": ["background", "circle", "square"]},
        "augment": {"flip": "horizontal", "rotation": 0.1, "views": 2}, "epochs": 3, "batch_size": 8,
        "recalibrate_bn": False}}
    (tmp_path / "taps.yaml").write_text(yaml.safe_dump(spec))
    cached = train(tlc.load_spec(tmp_path / "taps.yaml"), tmp_path / "c")
    note = cached.metrics["feature_cache"][0]
    upto = re.search(r"computed once \(up to ([^;]+);", note).group(1).split(", ")
    assert upto == ["block2_conv1", "block3_conv1"] and "2 augmented views of" in note, note  # (block3_pool: in the tail)
    [masks] = (cached.folder / "cache").glob("*-train-masks.npy")
    moved = np.load(masks)
    n = cached.metrics["examples"]["train"]
    assert moved.shape == (2 * n, 32, 32) and (moved[:n] != moved[n:]).any()  # each view's own masks
    plain = train(tlc.load_spec(tmp_path / "taps.yaml"), tmp_path / "p", use_cache=False)
    for a, b in zip(rows_of(cached.folder), rows_of(plain.folder)):
        for key in ("loss", "miou", "val_loss", "val_miou"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-3), key


def test_taps_that_would_not_fit_on_disk_are_not_cached_and_the_run_says_so(tmp_path, monkeypatch):
    from tlc.train import cache
    from tlc.train.loop import train

    monkeypatch.setattr(cache, "_free_bytes", lambda folder: 2**19)
    draw_masks(tmp_path / "few", 12, (32, 32), seed=6)
    spec = {**SEG_SPEC, "name": "full", "input": {"shape": [32, 32, 3]}, "freeze": "all", "train": {
        "data": {"type": "masks", "path": str(tmp_path / "few")}, "epochs": 1, "batch_size": 4}}
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(spec))
    note = train(tlc.load_spec(tmp_path / "full.yaml"), tmp_path / "runs").metrics["feature_cache"][0]
    assert re.fullmatch(r"feature cache: not used \(the frozen part's 2 outputs \(the decoder's taps\) would take "
                        r"[0-9.]+ MB; 0\.5 MB free in .*\)", note), note


@pytest.mark.slow
def test_an_interrupted_segmentation_resumes_exactly(tmp_path):
    """(with augmentation: image and mask draw the same transformation, again on resuming)"""
    from tlc.train.loop import train

    from .helpers import StopAfter, rows_of

    draw_masks(tmp_path / "few", 24, (32, 32), seed=3)
    spec = {**SEG_SPEC, "name": "again", "input": {"shape": [32, 32, 3]}, "train": {
        "data": {"type": "masks", "path": str(tmp_path / "few"), "classes": ["background", "circle", "square"]},
        "augment": {"flip": "horizontal", "rotation": 0.05}, "epochs": 3, "batch_size": 8}}
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(spec))
    straight = train(tlc.load_spec(tmp_path / "again.yaml"), tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(tlc.load_spec(tmp_path / "again.yaml"), tmp_path / "resumed", reporter=StopAfter(2))
    resumed = train(tlc.load_spec(tmp_path / "again.yaml"), tmp_path / "resumed", resume=True)
    assert resumed.metrics["resumed"] and rows_of(resumed.folder) == rows_of(straight.folder)


@pytest.mark.parametrize("task, data, message", [
    ("classification", {"type": "masks", "path": "pets"}, "train.data.type: the masks source gives masks: set task: segmentation"),
    ("segmentation", {"type": "directory", "path": "pets"}, "train.data.type: directory gives no masks"),
])
def test_masks_and_segmentation_go_together(write, task, data, message):
    head = SEG_SPEC["head"] if task == "segmentation" else {"type": "dense", "pooling": "avg", "classes": 3}
    path = write(yaml.safe_dump({**SEG_SPEC, "task": task, "head": head, "train": {"data": data}}))
    result = run_cli("check", path)
    assert result.exit_code == 2 and message in unboxed(result.output), result.output


def test_predicts_console_line_lists_the_classes_a_mask_shows_and_counts_stray_pixels():
    from tlc.cli import said

    answer = {"mask": "m.png", "classes": [{"class": "background", "fraction": 0.9989},
                                           {"class": "box", "fraction": 0.0007}, {"class": "disc", "fraction": 0.0004}]}
    assert said(answer) == "background 99.9%, box 0.1% (+1 under 0.1%); wrote m.png"
    assert said({"mask": "m.png", "classes": [{"class": "disc", "fraction": 0.0001}]}) == "disc 0.0%; wrote m.png"


def test_the_training_miou_counts_as_keras_meaniou_and_scikit_learn():
    """tlc's MeanIoU counts its confusion matrix with a bincount (2.7x faster than Keras's): the
    same matrix as Keras's MeanIoU, ignored pixels left out, over several batches, and the same
    mean as scikit-learn's Jaccard."""
    import keras
    from sklearn.metrics import jaccard_score

    from tlc.task.segmentation import pixel_mean_iou_class

    rng = np.random.default_rng(3)
    ours = pixel_mean_iou_class()(4, ignore_class=255, sparse_y_pred=False)
    theirs = keras.metrics.MeanIoU(4, ignore_class=255, sparse_y_pred=False)
    truths, picks = [], []
    for _ in range(3):
        truth = rng.integers(0, 4, (2, 8, 8)).astype("uint8")
        truth[rng.random(truth.shape) < 0.2] = 255
        scores = rng.random((2, 8, 8, 4)).astype("float32")
        ours.update_state(truth, scores)
        theirs.update_state(truth, scores)
        truths.append(truth.ravel())
        picks.append(scores.argmax(-1).ravel())
    np.testing.assert_array_equal(np.asarray(ours.total_cm), np.asarray(theirs.total_cm))
    truth, picked = np.concatenate(truths), np.concatenate(picks)
    kept = truth != 255
    assert float(ours.result()) == pytest.approx(jaccard_score(truth[kept], picked[kept], average="macro"), abs=1e-6)


@pytest.mark.slow
def test_tune_searches_a_decoder_on_val_miou_over_a_frozen_encoders_cached_taps(tmp_path):
    """`tlc tune` of a segmentation spec: trials are scored on val_miou, share the frozen
    encoder's taps (computed once, then reused, including by a trial with other decoder filters),
    and the best trial's run evaluates to the value it was chosen for."""
    draw_masks(tmp_path / "few", 32, (32, 32), seed=7)
    spec = {**SEG_SPEC, "name": "segtune", "input": {"shape": [32, 32, 3]}, "freeze": "all",
            "train": {"data": {"type": "masks", "path": str(tmp_path / "few"),
                               "classes": ["background", "circle", "square"]},
                      "epochs": 2, "batch_size": 8, "seed": 1, "recalibrate_bn": False},
            "tune": {"trials": 3, "sampler": "random", "pruner": "none", "seed": 2, "space": {
                "train.optimizer.learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-2},
                "head.decoder_filters": {"type": "choice", "values": [[32, 16], [16, 8]]}}}}
    (tmp_path / "segtune.yaml").write_text(yaml.safe_dump(spec))
    result = run_cli("tune", tmp_path / "segtune.yaml", "--runs", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    folder = tmp_path / "runs" / "segtune" / "tune"
    with open(folder / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["state"] for r in rows] == ["complete"] * 3 and [t["state"] for t in summary["trials"]] == ["complete"] * 3
    assert [r["features"] for r in rows] == ["computed", "reused", "reused"]
    assert {r["head.decoder_filters"] for r in rows} == {"[32, 16]", "[16, 8]"}  # (seed 2 draws both)
    best = summary["best"]
    assert best["value"] == max(t["value"] for t in summary["trials"])
    evaluated = json.loads(run_cli("evaluate", folder / "best", "--split", "val", "--json").stdout)
    assert evaluated["miou"] == pytest.approx(best["value"], abs=1e-5)  # chosen on val_miou


@pytest.mark.slow
def test_tune_searches_the_decoder_itself_on_one_computation_of_the_taps(tmp_path):
    """U-Net, Linknet and FPN read the same taps: a search over `head.type` computes them once."""
    draw_masks(tmp_path / "few", 24, (32, 32), seed=5)
    spec = {**SEG_SPEC, "name": "decoders", "input": {"shape": [32, 32, 3]}, "freeze": "all",
            "head": {"type": "unet", "classes": 3},
            "train": {"data": {"type": "masks", "path": str(tmp_path / "few")}, "epochs": 1, "batch_size": 8},
            "tune": {"trials": 3, "sampler": "grid", "space": {
                "head.type": {"type": "choice", "values": ["unet", "linknet", "fpn"]}}}}
    (tmp_path / "decoders.yaml").write_text(yaml.safe_dump(spec))
    result = run_cli("tune", tmp_path / "decoders.yaml", "--runs", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "runs" / "decoders" / "tune" / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["head.type"] for r in rows) == ["fpn", "linknet", "unet"]
    assert [r["state"] for r in rows] == ["complete"] * 3
    assert [r["features"] for r in rows] == ["computed", "reused", "reused"]


def test_the_worst_masks_legend_names_ignored_pixels_only_when_a_true_mask_has_them():
    from tlc.show.figures import mask_legend, paint

    colours = np.array([[0, 0, 0], [31, 119, 180], [255, 127, 14]], np.uint8)
    plain = np.zeros((4, 4), np.uint8)
    ringed = plain.copy()
    ringed[0, 0] = 255
    assert [label for label, _ in mask_legend([plain], ["bg", "cat", "dog"], colours)] == ["bg", "cat", "dog"]
    legend = dict(mask_legend([plain, ringed], ["bg", "cat", "dog"], colours))
    assert list(legend) == ["bg", "cat", "dog", "ignored (255)"]
    assert np.allclose(np.array(legend["ignored (255)"]) * 255, paint(ringed, colours)[0, 0])  # the grey drawn
    assert np.allclose(np.array(legend["cat"]) * 255, colours[1])
