"""A segmentation's answer as files: `<stem>.mask.png` (class indices, palette coloured) at the
photo's own size and orientation, the model's mask mapped back through `fit` (pixels the model
never saw, cropped away, are the ignored value), and `<stem>.overlay.png` (the mask over the photo)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_masks(file: Path, outputs: np.ndarray, folder: Path, stem: str, names: list[str], fit: str,
                ignore: int = 255) -> tuple[Path, Path]:
    """(mask, overlay) written for one photo from the model's per-pixel outputs (h, w, classes)."""
    from PIL import Image, ImageOps

    from tlc.atomic import write_with
    from tlc.data.images import oriented_size, placement
    from tlc.show.figures import mask_colours, paint

    predicted = outputs.argmax(axis=-1).astype(np.uint8)
    width, height = oriented_size(str(file))
    top, left, bottom, right = placement(width, height, predicted.shape, fit)
    region = Image.fromarray(predicted, "L").resize((max(1, round(right - left)), max(1, round(bottom - top))),
                                                    Image.Resampling.NEAREST)
    canvas = Image.new("L", (width, height), ignore)
    canvas.paste(region, (round(left), round(top)))
    colours = mask_colours(len(names))
    mask = canvas.convert("P")
    mask.putpalette([int(v) for v in colours.reshape(-1)] + [128, 128, 128] * (256 - len(colours)))
    folder.mkdir(parents=True, exist_ok=True)
    mask_path, overlay_path = folder / f"{stem}.mask.png", folder / f"{stem}.overlay.png"
    write_with(mask_path, lambda path: mask.save(path, format="PNG"))
    with Image.open(file) as photo:
        upright = ImageOps.exif_transpose(photo).convert("RGB")
    indices = np.asarray(canvas)
    painted = Image.fromarray(paint(indices, colours, ignore))
    blend = Image.fromarray(np.where((indices > 0)[..., None] & (indices != ignore)[..., None],
                                     np.asarray(Image.blend(upright, painted, 0.5)), np.asarray(upright)))
    write_with(overlay_path, lambda path: blend.save(path, format="PNG"))
    return mask_path, overlay_path
