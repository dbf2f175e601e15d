"""`coco`: a COCO JSON's polygons and RLE masks (pycocotools) rasterized into a class per pixel.

Class 0 is the background, then the categories in the order of their ids (or, with
`data.classes: [background, cat, ...]`, the categories so named; others are background). Larger
objects are drawn first, so a small one on top of a large one stays visible; crowd regions
(`iscrowd: 1`) are the ignored value. Annotations are taken in the coordinates of the image as
shown (its EXIF orientation applied), as annotation tools draw them; a JSON whose width and height
are the stored, unrotated ones has its masks turned upright like the photo.

Rasterizing costs ~4.5 ms a 1024x768 photo; the masks are kept in the decoded-image store (a row
per image, keyed by the JSON's path, size and mtime and the classes), so later runs read them.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

#: EXIF orientation -> the transposition that shows it upright (Pillow's `ImageOps.exif_transpose`)
UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
           7: "TRANSVERSE", 8: "ROTATE_90"}


def read_coco(path: Path, names: list[str] | None, size: tuple[int, int], fit: str, ignore: int,
              error) -> tuple[list[str], np.ndarray, list[str]]:
    """(image files, (n, h, w) uint8 masks at `size`, class names) of the COCO JSON at `path`;
    `error(message)` makes the located error for what is wrong with it."""
    from pycocotools.coco import COCO

    from .images import ImageError, fit_mask, stored_and_orientation
    from .store import kept_masks

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # (pycocotools prints its progress)
            coco = COCO(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise error(f"{path}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None
    categories = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    by_name = {c["name"]: c["id"] for c in categories}
    if names is None:
        names = ["background", *(c["name"] for c in categories)]
    unknown = [n for n in names[1:] if n not in by_name]
    if unknown:
        raise error(f"{path} has no category {unknown[0]!r}; it has {', '.join(by_name) or 'none'}")
    index_of = {by_name[n]: i for i, n in enumerate(names) if i and n in by_name}
    records = sorted(coco.loadImgs(coco.getImgIds()), key=lambda r: r["id"])
    files, row_of = [], {}
    for record in records:
        file = _image_file(path.parent, record["file_name"])
        if file is None:
            raise error(f"{path}: image {record['file_name']} (id {record['id']}) is neither beside the JSON "
                        f"nor in images/")
        if str(file) in row_of:
            raise error(f"{path}: image {record['file_name']} is listed twice (ids "
                        f"{records[row_of[str(file)]]['id']} and {record['id']})")
        row_of[str(file)] = len(files)
        files.append(str(file))
    if not files:
        raise error(f"{path} lists no images")

    def draw(file: str) -> np.ndarray:
        """A listed image's mask, rasterized, upright and met to `size` (what the store keeps)."""
        record = records[row_of[file]]
        try:
            stored, orientation = stored_and_orientation(file)
        except Exception:  # unreadable: every pixel ignored; the pipeline names the photo, or skips it (`on_error`)
            return np.full(size, ignore, np.uint8)
        values = _upright(_rasterized(coco, record, index_of, ignore), record, stored, orientation, file, error)
        try:
            return fit_mask(values, size, fit, ignore)
        except ImageError as exc:
            raise error(str(exc)) from None

    source = f"{path.resolve()}|{_stamp(path)}|{names}"
    return files, kept_masks(np.array(files), size, fit, ignore, draw, source=source)[0], names


def _stamp(path: Path) -> str:
    """The JSON's version (size, mtime): a changed file is another store of masks."""
    stat = path.stat()
    return f"{stat.st_size}|{stat.st_mtime_ns}"


def _image_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / "images" / name):
        if candidate.is_file():
            return candidate
    return None


def _rasterized(coco, record: dict, index_of: dict[int, int], ignore: int) -> np.ndarray:
    """The image's class per pixel at the JSON's width and height: larger objects first, crowds ignored."""
    values = np.zeros((record["height"], record["width"]), np.uint8)
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[record["id"]], iscrowd=None))
    for annotation in sorted(annotations, key=lambda a: -float(a.get("area", 0))):
        crowd = bool(annotation.get("iscrowd", 0))
        if annotation["category_id"] not in index_of and not crowd:
            continue
        with warnings.catch_warnings():  # (pycocotools' NumPy 2 copy-keyword deprecation)
            warnings.simplefilter("ignore", DeprecationWarning)
            drawn = coco.annToMask(annotation).astype(bool)
        values[drawn] = ignore if crowd else index_of[annotation["category_id"]]
    return values


def _upright(values: np.ndarray, record: dict, stored: tuple[int, int], orientation: int, file: str,
             error) -> np.ndarray:
    """The mask in the photo's upright frame: as is when the JSON gives the upright size, turned as
    the photo is when it gives the stored one; another size is an error naming both."""
    from PIL import Image

    from .images import ROTATED

    width, height = record["width"], record["height"]
    upright = (stored[1], stored[0]) if orientation in ROTATED else stored
    if (width, height) == upright:
        return values
    if (width, height) == stored and orientation in UPRIGHT:
        turned = Image.fromarray(values, "L").transpose(getattr(Image.Transpose, UPRIGHT[orientation]))
        return np.asarray(turned)
    raise error(f"{file}: the JSON says {width}x{height}; the photo is {upright[0]}x{upright[1]}")
