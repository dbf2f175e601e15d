"""A segmentation's answer as pictures: the mask of class indices (palette coloured; background
and ignored pixels transparent) at the photo's own size and orientation, the model's mask mapped
back through `fit` (pixels the model never saw, cropped away, are the ignored value), and the
mask drawn over the photo. `predict` writes them (`<stem>.mask.png`, `<stem>.overlay.png`);
`serve` sends the mask."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def mask_image(source, outputs: np.ndarray, colours: np.ndarray, fit: str, ignore: int = 255):
    """The PIL palette image of the predicted classes (from per-pixel outputs (h, w, classes)) over
    the upright photo `source` (a path or encoded bytes), at its own size, in the classes' `colours`."""
    from PIL import Image

    from tlc.data.images import oriented_size, placement
    from tlc.show.figures import IGNORED_GREY

    predicted = outputs.argmax(axis=-1).astype(np.uint8)
    width, height = oriented_size(source if isinstance(source, bytes) else str(source))
    top, left, bottom, right = placement(width, height, predicted.shape, fit)
    region = Image.fromarray(predicted, "L").resize((max(1, round(right - left)), max(1, round(bottom - top))),
                                                    Image.Resampling.NEAREST)
    canvas = Image.new("L", (width, height), ignore)
    canvas.paste(region, (round(left), round(top)))
    mask = canvas.convert("P")
    mask.putpalette([int(v) for v in colours.reshape(-1)] + [IGNORED_GREY] * 3 * (256 - len(colours)))
    mask.info["transparency"] = bytes([0] + [255] * (ignore - 1) + [0] * (256 - ignore))
    return mask


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=image.info.get("transparency"))
    return buffer.getvalue()


def write_masks(file: Path, outputs: np.ndarray, folder: Path, stem: str, colours: np.ndarray, fit: str,
                ignore: int = 255) -> tuple[Path, Path]:
    """(mask, overlay) written for one photo from the model's per-pixel outputs (h, w, classes)."""
    from PIL import Image, ImageOps

    from tlc.atomic import write_with

    mask = mask_image(file, outputs, colours, fit, ignore)
    folder.mkdir(parents=True, exist_ok=True)
    mask_path, overlay_path = folder / f"{stem}.mask.png", folder / f"{stem}.overlay.png"
    write_with(mask_path, lambda path: Path(path).write_bytes(png_bytes(mask)))
    with Image.open(file) as photo:
        upright = ImageOps.exif_transpose(photo).convert("RGB")
    indices = np.asarray(mask)
    palette = np.asarray(mask.getpalette(), np.uint8).reshape(-1, 3)  # (not convert(): its transparency warns)
    drawn = np.asarray(Image.blend(upright, Image.fromarray(palette[indices]), 0.5))
    counted = ((indices > 0) & (indices != ignore))[..., None]
    blend = Image.fromarray(np.where(counted, drawn, np.asarray(upright)))
    write_with(overlay_path, lambda path: blend.save(path, format="PNG"))
    return mask_path, overlay_path
