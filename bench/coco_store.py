"""COCO masks through the decoded-image store: rasterizing a JSON's shapes at every load vs once.

Uses bench/segment.py's generated photos (1024x768 JPEGs, a fifth portrait with EXIF 6, palette
masks drawn upright) and writes their masks as a COCO JSON (an RLE per object class per photo,
pycocotools). Then, each a fresh process reading the `coco` source at 256x256 as training does:
without a store (every load rasterizes), the store's first load (rasterizes and keeps), and a
later load (reads the kept rows). Prints the times and the ratio.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from segment import CLASSES, make_photos

LOAD = """
import sys, time
from pathlib import Path
from tlc.data.coco import read_coco
from tlc.data.store import keeping_in
folder = Path(sys.argv[2]) if len(sys.argv) > 2 else None
started = time.perf_counter()
with keeping_in(folder):
    files, masks, names = read_coco(Path(sys.argv[1]), None, (256, 256), "stretch", 255, ValueError)
print(time.perf_counter() - started, masks.shape[0], int((masks != 0).sum()))
"""


def write_json(folder: Path) -> Path:
    """`instances.json` beside `images/`: each photo's mask as one RLE per class it holds."""
    from PIL import Image, ImageOps
    from pycocotools import mask as rle

    path = folder / "instances.json"
    if path.is_file():
        return path
    images, annotations = [], []
    for i, photo in enumerate(sorted((folder / "images").iterdir())):
        with Image.open(photo) as image:
            width, height = ImageOps.exif_transpose(image).size  # the mask is drawn upright
        values = np.asarray(Image.open(folder / "masks" / f"{photo.stem}.png"))
        images.append({"id": i + 1, "file_name": photo.name, "width": width, "height": height})
        for k in range(1, len(CLASSES)):
            drawn = values == k
            if drawn.any():
                encoded = rle.encode(np.asfortranarray(drawn.astype(np.uint8)))
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": k, "iscrowd": 0,
                                    "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode()},
                                    "area": float(drawn.sum()), "bbox": list(rle.toBbox(encoded))})
    categories = [{"id": k, "name": name} for k, name in enumerate(CLASSES) if k]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def load(path: Path, store: Path | None) -> tuple[float, str]:
    done = subprocess.run([sys.executable, "-c", LOAD, str(path), *([str(store)] if store else [])],
                          capture_output=True, text=True, check=True)
    seconds, *shape = done.stdout.split()
    return float(seconds), " ".join(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "tlc-bench-segment")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    path = write_json(make_photos(args.root, args.photos))
    store = Path(tempfile.mkdtemp(prefix="tlc-coco-store-"))
    plain, shape = load(path, None)
    first, _ = load(path, store)
    again, same = load(path, store)
    assert same == shape, (same, shape)
    print(f"coco: {args.photos} photos of 1024x768, masks at 256x256 ({shape.split()[0]} rows, "
          f"{int(shape.split()[1]):,} object pixels)")
    for label, seconds in (("no store (every load)", plain), ("store, first load", first), ("store, later load", again)):
        print(f"  {label:24s}{seconds:8.2f} s")
    print(f"  later loads: {plain / again:.0f}x faster than rasterizing", flush=True)
    subprocess.run(["rm", "-rf", str(store)], check=True)


if __name__ == "__main__":
    main()
