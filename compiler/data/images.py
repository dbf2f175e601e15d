"""Decoding image files, in one place for train, predict, extract, evaluate, explain, export
calibration and serve, so every command sees the same pixels.

A photo comes out as every photo viewer shows it, at the model's input size, as uint8:
- **upright**: the EXIF orientation tag is applied (Pillow's `ImageOps.exif_transpose`, the
  reference); a damaged EXIF block counts as untagged;
- **cheaply**: a JPEG is decoded through the DCT at the smallest scale (1/2, 1/4, 1/8) that still
  covers the target (Pillow's `draft`: a 12-MP photo for a 128x128 input costs a fraction of a
  full decode);
- **without aliasing**: then resized with Pillow's antialiased bilinear filter (its support
  widens with the downscale factor);
- **to the input's aspect as asked** (`train.data.fit`): `stretch` (as Keras's
  `image_dataset_from_directory` does by default), `crop` (the centre at the input's aspect,
  Keras's `crop_to_aspect_ratio`) or `pad` (letterboxed with black, `pad_to_aspect_ratio`);
- **to the model's channels**: colour to one channel by luminance (ITU-R 601-2), one channel to
  several by repetition, alpha dropped; CMYK JPEGs and palette images converted, 16-bit images
  scaled to 8 bits (not clipped);
- **within a pixel limit**: a file whose header claims more than `MAX_PIXELS` pixels (Pillow's
  own decompression-bomb limit) is refused before any pixel is decoded.
"""
from __future__ import annotations

import contextlib
import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tlc.errors import and_more

from . import guard

#: Pillow's `Image.MAX_IMAGE_PIXELS` (~89.5 MP, "a decompression bomb" above it); a 12-MP phone
#: photo or a 61-MP camera raw export is far below.
MAX_PIXELS = 89_478_485
#: How an image reaches the input size; part of the decoded-image store's key.
RESIZE_RULE = "exif-upright, dct-draft, pillow-bilinear-antialias, uint8"
#: `train.data.fit`: how an image of another aspect ratio meets the input.
FITS = ("stretch", "crop", "pad")
ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
SCAN_THREADS = os.cpu_count() or 2
#: Pixels decoded at once over every thread (at full or DCT-scaled size): one image at the limit,
#: or many small ones side by side; memory stays flat however many large files a call holds.
_BUDGET = guard.PixelBudget(MAX_PIXELS)


class ImageError(ValueError):
    """A file that is not a decodable image, or is too large to decode; the message names it."""


class UnreadableMask(ImageError):
    """A mask file that does not decode at all (what `on_error: skip` leaves out, with its image),
    as against one that decodes to values that are wrong (always an error)."""


def decode_rule(fit: str = "stretch") -> str:
    """The decoder's settings as the image store keys them (a store made before `fit` existed
    stretched, and keeps its key)."""
    return RESIZE_RULE if fit == "stretch" else f"{RESIZE_RULE}, fit {fit}"


def decode_file(path: str, size: tuple[int, int], channels: int, fit: str = "stretch") -> np.ndarray:
    """One image file -> (h, w, channels) uint8, upright, at `size`, fitted as `fit` says."""
    try:
        with open(path, "rb") as handle:
            return _decode(handle, size, channels, path, fit, os.fstat(handle.fileno()).st_size)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def decode_bytes(contents: bytes, size: tuple[int, int], channels: int, name: str = "image",
                 fit: str = "stretch") -> np.ndarray:
    """An encoded image (an upload to `tlc serve`) -> (h, w, channels) uint8, exactly as a file."""
    return _decode(io.BytesIO(contents), size, channels, name, fit, len(contents))


def decode_many(paths, size: tuple[int, int], channels: int, fit: str = "stretch") -> np.ndarray:
    """Several files -> (n, h, w, channels) uint8 (Pillow releases the GIL while it decodes)."""
    out = np.empty((len(paths), *size, channels), np.uint8)
    for i, path in enumerate(paths):
        out[i] = decode_file(_text(path), size, channels, fit)
    return out


def decode_each(paths, size: tuple[int, int], channels: int, fit: str = "stretch") -> list:
    """Each file decoded, or its `ImageError`, in order (on `SCAN_THREADS` threads; Pillow
    releases the GIL while it decodes): one bad file costs only itself, and nothing is decoded
    twice to find it."""
    def one(path):
        try:
            return decode_file(_text(path), size, channels, fit)
        except ImageError as exc:
            return exc

    with ThreadPoolExecutor(min(SCAN_THREADS, max(len(paths), 1))) as pool:
        return list(pool.map(one, paths))


