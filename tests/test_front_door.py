"""What a new user meets first: the Python API, a self-contained model.keras, spec.lock.yaml with
the command line's overrides, evaluate naming its mistakes, words for empty splits and skipped
files, `train.data.fit`, "did you mean", check's warnings, tune's warning, and a quiet `make demo`."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import tlc

from .conftest import EXAMPLES, REPO
from .conftest import tlc as run
from .helpers import draw_shapes, rows_of

PHOTOS_SPEC = """
name: {name}
input: {{shape: [32, 32, 3]}}
backbone: {{type: mobilenet_v2, alpha: 0.35, weights: null}}
freeze: {{up_to: block_2_add}}
head: {{type: dense, pooling: avg, classes: 3, output_activation: linear}}
train:
  data: {{type: directory, path: photos, validation_split: 0.2, test_split: 0.2, fit: pad}}
  epochs: 3
  batch_size: 16
  seed: 0
"""


# --- the fast tier: no TensorFlow -----------------------------------------------------------------

def test_an_unknown_key_says_what_was_meant_at_every_depth(write):
    path = write("""
        input: {shape: [32, 32, 3]}
        backbone: {type: conv_stack, blocks: [{filters: 8, filtres: 3}]}
        head: {type: dense, clases: 3}
        train: {data: {type: digits, validaton_split: 0.2}}
        trian: {}
        """)
    done = run("check", path)
    said = [line.split("/")[-1] for line in done.output.splitlines()]
    assert done.exit_code == 2
    assert "spec.yaml:2:52: backbone.blocks[0].filtres: unknown key 'filtres' (did you mean 'filters'?)" in said
    assert "spec.yaml:3:21: head.clases: unknown key 'clases' (did you mean 'classes'?)" in said
    assert "spec.yaml:4:30: train.data.validaton_split: unknown key 'validaton_split' " \
           "(did you mean 'validation_split'?)" in said, said
    assert "spec.yaml:5:1: trian: unknown key 'trian' (did you mean 'train'?)" in said
    nothing_close = run("check", write("input: {shape: [8, 8, 1]}\nbackbone: {type: conv_stack, blocks: []}\n"
                                       "head: {type: dense, classes: 2}\nzzz: 1\n", "far.yaml"))
    assert "far.yaml:4:1: zzz: unknown key 'zzz'" in nothing_close.output and "did you mean" not in nothing_close.output


def test_check_warns_about_a_data_path_that_is_not_there(write):
    path = write("""
        input: {shape: [32, 32, 3]}
        backbone: {type: conv_stack, blocks: [{filters: 8}]}
        head: {type: dense, classes: 3}
        train: {data: {type: directory, path: photos}}
        """)
    done = run("check", path, "--json")
    report = json.loads(done.stdout)
    assert done.exit_code == 0 and report["ok"]
    assert len(report["warnings"]) == 1
    assert re.fullmatch(r".*spec\.yaml:4:\d+: train\.data\.path: not found: .*photos \(train needs it\)",
                        report["warnings"][0]), report["warnings"]
    assert run("train", path).exit_code == 2  # what check warns about, train refuses


def test_a_tune_path_that_changes_nothing_is_named_with_the_value_that_makes_it_so(write):
    path = write("""
        input: {shape: [16, 16, 1]}
        backbone: {type: conv_stack, blocks: [{filters: 4}]}
        head: {type: dense, classes: 3}
        train: {data: {type: digits}}
        tune:
          space:
            head.units: {type: choice, values: [[], [8]]}
            head.dropout: {type: uniform, low: 0.0, high: 0.5}
            train.optimizer.learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
        """)
    warnings = json.loads(run("check", path, "--json").stdout)["warnings"]
    assert [w.split("/")[-1] for w in warnings] == ["spec.yaml:8:19: tune.space.head.dropout: changes nothing when head.units is []: "
                        "those trials differ in it for nothing"]
    fixed = path.read_text().replace("values: [[], [8]]", "values: [[16], [8]]")
    assert json.loads(run("check", write(fixed, "fixed.yaml"), "--json").stdout)["warnings"] == []


def test_a_requested_split_that_comes_out_empty_is_a_located_warning(write, tmp_path):
    from tlc import data

    draw_shapes(tmp_path / "photos", 3, (16, 16))
    spec = tlc.load_spec(write("""
        input: {shape: [16, 16, 3]}
        backbone: {type: conv_stack, blocks: [{filters: 4}]}
        head: {type: dense, classes: 3}
        train: {data: {type: directory, path: photos, validation_split: 0.15, test_split: 0.5}}
        """))
    dataset = data.load(spec)
    assert len(dataset.val) == 0 and len(dataset.test) == 6
    assert [w.split("/")[-1] for w in dataset.warnings] == ["spec.yaml:4:65: train.data.validation_split: 0.15 gives no validation examples: "
                                "the largest class has 3 (round(3 x 0.15) = 0); add examples or raise "
                                "validation_split"]


def test_skipped_files_are_named_with_why(write, tmp_path):
    from tlc import data

    draw_shapes(tmp_path / "photos", 4, (16, 16))
    broken = tmp_path / "photos" / "circle" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    spec = tlc.load_spec(write("""
        input: {shape: [16, 16, 3]}
        backbone: {type: conv_stack, blocks: [{filters: 4}]}
        head: {type: dense, classes: 3}
        train: {data: {type: directory, path: photos, on_error: skip}}
        """))
    dataset = data.load(spec)
    assert dataset.skipped == [str(broken)]
    assert len(dataset.skipped_why) == 1 and dataset.skipped_why[0].startswith(f"{broken}: not a readable image (")


def _black_left_sixth(path, size=(60, 30)) -> None:
    """A wide image (2:1), white but for its left sixth, which is black."""
    pixels = np.full((size[1], size[0], 3), 255, np.uint8)
    pixels[:, : size[0] // 6] = 0
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("fit", ["stretch", "crop", "pad"])
def test_fit_stretches_crops_or_pads_in_the_one_decoder(tmp_path, fit):
    from PIL import ImageOps

    from tlc.data.images import decode_file

    path = tmp_path / "wide.png"
    _black_left_sixth(path)
    got = decode_file(str(path), (8, 8), 3, fit)
    assert got.shape == (8, 8, 3)
    with Image.open(path) as image:  # Pillow's own fitting is the reference
        reference = {"stretch": lambda: image.resize((8, 8), Image.Resampling.BILINEAR),
                     "crop": lambda: ImageOps.fit(image, (8, 8), Image.Resampling.BILINEAR),
                     "pad": lambda: ImageOps.pad(image, (8, 8), Image.Resampling.BILINEAR, color=0)}[fit]()
        np.testing.assert_array_equal(got, np.asarray(reference.convert("RGB")))
    row = got[4, :, 0]
    if fit == "crop":  # the centre square leaves the black sixth out
        assert row.min() == 255
    else:  # squeezed in whole, or letterboxed with black bands above and below
        assert row[0] < 64 and row[-1] == 255
        assert (got[:2].max(), got[-2:].max()) == ((0, 0) if fit == "pad" else (255, 255))


def test_a_heat_map_peak_maps_back_through_the_fit():
    from tlc.data.images import placement

    assert placement(400, 200, (10, 10), "stretch") == (0.0, 0.0, 200.0, 400.0)
    assert placement(400, 200, (10, 10), "crop") == (0.0, 100.0, 200.0, 300.0)  # the centre square
    assert placement(400, 200, (10, 10), "pad") == (-100.0, 0.0, 300.0, 400.0)  # bands above and below


def test_the_page_is_told_where_a_heat_map_lies_over_the_upright_photo():
    """/explain's X-TLC-Placement: fractions of the photo as shown, its EXIF orientation applied."""
    import io

    from tlc.data.images import placement_fractions

    def encoded(orientation: int | None) -> bytes:
        buffer, exif = io.BytesIO(), Image.Exif()
        if orientation:
            exif[0x0112] = orientation
        Image.new("RGB", (400, 200)).save(buffer, "JPEG", exif=exif)
        return buffer.getvalue()

    assert placement_fractions(encoded(None), (10, 10), "stretch") == (0, 0, 1, 1)
    assert placement_fractions(encoded(None), (10, 10), "pad") == (-0.5, 0, 1.5, 1)  # bands above and below
    assert placement_fractions(encoded(None), (10, 10), "crop") == (0, 0.25, 1, 0.75)  # the centre square
    assert placement_fractions(encoded(6), (10, 10), "pad") == (0, -0.5, 1, 1.5)  # shown portrait: bands at the sides


