"""The decoded-image store: each file decoded once, shared by epochs, specs and evaluate; changed
files decoded again; safe with two writers, a kill mid-write and a full disk."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tlc.data import store as store_module
from tlc.data.images import decode_file
from tlc.data.store import STAMP, ImageStore

from .conftest import tlc


HWC = (16, 16, 3)
SPEC = """
name: {name}
input: {{shape: [16, 16, 3]}}
backbone: {{type: conv_stack, blocks: [{{filters: 4}}]}}
head: {{type: dense, classes: 2, units: {units}}}
train:
  data: {{type: directory, path: photos, validation_split: 0.25, test_split: 0.25{extra}}}
  epochs: 2
  batch_size: 8
"""



def photos(folder, per_class: int = 12, size=(40, 30)) -> list[str]:
    rng = np.random.default_rng(0)
    files = []
    for c, name in enumerate(("dark", "light")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, (*size, 3)) + 140 * c
            path = folder / name / f"{i}.jpg"
            Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
            files.append(str(path))
    return files


def spec(write, name="a", units="[]", extra=""):
    return write(SPEC.format(name=name, units=units, extra=extra), f"{name}.yaml")


def flat(output: str) -> str:
    """The CLI's output with rich's line wrapping undone."""
    return " ".join(output.split())


def metrics(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.slow
def test_images_are_decoded_once_and_shared_by_epochs_specs_and_evaluate(write, tmp_path, monkeypatch):
    photos(tmp_path / "photos")
    first = tlc("train", spec(write, "a"), "--runs", tmp_path / "runs")
    assert first.exit_code == 0, first.output
    assert "image store: 0 of 24 images already decoded" in flat(first.output)
    record = metrics(tmp_path / "runs" / "a")["image_store"]
    # 12 train + 6 val images per epoch, 2 epochs: each decoded once, then read back
    # (a batch of the next epoch may be read while the last of this one is being stored)
    assert 18 <= record["decoded"] <= 20 and record["decoded"] + record["read_from_store"] == 36
    assert record["bytes"] == 24 * (STAMP + 16 * 16 * 3)
    assert f"{record['decoded']} decoded, {record['read_from_store']} read from the store" in flat(first.output)

    second = tlc("train", spec(write, "b", units="[8]"), "--runs", tmp_path / "runs")  # another spec, same files
    assert second.exit_code == 0, second.output
    assert "image store: 18 of 24 images already decoded" in flat(second.output)
    assert metrics(tmp_path / "runs" / "b")["image_store"]["decoded"] == 0

    evaluated = tlc("evaluate", tmp_path / "runs" / "b", "--json")  # the 6 test images: decoded once, stored
    assert evaluated.exit_code == 0, evaluated.output
    accuracy = json.loads(evaluated.stdout)["accuracy"]

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(store_module, "decode_file", no_decoding)
    from tlc import Run

    assert Run(tmp_path / "runs" / "b").evaluate()["accuracy"] == accuracy  # all 24 from the store now


@pytest.mark.slow
def test_training_from_the_store_equals_decoding_every_epoch(write, tmp_path):
    photos(tmp_path / "photos")
    on = tlc("train", spec(write, "stored"), "--runs", tmp_path / "runs")
    off = tlc("train", spec(write, "decoded", extra=", decode_cache: false"), "--runs", tmp_path / "runs")
    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    assert "image store: off (train.data.decode_cache: false)" in flat(off.output)
    assert "image_store" not in metrics(tmp_path / "runs" / "decoded")
    history = [(tmp_path / "runs" / n / "history.csv").read_text() for n in ("stored", "decoded")]
    rows = [np.loadtxt(h.splitlines()[1:], delimiter=",") for h in history]
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-5)


def test_a_changed_file_is_decoded_again_and_a_row_without_its_stamp_does_not_count(tmp_path):
    files = np.array(photos(tmp_path / "photos", per_class=3))
    store, why = ImageStore.open(tmp_path / "store", files, HWC)
    assert store is not None and why == ""
    first = store.read(np.arange(6))
    assert store.decoded == 6 and store.stored() == 6
    np.testing.assert_array_equal(first[2], decode_file(files[2], (16, 16), 3))
    assert (store.read(np.arange(6)) == first).all() and store.decoded == 6 and store.from_store == 6

    Image.new("RGB", (40, 30), (255, 0, 255)).save(files[2], quality=95)  # replaced during the run
    os.utime(files[2], ns=(1, 1))
    again = store.read(np.arange(6))
    assert store.decoded == 7
    assert np.abs(again[2].astype(int) - [255, 0, 255]).max() < 8
    assert (again[[0, 1, 3, 4, 5]] == first[[0, 1, 3, 4, 5]]).all()

    # a process killed after writing a row but before its stamp: the row is not trusted
    fresh, _ = ImageStore.open(tmp_path / "store2", files, HWC)
    os.pwrite(fresh._fd, np.full(16 * 16 * 3, 7, np.uint8).tobytes(), 6 * STAMP)
    assert fresh.stored() == 0
    np.testing.assert_array_equal(fresh.read([0])[0], first[0])


@pytest.mark.slow
def test_two_processes_filling_one_store_at_once_leave_it_complete_and_correct(tmp_path):
    files = photos(tmp_path / "photos", per_class=40)
    (tmp_path / "files.json").write_text(json.dumps(files))
    script = textwrap.dedent(f"""
        import json, numpy as np
        from pathlib import Path
        from tlc.data.store import ImageStore
        files = np.array(json.loads(Path({str(tmp_path / 'files.json')!r}).read_text()))
        store, _ = ImageStore.open(Path({str(tmp_path / 'store')!r}), files, {HWC})
        order = np.random.default_rng(int(__import__('sys').argv[1])).permutation(len(files))
        for start in range(0, len(files), 5):
            store.read(order[start:start + 5])
        print(store.decoded)
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(seed)], stdout=subprocess.PIPE, text=True)
               for seed in (1, 2)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    assert sum(int(o) for o in outputs) >= 80  # both decoded (their orders differ), neither failed
    store, _ = ImageStore.open(tmp_path / "store", np.array(files), HWC)
    assert store.stored() == 80
    assert len(list((tmp_path / "store").glob("*.u8"))) == 1 and not list((tmp_path / "store").glob(".*tmp"))
    for i in (0, 33, 79):
        np.testing.assert_array_equal(store.row(i), decode_file(files[i], (16, 16), 3))


