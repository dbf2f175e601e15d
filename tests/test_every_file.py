"""Every file gets an answer (the contract's section 10): whatever Pillow raises becomes one named
refusal, never a half-decoded image; a header that claims more pixels than its bytes could hold
is refused before anything is allocated; library messages stay off the terminal; and predict,
extract, explain and serve answer every other file of a call."""
from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from tlc.data.images import ImageError, decode_bytes, decode_each, decode_file

from .conftest import tlc as run
from .helpers import files_of, serving

httpx = pytest.importorskip("httpx")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims width x height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + _chunk(b"IEND", b""))


def dds_of_format(dxgi: int) -> bytes:
    """A DDS file with a DX10 header naming DXGI format `dxgi` (93 is one Pillow does not implement)."""
    header = bytearray(124)
    struct.pack_into("<IIIIIII", header, 0, 124, 0x1007, 4, 4, 0, 0, 0)
    struct.pack_into("<II4s", header, 72, 32, 4, b"DX10")
    return b"DDS " + bytes(header) + struct.pack("<IIIII", dxgi, 3, 0, 1, 0) + b"\0" * 64


def png_with_damaged_data() -> bytes:
    """A PNG whose compressed pixels are damaged mid-stream: reading its EXIF makes Pillow decode
    it, which fails; a second `load()` then hands back the half it decoded."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    middle = len(data) // 2
    data[middle:middle + 50] = b"\xff" * 50
    return bytes(data)


def tiff_compressed_with(code: int) -> bytes:
    """A TIFF whose compression tag names `code` (50001: WebP, which this libtiff is built without)."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 259:
            struct.pack_into("<H", data, entry + 8, code)
    return bytes(data)


@pytest.fixture
def bad_files(tmp_path):
    """{name: path} of files nobody can open, one per way of failing."""
    contents = {"dxgi93.dds": dds_of_format(93), "damaged.png": png_with_damaged_data(),
                "claims80mp.png": png_claiming(10_000, 8_000), "webp_in.tif": tiff_compressed_with(50001),
                "truncated.png": png_with_damaged_data()[:300], "notes.jpg": b"not an image at all"}
    out = {}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
        out[name] = tmp_path / name
    return out


@pytest.mark.parametrize("name, reason", [
    ("dxgi93.dds", "Unimplemented DXGI format 93"),  # NotImplementedError
    ("damaged.png", "unrecognized data stream contents"),  # raised while EXIF was read: no longer hidden
    ("webp_in.tif", "WEBP compression support is not configured"),  # libtiff's own words, off the terminal
    ("truncated.png", "image file is truncated"),
    ("notes.jpg", "not an image format Pillow reads"),
])
def test_every_way_of_failing_is_one_named_refusal(bad_files, name, reason, capfd):
    with pytest.raises(ImageError) as refused:
        decode_file(str(bad_files[name]), (32, 32), 3)
    message = str(refused.value)
    assert message.startswith(f"{bad_files[name]}: not a readable image (") and reason in message, message
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # libtiff and Pillow said nothing on the terminal


@pytest.mark.parametrize("raised", [EOFError("no more data"), struct.error("unpack requires a buffer"),
                                    IndexError("list index out of range"), NotImplementedError(),
                                    ZeroDivisionError("division by zero"), TypeError("bad operand")])
def test_any_exception_a_decoder_raises_is_a_refusal(tmp_path, monkeypatch, raised):
    path = tmp_path / "fine.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)

    def load(self):
        raise raised

    monkeypatch.setattr(Image.Image, "load", load)
    with pytest.raises(ImageError, match=rf"fine\.png: not a readable image \(.+\)$"):
        decode_file(str(path), (8, 8), 3)


def test_a_header_claiming_far_more_pixels_than_its_bytes_is_refused_before_allocating(tmp_path):
    data = png_claiming(10_000, 8_000)  # 80 MP, under Pillow's limit, in 69 bytes
    tracemalloc.start()
    with pytest.raises(ImageError, match=r"bomb\.png: not a readable image \(its header claims 10000x8000 "
                                         r"\(80 megapixels\) in 69 bytes, more than a PNG of that size can hold"):
        decode_bytes(data, (32, 32), 3, "bomb.png")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5 * 2**20  # decoding it would have allocated 240 MB


def test_a_picture_that_compresses_well_is_not_mistaken_for_a_bomb(tmp_path):
    """A 2000x2000 white PNG is ~8 KB: 500 pixels a byte, far under what PNG can reach."""
    path = tmp_path / "white.png"
    Image.new("RGB", (2000, 2000), (255, 255, 255)).save(path, optimize=True)
    assert decode_file(str(path), (16, 16), 3).min() == 255