def test_the_decoded_image_store_keeps_each_fit_apart(tmp_path):
    from tlc.data.store import store_key

    files = np.array([str(tmp_path / "a.jpg")])
    keys = {fit: store_key(files, (8, 8, 3), fit) for fit in ("stretch", "crop", "pad")}
    assert len(set(keys.values())) == 3
    assert keys["stretch"] == store_key(files, (8, 8, 3))  # stores made before `fit` stay valid


def test_make_demo_checks_only_what_it_trains_and_says_ok(monkeypatch):
    """The demo's `tlc check` lines, as the Makefile runs them (from the repository's root, the
    transfer spec after its source has been trained): nothing infeasible, nothing to warn about."""
    recipe = REPO.joinpath("Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    checks = [line.split("tlc check", 1)[1].split() for line in recipe.splitlines() if "tlc check" in line]
    assert checks and not any(line.lstrip().startswith("-") for line in recipe.splitlines() if "tlc" in line)
    monkeypatch.chdir(REPO)
    for specs in checks[:1]:  # those before anything is trained
        done = run("check", *specs, "--json")
        reports = json.loads(done.stdout)
        reports = reports if isinstance(reports, list) else [reports]
        assert done.exit_code == 0 and all(r["ok"] and not r["warnings"] for r in reports), done.stdout
    assert all(str(EXAMPLES.relative_to(REPO)) in spec for specs in checks for spec in specs)


# --- trained runs ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos_run(tmp_path_factory):
    """A MobileNetV2 (alpha 0.35, weights null, its [-1, 1] preprocessing) on 60 generated photos,
    trained through the Python API with `--epochs 2` over the spec's 3."""
    folder = tmp_path_factory.mktemp("front")
    draw_shapes(folder / "photos", 20, (40, 56))  # not square: `fit` decides
    (folder / "pets.yaml").write_text(PHOTOS_SPEC.format(name="pets").lstrip())
    return tlc.train(folder / "pets.yaml", folder / "runs", epochs=2), folder


@pytest.mark.slow
def test_model_keras_alone_answers_as_tlc_predict(photos_run, tmp_path):
    """`keras.models.load_model` in a process that never imports tlc, fed [0, 1] images, gives the
    probabilities `tlc predict --json` gives (the preprocessing and the softmax are inside)."""
    result, folder = photos_run
    files = sorted((folder / "photos").rglob("*.png"))[:6]
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
                       for f in files]).astype("float32") / 255
    np.save(tmp_path / "x.npy", images)
    code = textwrap.dedent(f"""
        import sys, numpy as np, keras
        out = keras.models.load_model({str(result.model_path)!r}).predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)
        np.save({str(tmp_path / 'out.npy')!r}, out)
        assert not any(m == "tlc" or m.startswith("tlc.") for m in sys.modules)
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    alone = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(alone.sum(axis=1), 1, atol=1e-5)  # a linear head, finished by a softmax
    answers = result.predict(images, top=3)
    by_tlc = np.array([[next(t["probability"] for t in a["top"] if t["index"] == c) for c in range(3)]
                       for a in answers])
    np.testing.assert_allclose(alone, by_tlc, atol=1e-5)
    assert result.model.count_params() == tlc.compile(result.spec).count_params()


@pytest.mark.slow
def test_the_python_api_trains_predicts_and_evaluates(photos_run):
    result, folder = photos_run
    assert isinstance(result, tlc.Run) and tlc.Run(result.folder).classes == ["circle", "square", "triangle"]
    files = sorted((folder / "photos" / "square").glob("*.png"))[:2]
    answers = result.predict(files)
    assert [a["image"] for a in answers] == [str(f) for f in files]
    assert all(len(a["top"]) == 3 and abs(sum(t["probability"] for t in a["top"]) - 1) < 1e-5 for a in answers)
    from tlc.data.images import decode_file

    padded = np.stack([decode_file(str(f), (32, 32), 3, "pad") for f in files]).astype("float32") / 255
    by_array = result.predict(padded)  # the run's `fit: pad` is how predict decodes its files
    np.testing.assert_allclose([[t["probability"] for t in a["top"]] for a in by_array],
                               [[t["probability"] for t in a["top"]] for a in answers], atol=1e-6)
    one = result.predict(str(files[0]))[0]
    assert one["image"] == str(files[0]) and [t["class"] for t in one["top"]] == [t["class"] for t in answers[0]["top"]]
    assert [t["probability"] for t in one["top"]] == pytest.approx([t["probability"] for t in answers[0]["top"]], abs=1e-6)
    with pytest.raises(tlc.SpecError, match=r"images of shape \(8, 8, 3\); the model takes \(32, 32, 3\)"):
        result.predict(np.zeros((1, 8, 8, 3), "float32"))
    report = result.evaluate()
    assert report["examples"] == 12 and sum(map(sum, report["confusion"])) == 12


@pytest.mark.slow
def test_spec_lock_records_the_command_lines_epochs_and_retrains_the_same(photos_run, tmp_path):
    result, folder = photos_run
    lock = (result.folder / "spec.lock.yaml").read_text()
    assert "epochs: 2" in lock and "epochs: 3" not in lock
    assert result.metrics["epochs"] == 2 and len(rows_of(result.folder)) == 2
    again = run("train", result.folder / "spec.lock.yaml", "--runs", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert rows_of(tmp_path / "again" / "pets") == rows_of(result.folder)


@pytest.mark.slow
def test_evaluate_names_its_mistakes_worst_first(photos_run):
    result, _ = photos_run
    done = run("evaluate", result.folder, "--json")
    report = json.loads(done.stdout)
    wrong = report["mistakes"]
    predicted = np.array(report["confusion"])
    assert len(wrong) == predicted.sum() - np.trace(predicted)
    assert all(m["true"] != m["predicted"] and m["file"].endswith(".png") for m in wrong)
    assert [m["probability"] for m in wrong] == sorted((m["probability"] for m in wrong), reverse=True)
    text = run("evaluate", result.folder).output
    for mistake in wrong[:5]:  # named as typed: below the working folder, relative to it
        shown = os.path.relpath(mistake["file"]) if not os.path.relpath(mistake["file"]).startswith("..") \
            else mistake["file"]
        assert f"mistake: {shown}: {mistake['true']}, predicted {mistake['predicted']}" in text
    assert (result.folder / "misclassified.png").is_file() == bool(wrong)


@pytest.mark.slow
def test_evaluate_data_takes_every_example_of_a_new_labelled_folder(photos_run, tmp_path, monkeypatch):
    result, _ = photos_run
    draw_shapes(tmp_path / "new", 5, (40, 56), seed=7)
    done = run("evaluate", result.folder, "--data", tmp_path / "new", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["split"] == "data" and report["data"] == str(tmp_path / "new") and report["examples"] == 15
    assert sum(map(sum, report["confusion"])) == 15 and report["classes"] == ["circle", "square", "triangle"]
    assert all(m["file"].startswith(str(tmp_path / "new")) for m in report["mistakes"])
    draw_shapes(tmp_path / "other", 2, (40, 56))
    (tmp_path / "other" / "triangle").rename(tmp_path / "other" / "hexagon")
    refused = run("evaluate", result.folder, "--data", tmp_path / "other")
    assert refused.exit_code == 2 and "has the classes circle, hexagon, square" in refused.output
    both = run("evaluate", result.folder, "--data", tmp_path / "new", "--split", "val")
    assert both.exit_code == 2 and "--split and --data: choose one" in both.output
    (tmp_path / "flat").mkdir()  # images without class folders: the message is about --data, not the lock file
    shutil.copy(next((tmp_path / "new" / "circle").iterdir()), tmp_path / "flat")
    flat = run("evaluate", result.folder, "--data", tmp_path / "flat")
    assert flat.exit_code == 2 and "spec.lock.yaml" not in flat.output, flat.output
    assert f"--data: {tmp_path / 'flat'} needs one sub-folder per class, at least 2 (found 0)" in flat.output
    monkeypatch.chdir(tmp_path)  # named as typed
    typed = run("evaluate", result.folder, "--data", "flat")
    assert "--data: flat needs one sub-folder per class" in typed.output, typed.output