@pytest.mark.slow
def test_a_full_disk_trains_on_without_the_store_and_says_so(write, tmp_path, monkeypatch):
    photos(tmp_path / "photos")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    result = tlc("train", spec(write, "full"), "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "image store: off (cannot keep 0 MB in" in flat(result.output)
    assert "No space left on device); every epoch decodes the images" in flat(result.output)
    assert not list((tmp_path / "runs" / ".cache" / "images").glob("*.u8"))
    assert not list((tmp_path / "runs" / ".cache" / "images").glob(".*"))  # nothing half-written


def test_a_write_failing_later_stops_the_store_and_reads_stay_right(tmp_path, monkeypatch):
    files = np.array(photos(tmp_path / "photos", per_class=2))
    store, _ = ImageStore.open(tmp_path / "store", files, HWC)

    def failing(fd, data, offset):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "pwrite", failing)
    images = store.read(np.arange(4))
    assert store.failure.startswith("image store: stopped writing (Input/output error)")
    np.testing.assert_array_equal(images[3], decode_file(files[3], (16, 16), 3))
    assert store.record()["stopped"] == store.failure


def test_a_reader_over_files_the_store_does_not_list_decodes_those_and_reads_the_rest(tmp_path):
    files = np.array(photos(tmp_path / "photos", per_class=2))
    store, _ = ImageStore.open(tmp_path / "store", files[:3], HWC)  # the fourth file came later
    read = store.reader(files[::-1])
    images = read(np.arange(4))
    assert store.decoded == 3  # the three listed ones, now stored; the fourth is decoded, not kept
    for image, path in zip(images, files[::-1]):
        np.testing.assert_array_equal(image, decode_file(path, (16, 16), 3))
    read(np.arange(4))
    assert store.decoded == 3 and store.from_store == 3 and store.stored() == 3