def test_decoding_each_file_answers_every_one_in_order(bad_files, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(good)
    paths = [good, bad_files["dxgi93.dds"], good, bad_files["claims80mp.png"]]
    results = decode_each([str(p) for p in paths], (8, 8), 3)
    assert [type(r).__name__ for r in results] == ["ndarray", "ImageError", "ndarray", "ImageError"]
    assert results[0].shape == (8, 8, 3) and int(results[2][0, 0, 0]) == 200


def test_the_pixels_decoded_at_once_are_bounded_across_threads():
    import threading
    import time

    from tlc.data.guard import PixelBudget

    budget, inside, most = PixelBudget(100), [0], [0]
    lock = threading.Lock()

    def decode(pixels):
        with budget.share(pixels):
            with lock:
                inside[0] += pixels
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= pixels

    threads = [threading.Thread(target=decode, args=(60,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 60  # never two 60-pixel decodes at once under a budget of 100


# --- a mixed call through the commands and the server -----------------------------------------------

@pytest.mark.slow
def test_predict_answers_every_good_file_and_names_each_bad_one(shapes_run, bad_files):
    folder, drawn = shapes_run
    good = files_of(drawn, 2)
    files = [good[0], bad_files["dxgi93.dds"], bad_files["damaged.png"], good[1], bad_files["claims80mp.png"]]
    done = run("predict", folder, *files, "--json")
    assert done.exit_code == 1
    answers = json.loads(done.stdout)
    assert [a["image"] for a in answers] == [str(f) for f in files]
    assert ["top" in a for a in answers] == [True, False, False, True, False]
    for answer in answers[1:3] + answers[4:]:
        assert answer["error"] == f"{answer['file']}: not a readable image (" + answer["error"].split(" (", 1)[1]
        assert f"{answer['error']}\n" in done.stderr  # named on stderr, one line each
    alone = json.loads(run("predict", folder, good[0], "--json").stdout)[0]  # the bad files cost it nothing
    assert [t["class"] for t in answers[0]["top"]] == [t["class"] for t in alone["top"]]
    assert [t["probability"] for t in answers[0]["top"]] == pytest.approx([t["probability"] for t in alone["top"]])


@pytest.mark.slow
def test_explain_and_extract_answer_every_good_file(shapes_run, bad_files, tmp_path):
    folder, drawn = shapes_run
    good = files_of(drawn, 2)
    done = run("explain", folder, good[0], bad_files["webp_in.tif"], good[1], "-o", tmp_path / "cams", "--json")
    assert done.exit_code == 1
    records = json.loads(done.stdout)
    assert [("png" in r, "error" in r) for r in records] == [(True, False), (False, True), (True, False)]
    assert "WEBP compression support is not configured" in records[1]["error"]
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == sorted(
        [f"{good[0].stem}.cam.png", f"{good[1].stem}.cam.png", "explain.png"])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in [*good, bad_files["damaged.png"], bad_files["truncated.png"]]:
        (mixed / path.name).write_bytes(path.read_bytes())
    done = run("extract", folder / "model.keras", mixed, "-o", tmp_path / "features.npy")
    assert done.exit_code == 1 and "damaged.png: not a readable image" in done.stderr
    assert np.load(tmp_path / "features.npy").shape[0] == 2
    assert (tmp_path / "features.sources.txt").read_text().split() == sorted(str(mixed / p.name) for p in good)


@pytest.mark.slow
def test_serve_answers_each_part_and_a_request_of_bad_parts_is_a_4xx(shapes_run, bad_files):
    folder, drawn = shapes_run
    good = files_of(drawn, 1)[0]
    with serving(folder) as (url, process, _):
        parts = [("file", (good.name, good.read_bytes(), "image/png"))] + [
            ("file", (name, bad_files[name].read_bytes(), "application/octet-stream"))
            for name in ("dxgi93.dds", "webp_in.tif", "claims80mp.png")]
        mixed = httpx.post(f"{url}/predict", files=parts, timeout=60)
        assert mixed.status_code == 200, mixed.text
        predictions = mixed.json()["predictions"]
        assert [p["file"] for p in predictions] == [good.name, "dxgi93.dds", "webp_in.tif", "claims80mp.png"]
        assert "top" in predictions[0] and all(p["error"].startswith(f"{p['file']}: not a readable image (")
                                               for p in predictions[1:])
        for name in ("dxgi93.dds", "damaged.png"):
            for route in ("predict", "explain"):
                refused = httpx.post(f"{url}/{route}", files=[("file", (name, bad_files[name].read_bytes()))],
                                     timeout=60)
                assert refused.status_code == 400 and refused.json()["error"].startswith(f"{name}: not a readable"), \
                    refused.text
        assert process.poll() is None and httpx.get(f"{url}/health").status_code == 200
