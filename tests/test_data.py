"""Data sources for `tlc train`: npz, directory, cifar10 (offline), class subsets, resize."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import tlc
from tlc.errors import RunError

from .conftest import tlc as run
from .helpers import photos
from tlc import data


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
    assert len(d.train) + len(d.val) == 24 and len(d.val) == 6
    assert set(np.concatenate([d.train.labels, d.val.labels])) == {0, 1, 2}
    assert d.train.images.dtype == np.float32 and d.train.images.max() <= 1.0 and d.train.images.shape[1:] == (6, 6, 1)
    # relabelling keeps images with their labels: class "4" (label 0) came from y == 4
    originals = {tuple(x[i].ravel()): y[i] for i in range(40)}
    for image, label in zip(d.train.images, d.train.labels):
        assert originals[tuple(np.round(image.ravel() * 255).astype("uint8"))] == [4, 0, 2][label]


@pytest.mark.slow
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
    assert len(d.train) == 9 and len(d.val) == 3 and d.train.streamed
    x, y = next(iter(data.feeds(spec, d)[0].in_order(32)))
    assert x.shape == (9, 10, 12, 3) and 0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 1


def test_directory_needs_class_folders(write, tmp_path):
    (tmp_path / "flat").mkdir()
    spec = tlc.load_spec(write("input: {shape: [8, 8, 1]}\n" + HEAD + "train: {data: {type: directory, path: flat}}\n"))
    with pytest.raises(tlc.SpecError, match=r"spec\.yaml:4:39: train\.data\.path: .*flat needs one sub-folder per class"):
        data.load(spec)


@pytest.mark.slow
def test_digits_resized_to_rgb(write):
    spec = tlc.load_spec(write("input: {shape: [16, 16, 3]}\n" + HEAD.replace("classes: 3", "classes: 10") +
                               "train: {data: {type: digits, resize: [16, 16]}}\n"))
    d = data.load(spec)
    assert d.train.images.shape[1:] == (16, 16, 3)
    np.testing.assert_array_equal(d.train.images[..., 0], d.train.images[..., 2])  # grey repeated


@pytest.mark.slow
def test_cifar10_offline_names_the_cache_file(write, monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    spec = tlc.load_spec(write("input: {shape: [32, 32, 3]}\n" + HEAD + "train: {data: {type: cifar10}}\n"))
    with pytest.raises(RunError, match=r"cifar10 could not be downloaded.*cifar-10-batches-py\.tar\.gz"):
        data.load(spec)


# --- data at scale: file lists, splits, bad files, csv, augmentation, sharding -----------------

PHOTO_SPEC = ("input: {{shape: [16, 16, 3]}}\nbackbone: {{type: conv_stack, blocks: [{{filters: 4}}]}}\n"
              "head: {{type: dense, classes: {k}}}\n"
              "train: {{data: {{type: {type}, path: {path}{extra}}}, epochs: 1, batch_size: 4}}\n")


def test_stratified_split_keeps_class_proportions_and_depends_only_on_seed():
    from tlc.task.splits import stratified

    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    train, val, test = stratified(labels, 0.2, 0.1, seed=3)
    assert [int((labels[val] == c).sum()) for c in range(3)] == [10, 6, 4]
    assert [int((labels[test] == c).sum()) for c in range(3)] == [5, 3, 2]
    assert len(set(train) | set(val) | set(test)) == 100 and len(train) + len(val) + len(test) == 100
    again = stratified(labels, 0.2, 0.1, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = stratified(labels, 0.2, 0.1, seed=4)
    assert not np.array_equal(val, other[1])


def test_directory_source_is_a_file_list_with_a_test_split(write, tmp_path):
    photos(tmp_path / "p", n=10)
    spec = tlc.load_spec(write(PHOTO_SPEC.format(k=2, type="directory", path="p",
                                                 extra=", validation_split: 0.2, test_split: 0.2")))
    d = data.load(spec)
    assert d.train.streamed and d.train.images is None  # nothing decoded up front
    assert (len(d.train), len(d.val), len(d.test)) == (12, 4, 4)
    assert sorted(np.bincount(d.test.labels)) == [2, 2]
    assert not set(d.test.files) & (set(d.train.files) | set(d.val.files))


def test_csv_source_with_names_or_integers(write, tmp_path):
    photos(tmp_path / "p", n=3)
    rows = [f"p/{name}/{i}.jpg,{name}" for name in ("cat", "dog") for i in range(3)]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    spec = tlc.load_spec(write(PHOTO_SPEC.format(k=2, type="csv", path="labels.csv", extra=", validation_split: 0")))
    d = data.load(spec)
    assert d.class_names == ["cat", "dog"] and len(d.train) == 6
    assert {(Path(f).parent.name, int(y)) for f, y in zip(d.train.files, d.train.labels)} == {("cat", 0), ("dog", 1)}
    (tmp_path / "ints.csv").write_text("label,path\n" + "\n".join(
        f"{2 if 'dog' in r else 0},{r.split(',')[0]}" for r in rows) + "\n")
    d = data.load(tlc.load_spec(write(PHOTO_SPEC.format(k=3, type="csv", path="ints.csv", extra=""), "i.yaml")))
    assert d.class_names == ["0", "1", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("content,message", [
    ("file,label\nx.jpg,a\n", r"labels\.csv needs the columns path,label; found file,label"),
    ("path,label\np/cat/0.jpg,a\nnope.jpg,b\n", r"labels\.csv:3: image not found: nope\.jpg"),
])
def test_csv_errors_are_located_spec_errors(write, tmp_path, content, message):
    photos(tmp_path / "p", n=1)
    (tmp_path / "labels.csv").write_text(content)
    path = write(PHOTO_SPEC.format(k=2, type="csv", path="labels.csv", extra=""))
    result = run("train", path)
    assert result.exit_code == 2
    assert re.search(r"spec\.yaml:4:33: train\.data\.path: .*" + message, result.stderr), result.stderr


@pytest.mark.slow
def test_directory_with_one_class_or_an_empty_class_is_a_located_error(write, tmp_path):
    photos(tmp_path / "one", classes=("cat",), n=2)
    result = run("train", write(PHOTO_SPEC.format(k=2, type="directory", path="one", extra="")))
    assert result.exit_code == 2 and "train.data.path: " in result.stderr
    assert "needs one sub-folder per class, at least 2 (found 1)" in result.stderr
    photos(tmp_path / "two", classes=("cat",), n=2)
    (tmp_path / "two" / "dog").mkdir()
    result = run("train", write(PHOTO_SPEC.format(k=2, type="directory", path="two", extra="")))
    assert result.exit_code == 2 and "class folder" in result.stderr and "dog has no images" in result.stderr


def _corrupt(root):
    good = (root / "cat" / "0.jpg").read_bytes()
    (root / "cat" / "broken.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (root / "dog" / "notes.png").write_bytes(b"not an image at all")


@pytest.mark.slow
def test_unreadable_files_stop_the_run_by_default_naming_the_file(write, tmp_path):
    _corrupt(photos(tmp_path / "p"))
    path = write(PHOTO_SPEC.format(k=2, type="directory", path="p", extra=""))
    result = run("train", path, "--runs", tmp_path / "runs")
    assert result.exit_code == 1
    assert "p/cat/broken.jpg: not a readable image (Truncated File Read) (and 1 more unreadable files); " \
           "remove it, or set train.data.on_error: skip" in result.stderr
    # no run folder is left; the decoded-image store keeps the images decoded so far (complete
    # rows only) for the next try
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [".cache"]


@pytest.mark.slow
def test_an_unreadable_held_out_image_is_named_by_evaluate(write, tmp_path):
    """Training never decodes the test split, so a bad file there surfaces in `tlc evaluate`,
    named like any other (files are scanned only when decoding fails)."""
    photos(tmp_path / "p", n=10)
    path = write(PHOTO_SPEC.format(k=2, type="directory", path="p", extra=", test_split: 0.2"))
    assert run("train", path, "--runs", tmp_path / "runs").exit_code == 0
    folder = tmp_path / "runs" / "spec"
    victim = json.loads((folder / "split.json").read_text())["test_files"][1][0]
    Path(victim).write_bytes(b"no longer an image")
    result = run("evaluate", folder)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (f"{victim}: not a readable image (not an image format Pillow reads); the run never read its "
            "held-out images") in result.stderr
    assert not (folder / "evaluation.json").exists()


@pytest.mark.slow
def test_on_error_skip_counts_and_lists_the_skipped_files(write, tmp_path):
    _corrupt(photos(tmp_path / "p"))
    path = write(PHOTO_SPEC.format(k=2, type="directory", path="p", extra=", on_error: skip"))
    result = run("train", path, "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "spec" / "metrics.json").read_text())
    assert sorted(Path(f).name for f in metrics["skipped_files"]) == ["broken.jpg", "notes.png"]
    assert sum(metrics["examples"].values()) == 12
    assert "skipped 2 unreadable file(s)" in result.stderr


@pytest.mark.slow
def test_decoded_batches_are_pillows_antialiased_resize_and_near_keras_reading_the_files(tmp_path):
    """The pipeline's images are Pillow's antialiased bilinear resize of the upright file, scaled
    to [0, 1]; Keras's own loader (bilinear without antialiasing) is close at this mild factor."""
    import keras
    from PIL import Image

    from tlc.data.pipeline import Feed
    from tlc.data.sources import Examples

    photos(tmp_path / "p", n=3, size=(30, 20))
    files = np.array(sorted(str(f) for f in (tmp_path / "p").rglob("*.jpg")))
    feed = Feed(Examples(np.zeros(len(files), "int64"), files=files), (16, 16, 3))
    batch = np.concatenate([x.numpy() for x, _ in feed.in_order(4)])
    pillow = np.stack([np.asarray(Image.open(f).convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
                       for f in files]) / 255.0
    np.testing.assert_allclose(batch, pillow, atol=1e-6)
    expected = keras.utils.image_dataset_from_directory(tmp_path / "p", image_size=(16, 16), shuffle=False,
                                                        batch_size=6, labels=None)
    assert np.abs(batch - next(iter(expected)).numpy() / 255.0).mean() < 0.06


@pytest.mark.slow
def test_augmentation_is_seeded_per_example_and_epoch():
    from tlc.data.augment import Augmenter
    from tlc.data.pipeline import Feed
    from tlc.spec.models import AugmentSpec

    x = np.random.default_rng(0).random((10, 16, 16, 3), dtype=np.float32)
    spec = AugmentSpec(flip="horizontal", rotation=0.1, zoom=0.1, translation=0.1, contrast=0.2, brightness=0.2)
    feed = Feed.of(x, np.arange(10))
    feed.augment = Augmenter(spec, seed=0)

    def epoch_images(epoch, batch_size):
        out = {}
        for images, labels in feed.epochs(0, range(epoch, epoch + 1), batch_size):
            out.update({int(i): image for i, image in zip(labels.numpy(), images.numpy())})
        return out

    first, again, other = epoch_images(0, 4), epoch_images(0, 10), epoch_images(1, 4)
    for i in range(10):
        np.testing.assert_allclose(first[i], again[i], atol=1e-6)  # batch composition does not matter
        assert first[i].min() >= 0 and first[i].max() <= 1
    assert sum(not np.allclose(first[i], x[i], atol=1e-3) for i in range(10)) >= 8  # augmented
    assert sum(not np.allclose(first[i], other[i], atol=1e-3) for i in range(10)) >= 8  # new per epoch
    feed.augment = Augmenter(spec.model_copy(update={"views": 2}), seed=0)
    for i in range(10):
        np.testing.assert_allclose(epoch_images(2, 4)[i], epoch_images(0, 4)[i], atol=1e-6)  # view 2 mod 2


@pytest.mark.slow
def test_multi_worker_slices_are_disjoint_and_cover_every_global_batch():
    from tlc.data.pipeline import Feed
    from tlc.train.distribute import worker_slices

    feed = Feed.of(np.zeros((23, 2, 2, 1), "float32"))
    shares = [list(worker_slices(feed, 0, range(2), 8, replicas=2, first=w, local=1)) for w in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 6  # 3 global batches per epoch (the last has 7 >= 2)
    for a, b in zip(*shares):
        assert int(a[0]) == int(b[0]) and int(a[1]) == int(b[1])  # same epoch, same batch
        ids_a, ids_b = set(a[2].numpy()), set(b[2].numpy())
        assert not ids_a & ids_b and abs(len(ids_a) - len(ids_b)) <= 1 and int(a[3]) == len(ids_a | ids_b)
    epoch0 = set().union(*(set(s[2].numpy()) for share in shares for s in share if int(s[0]) == 0))
    assert epoch0 == set(range(23))


MEMORY = """
import resource, sys
sys.argv = ['tlc', 'train', {spec!r}, '--runs', {runs!r}]
from tlc.cli import main
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_images(write, tmp_path):
    """Training on 4x the images (128x128 JPEGs, ~150 MB as float32 at the larger size) keeps the
    same peak memory: files are decoded batch by batch."""
    import subprocess
    import sys

    peaks = []
    for n in (100, 400):
        photos(tmp_path / f"p{n}", n=n, size=(128, 128))
        spec = write(PHOTO_SPEC.replace("[16, 16, 3]", "[128, 128, 3]").format(
            k=2, type="directory", path=f"p{n}", extra="").replace("batch_size: 4", "batch_size: 32"), f"m{n}.yaml")
        done = subprocess.run([sys.executable, "-c", MEMORY.format(spec=str(spec), runs=str(tmp_path / "runs"))],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        peaks.append(int(done.stdout.split()[-1]))
    assert peaks[1] < peaks[0] + 60, f"peak RSS {peaks[0]} MB with 200 images, {peaks[1]} MB with 800"


@pytest.mark.slow
def test_every_format_tensorflow_decodes_is_read_and_other_files_are_counted(write, tmp_path):
    """webp and gif at any channel count, upper-case suffixes, nested and symlinked folders;
    an iPhone's .heic and a stray .txt are not dropped silently but counted, per suffix."""
    from PIL import Image

    rng = np.random.default_rng(2)
    pixels = lambda: rng.integers(0, 255, (12, 14, 3)).astype("uint8")  # noqa: E731
    root = tmp_path / "photos"
    for name, files in {"cat": ["a.webp", "b.GIF", "deep/c.png", "d.JPG"], "dog": ["e.jpeg", "f.bmp", "g.webp"]}.items():
        for file in files:
            (root / name / file).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels()).save(root / name / file, format={"jpg": "JPEG"}.get(
                file.rsplit(".", 1)[1].lower(), file.rsplit(".", 1)[1].upper()).replace("JPG", "JPEG"))
    (root / "cat" / "h.heic").write_bytes(b"\0\0\0\x18ftypheic")
    (root / "cat" / "i.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"hidden")
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(pixels()).save(tmp_path / "elsewhere" / "j.png")
    (root / "dog" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "dog" / "loop").symlink_to(root / "dog", target_is_directory=True)  # visited once, not forever

    for channels in (1, 3):
        spec = write(f"input: {{shape: [8, 8, {channels}]}}\n" + HEAD.replace("classes: 3", "classes: 2") +
                     "train: {data: {type: directory, path: photos, validation_split: 0.0}, epochs: 1}\n",
                     f"photos{channels}.yaml")
        d = data.load(tlc.load_spec(spec))
        names = sorted(Path(f).name for f in d.train.files)
        assert names == ["a.webp", "b.GIF", "c.png", "d.JPG", "e.jpeg", "f.bmp", "g.webp", "j.png"]
        assert d.ignored == {".heic": 2, ".txt": 1}
        from tlc.data.pipeline import Feed

        batch = np.concatenate([x.numpy() for x, _ in Feed(d.train, (8, 8, channels)).in_order(8)])
        assert batch.shape == (8, 8, 8, channels) and 0 <= batch.min() and batch.max() <= 1
    result = run("train", spec, "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "3 other files not read (2 .heic, 1 .txt)" in result.output
    metrics = json.loads((tmp_path / "runs" / "photos3" / "metrics.json").read_text())
    assert metrics["ignored_files"] == {".heic": 2, ".txt": 1}


@pytest.mark.slow
def test_a_class_folder_of_unreadable_formats_says_what_it_holds(write, tmp_path):
    for name in ("a", "b"):
        (tmp_path / "p" / name).mkdir(parents=True)
        (tmp_path / "p" / name / "x.heic").write_bytes(b"heic")
    result = run("train", write("input: {shape: [8, 8, 3]}\n" + HEAD +
                                "train: {data: {type: directory, path: p}}\n"))
    assert result.exit_code == 2
    assert re.search(r"class folder .*p/a has no images \(\.png, .*\.webp\); it has 1 other file not read \(1 \.heic\)",
                     result.output), result.output
