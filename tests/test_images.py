"""The one decoder (`tlc.data.images`): EXIF orientation against Pillow's reference, DCT-scaled
JPEGs against a full decode, channel and bit-depth rules, and the files it must refuse."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from tlc.data.images import MAX_PIXELS, ImageError, decode_bytes, decode_file, oriented_size, unreadable

ORIENTATIONS = range(1, 9)


def scene(width: int = 90, height: int = 60, seed: int = 0) -> Image.Image:
    """An asymmetric picture (a gradient, a red block in one corner), so every flip and turn shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 255 / width, yy * 255 / height, np.full_like(xx, 80.0)], -1)
    pixels[: height // 3, : width // 4] = [255, 0, 0]
    pixels += rng.normal(0, 3, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def tagged(path, image: Image.Image, orientation: int, **save) -> str:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, **save)
    return str(path)


def reference(path, size, mode="RGB") -> np.ndarray:
    """Pillow's own answer: a full decode, `exif_transpose`, then an antialiased bilinear resize."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image).convert(mode)
        return np.asarray(upright.resize((size[1], size[0]), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_every_exif_orientation_equals_pillows_exif_transpose(tmp_path, orientation):
    path = tagged(tmp_path / f"o{orientation}.png", scene(), orientation)
    size = (40, 30) if orientation in (5, 6, 7, 8) else (30, 40)  # the upright image's aspect
    got = decode_file(path, size, 3)
    assert got.dtype == np.uint8 and got.shape == (*size, 3)
    np.testing.assert_array_equal(got, reference(path, size))
    shown = (60, 90) if orientation < 5 else (90, 60)
    assert oriented_size(path) == shown[::-1]


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_tagged_phone_jpeg_decoded_at_reduced_scale_is_upright_and_close_to_a_full_decode(tmp_path, orientation):
    # 1600x1200 into 96x128: the DCT decode at 1/8 (200x150) still covers the target
    path = tagged(tmp_path / "phone.jpg", scene(1600, 1200), orientation, quality=92)
    size = (128, 96) if orientation in (6, 8) else (96, 128)
    got = decode_file(path, size, 3).astype(float)
    full = reference(path, size).astype(float)
    assert np.abs(got - full).mean() < 2.5, np.abs(got - full).mean()
    # upright: far closer to the transposed reference than to the picture as stored
    with Image.open(path) as image:
        stored = np.asarray(image.convert("RGB").resize((size[1], size[0])), float) if orientation == 3 else None
    if stored is not None:
        assert np.abs(got - stored).mean() > 10 * np.abs(got - full).mean()


def test_the_dct_scale_is_used_and_still_covers_the_target(tmp_path, monkeypatch):
    path = tagged(tmp_path / "big.jpg", scene(1600, 1200), 1, quality=90)
    seen = []
    original = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        seen.append(self.size)
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    decode_file(path, (96, 128), 3)
    assert seen == [(200, 150)]  # 1/8 of 1600x1200, not the full picture, and >= 128x96
    seen.clear()
    decode_file(path, (400, 500), 3)
    assert seen == [(800, 600)]  # 1/2: 1/4 (400x300) would not cover 500x400


def test_downscaling_is_antialiased_not_aliased(tmp_path):
    # one-pixel stripes: an antialiased downscale averages them to grey; nearest or plain
    # bilinear sampling keeps picking stripes
    stripes = np.zeros((400, 400, 3), np.uint8)
    stripes[:, ::2] = 255
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    got = decode_file(str(tmp_path / "stripes.png"), (32, 32), 3)
    assert abs(float(got.mean()) - 127.5) < 3 and got.std() < 3


def test_a_damaged_exif_block_decodes_as_untagged(tmp_path):
    path = tagged(tmp_path / "o6.jpg", scene(), 6, quality=95)
    raw = bytearray(open(path, "rb").read())
    start = raw.index(b"Exif\0\0")
    raw[start + 6:start + 30] = b"\xff" * 24  # garbage where the TIFF header and IFD were
    (tmp_path / "bad_exif.jpg").write_bytes(bytes(raw))
    got = decode_file(str(tmp_path / "bad_exif.jpg"), (60, 90), 3)
    with Image.open(tmp_path / "bad_exif.jpg") as image:
        untagged = np.asarray(image.convert("RGB"))
    assert np.abs(got.astype(int) - untagged).mean() < 1.5


def test_channels_follow_the_model(tmp_path):
    path = str(tmp_path / "c.png")
    scene().save(path)
    grey = decode_file(path, (30, 45), 1)
    assert grey.shape == (30, 45, 1)
    np.testing.assert_array_equal(grey[..., 0], reference(path, (30, 45), "L"))
    four = decode_file(path, (30, 45), 4)
    assert four.shape == (30, 45, 4) and (four == grey).all()
    rgba = scene().convert("RGBA")
    rgba.putalpha(0)
    rgba.save(tmp_path / "a.png")  # alpha dropped, colour kept
    np.testing.assert_array_equal(decode_file(str(tmp_path / "a.png"), (30, 45), 3), reference(path, (30, 45)))


def test_a_cmyk_jpeg_and_a_16_bit_png_decode(tmp_path):
    scene().convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = decode_file(str(tmp_path / "cmyk.jpg"), (60, 90), 3)
    assert np.abs(cmyk.astype(int) - np.asarray(scene())).mean() < 8
    ramp = (np.arange(256 * 4, dtype=np.uint32).reshape(4, 256) * 64).astype(np.uint16)  # 0..65472
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")  # really 16 bits on disk
    deep = decode_file(str(tmp_path / "deep.png"), (4, 256), 1)[..., 0].astype(int)
    expected = np.rint(ramp / 257.0)
    assert np.abs(deep - expected).max() <= 1 and deep.max() >= 250  # scaled to 8 bits, not clipped at 255


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header that claims width x height (the pixels would never be decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def test_a_decompression_bomb_is_refused_before_decoding_naming_the_file(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(30000, 30000))
    assert 30000 * 30000 > 2 * MAX_PIXELS
    with pytest.raises(ImageError, match=r"bomb\.png: more than twice Pillow's pixel limit, above the limit of "
                                         r"89 megapixels \(a decompression bomb\?\); not decoded"):
        decode_file(str(bomb), (32, 32), 3)
    (tmp_path / "large.png").write_bytes(_png_claiming(10000, 10000))  # between the limit and twice it
    with pytest.raises(ImageError, match=r"large\.png: 10000x10000 is 100 megapixels, above the limit of 89"):
        decode_file(str(tmp_path / "large.png"), (32, 32), 3)


def test_broken_files_are_named_with_the_reason(tmp_path):
    good = tmp_path / "good.jpg"
    scene(800, 600).save(good, quality=90)
    (tmp_path / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "bomb.png").write_bytes(_png_claiming(30000, 30000))
    files = np.array([str(good), str(tmp_path / "truncated.jpg"), str(tmp_path / "text.png"),
                      str(tmp_path / "missing.jpg"), str(tmp_path / "bomb.png")])
    bad = unreadable(files)
    assert sorted(bad) == [1, 2, 3, 4]
    assert "truncated.jpg: not a readable image (image file is truncated" in bad[1]
    assert "text.png: not a readable image (not an image format Pillow reads)" in bad[2]
    assert "missing.jpg: cannot read (No such file or directory)" in bad[3]
    assert "above the limit" in bad[4]


def test_an_upload_decodes_exactly_as_the_file(tmp_path):
    path = tagged(tmp_path / "up.jpg", scene(640, 480), 6, quality=90)
    np.testing.assert_array_equal(decode_bytes(open(path, "rb").read(), (64, 48), 3), decode_file(path, (64, 48), 3))
    with pytest.raises(ImageError, match="upload: not a readable image"):
        decode_bytes(b"GIF89a broken", (8, 8), 3, "upload")