def placement_fractions(source: str | bytes, size: tuple[int, int], fit: str = "stretch") -> tuple[float, ...]:
    """`placement` as fractions of the upright photo's height and width: where a heat map at the
    input size goes over the photo as shown (the page of `tlc serve` draws it there)."""
    width, height = oriented_size(source)
    top, left, bottom, right = placement(width, height, size, fit)
    return top / height, left / width, bottom / height, right / width


def placement(width: int, height: int, size: tuple[int, int], fit: str = "stretch") -> tuple[float, ...]:
    """Where the input's pixels come from in an upright image of `width` x `height`: (top, left,
    bottom, right) in the image's pixels of the input's whole area (for `pad`, an area larger
    than the image: the bands beyond it are the padding). Maps a heat map back onto the photo."""
    h, w = size
    if fit == "stretch":
        return 0.0, 0.0, float(height), float(width)
    scale = max(h / height, w / width) if fit == "crop" else min(h / height, w / width)
    tall, wide = h / scale, w / scale  # the input's area in the image's pixels
    top, left = (height - tall) / 2, (width - wide) / 2
    return top, left, top + tall, left + wide


def stored_and_orientation(source: str | bytes) -> tuple[tuple[int, int], int]:
    """((width, height) as stored, the EXIF orientation 1..8), from the header only; `source` is a
    file's path or an encoded image."""
    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return image.size, _orientation(image)


def oriented_size(source: str | bytes) -> tuple[int, int]:
    """(width, height) as the photo is shown (EXIF orientation applied), from its header only."""
    (width, height), orientation = stored_and_orientation(source)
    return (height, width) if orientation in ROTATED else (width, height)


def _too_large(name: str, what: str) -> ImageError:
    return ImageError(f"{name}: {what}, above the limit of {MAX_PIXELS / 1e6:.0f} megapixels "
                      "(a decompression bomb?); not decoded")


def _decode(source, size: tuple[int, int], channels: int, name: str, fit: str = "stretch",
            nbytes: int | None = None) -> np.ndarray:
    """The one decode: the image whole, or one `ImageError` naming the file and why (whatever
    Pillow raised, with what it and libtiff said about it); never a half-decoded buffer."""
    with guard.messages() as said:
        try:
            return _decoded(source, size, channels, name, fit, nbytes, said)
        except ImageError:
            raise
        except Exception as exc:  # Pillow's decoders raise many types for bad data (OSError, ValueError,
            # SyntaxError, EOFError, struct.error, IndexError, NotImplementedError for unimplemented formats...)
            raise ImageError(f"{name}: not a readable image ({_reason(exc, said)})") from None


def _decoded(source, size, channels, name, fit, nbytes, said: list[str]) -> np.ndarray:
    from PIL import Image, ImageOps

    h, w = size
    try:
        image = Image.open(source)
    except Image.DecompressionBombError:  # Pillow refuses twice its limit at open, before we see the size
        raise _too_large(name, "more than twice Pillow's pixel limit") from None
    with image:
        if image.width * image.height > MAX_PIXELS:
            raise _too_large(name, f"{image.width}x{image.height} is {image.width * image.height / 1e6:,.0f} "
                                   "megapixels")
        claim = guard.claims_too_much(image, nbytes) if nbytes is not None else None
        if claim is not None:
            raise ImageError(f"{name}: not a readable image ({claim})")
        if image.format == "JPEG":  # its EXIF is in the header: read before the DCT scale is chosen
            rotated = _orientation(image) in ROTATED
            image.draft(image.mode if image.mode in ("L", "RGB") else None, (h, w) if rotated else (w, h))
        with _BUDGET.share(image.width * image.height), _libtiff(image, said):
            image.load()  # every data error surfaces here, once; EXIF is then read from the loaded image
        image = _upright(image, ImageOps)
        image = _eight_bit(image, Image).convert("L" if channels != 3 else "RGB")
        image = _fitted(image, (w, h), fit, Image, ImageOps)
        pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] != channels:
        pixels = np.repeat(pixels, channels, axis=-1)
    return pixels


def decode_mask(path: str, size: tuple[int, int], fit: str = "stretch", fill: int = 255,
                colors: dict[tuple[int, int, int], int] | None = None) -> np.ndarray:
    """A segmentation mask at `size` (h, w) as uint8 class indices: a greyscale PNG's values, or a
    palette PNG's indices (never its colours), or with `colors` ({(r, g, b): class}) an RGB mask's
    colours; read as stored (no EXIF), met to the input as its image is (`fit`) with nearest
    neighbour, padding with `fill` (the ignored value)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if colors is not None:
                values = _classes_of_colours(path, np.asarray(image.convert("RGB")), colors)
            elif image.mode not in ("P", "L", "I", "I;16", "1"):
                raise ImageError(f"{path}: a mask must be greyscale or palette indices; this one is {image.mode} "
                                 "(colours: set train.data.colors)")
            else:
                values = np.asarray(image)
    except ImageError:
        raise
    except Exception as exc:
        raise UnreadableMask(f"{path}: not a readable mask ({_reason(exc)})") from None
    if values.max(initial=0) > 255:
        raise ImageError(f"{path}: mask values go up to {int(values.max())}; class indices are 0..254 (255: ignored)")
    return fit_mask(values, size, fit, fill)


def fit_mask(values: np.ndarray, size: tuple[int, int], fit: str = "stretch", fill: int = 255) -> np.ndarray:
    """Class indices (uint8) met to `size` (h, w) as their image is (`fit`), with nearest
    neighbour; padding takes `fill` (the ignored value)."""
    from PIL import Image, ImageOps

    h, w = size
    mask = Image.fromarray(values.astype(np.uint8), "L")
    if mask.size != (w, h):
        if fit == "crop":
            mask = ImageOps.fit(mask, (w, h), Image.Resampling.NEAREST)
        elif fit == "pad":
            mask = ImageOps.pad(mask, (w, h), Image.Resampling.NEAREST, color=fill)
        else:
            mask = mask.resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(mask, dtype=np.uint8)


def _classes_of_colours(path: str, rgb: np.ndarray, colors: dict[tuple[int, int, int], int]) -> np.ndarray:
    """An RGB mask's pixels as the classes their colours stand for; a colour of no class is named
    with where it first is."""
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    known = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], np.int32)
    order = np.argsort(known)
    at = np.clip(np.searchsorted(known[order], codes), 0, len(known) - 1)
    found = known[order][at] == codes
    if not found.all():
        y, x = (int(v[0]) for v in np.nonzero(~found))
        raise ImageError(f"{path}: colour {tuple(int(v) for v in rgb[y, x])} at ({x}, {y}) is no class's "
                         f"(train.data.colors: {', '.join(str(list(c)) for c in colors)})")
    return np.array(list(colors.values()), np.uint8)[order][at]


def _libtiff(image, said: list[str]):
    """libtiff prints its complaints on the process's stderr: kept for the refusal instead."""
    return guard.c_library_messages(said) if image.format == "TIFF" else contextlib.nullcontext()


def _fitted(image, size: tuple[int, int], fit: str, Image, ImageOps):
    """`image` at `size` (width, height): stretched, centre-cropped or letterboxed to its aspect,
    with the antialiased bilinear filter."""
    if image.size == size:
        return image
    if fit == "crop":
        return ImageOps.fit(image, size, Image.Resampling.BILINEAR)
    if fit == "pad":
        return ImageOps.pad(image, size, Image.Resampling.BILINEAR, color=0)
    return image.resize(size, Image.Resampling.BILINEAR)


def _orientation(image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a damaged EXIF block: the photo is taken as untagged
        return 1


def _upright(image, ImageOps):
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a damaged EXIF block: untagged
        return image


def _eight_bit(image, Image):
    """16- and 32-bit images scaled to 0..255 (Pillow's own conversion would clip them)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8), "L")
    return image


def _reason(exc: Exception, said: list[str] = ()) -> str:
    """Why a file was refused, in a few words: the exception's first line (its type when it has
    none), and what the libraries said about the file when that says more."""
    text = str(exc).split("\n")[0].strip()
    if "cannot identify image file" in text:
        return "not an image format Pillow reads"
    text = text or type(exc).__name__
    extra = [line for line in said if line not in text and "DecompressionBomb" not in line]
    return "; ".join([text, *extra[-2:]])


def _text(path) -> str:
    return path.decode() if isinstance(path, bytes) else str(path)


def unreadable(files: np.ndarray) -> dict[int, str]:
    """{index: message naming the file} for the files that cannot be decoded (missing, truncated,
    not an image, too large), found by the decoder that reads them for training, in parallel
    threads. JPEGs are decoded at 1/8 scale (DCT scaling still reads all the entropy-coded data,
    so truncation is caught)."""
    return {i: str(r) for i, r in enumerate(decode_each(files, (8, 8), 3)) if isinstance(r, ImageError)}


def naming(bad: dict, fix: str = "", what: str = "files") -> str:
    """The first unreadable file's message (`bad`: {index or file: message}), how many more there
    are, and what to do."""
    first = bad[min(bad)]
    return f"{first}{and_more(bad, 'unreadable ' + what)}" + (f"; {fix}" if fix else "")
