"""Use a model without training it: answer about images (`tlc predict`: classes, tags or values) or
extract features (`tlc extract`).

A model comes from a `.keras` file (a run's model.keras, whose folder also gives the class names
and the resolved spec for preprocessing) or from a spec, compiled on the spot (e.g. VGG16 with
ImageNet weights as a classifier, or cut at fc2 as a feature extractor).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlc.data import IMAGE_SUFFIXES, as_images
from tlc.errors import SpecError

from .predictor import Predictor


def _imagenet_names(spec) -> list[str] | None:
    if getattr(spec.backbone, "weights", None) != "imagenet" or not getattr(spec.backbone, "include_top", False):
        return None
    try:  # the class index comes from the Keras cache or the network
        from keras.applications.imagenet_utils import decode_predictions

        top = decode_predictions(np.eye(1000, dtype="float32"), top=1)
        return [entry[0][1] for entry in top]
    except Exception:
        return None


def image_files(paths: list[Path]) -> list[Path]:
    """Image files, with folders expanded (sorted, recursive, as a directory source lists them)."""
    from tlc.data.sources import list_images

    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += [Path(p) for p in list_images(path)[0]]
        elif path.is_file():
            out.append(path)
        else:
            raise SpecError(f"{path}: file not found")
    if not out:
        raise SpecError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return out


def decoded(predictor: Predictor, files: list[Path], batch_size: int = 64):
    """Per batch of files: (the batch, the indices of its readable files, their [0, 1] images,
    {index: refusal message} of the others). Each file is decoded once; a bad one costs only itself."""
    from tlc.data.images import ImageError, decode_each

    h, w, c = predictor.input_shape
    for start in range(0, len(files), batch_size):
        batch = files[start:start + batch_size]
        results = decode_each(batch, (h, w), c, predictor.fit)
        good = [i for i, r in enumerate(results) if not isinstance(r, ImageError)]
        images = np.stack([results[i] for i in good]).astype(np.float32) / 255.0 if good \
            else np.zeros((0, h, w, c), np.float32)
        yield batch, good, images, {i: str(r) for i, r in enumerate(results) if isinstance(r, ImageError)}


def refusal(file, message: str) -> dict:
    """The answer for a file that is not a readable image (`"error"` names it and says why)."""
    return {"image": str(file), "file": str(file), "error": message}


def predict(predictor: Predictor, files: list[Path], top: int, batch_size: int = 64,
            tta: str | None = None, output: Path | None = None) -> list[dict]:
    """An answer per file, in order: the task's (its top classes, its tags, its values; a
    segmentation's classes, its mask and overlay written into `output`), or (unreadable) `refusal`."""
    predictor.require_classifier()
    masks = predictor.task.type == "segmentation"
    stems = iter(output_stems(files)) if masks else None
    out = []
    for batch, good, images, errors in decoded(predictor, files, batch_size):
        outputs = predictor.probabilities(images, tta=tta) if good else np.zeros((0,))
        given = iter(zip(predictor.answers(outputs, top), outputs) if good else ())
        for i, file in enumerate(batch):
            stem = next(stems) if stems is not None else None
            if i in errors:
                out.append(refusal(file, errors[i]))
                continue
            answer, row = next(given)
            if masks:
                from tlc.task.segmentation import class_colours

                from .masks import write_masks

                written = write_masks(file, row, Path(output or "predict"), stem,
                                      class_colours(predictor.record, row.shape[-1]), predictor.fit,
                                      predictor.task.ignore_index)
                answer = {"mask": str(written[0]), "overlay": str(written[1]), **answer}
            out.append({"image": str(file), "file": str(file), **answer})
    return out


def answers(predictor: Predictor, images: Any, top: int = 3, tta: str | None = None) -> list[dict]:
    """`predict`'s answers for image files (paths, a folder, or one path) or for [0, 1] images in
    an array (n, height, width, channels) at the model's input size (`"image"`: the row's index)."""
    if isinstance(images, (str, Path)) or (isinstance(images, (list, tuple)) and images
                                           and isinstance(images[0], (str, Path))):
        paths = [images] if isinstance(images, (str, Path)) else images
        return predict(predictor, image_files([Path(p) for p in paths]), top, tta=tta)
    array = np.asarray(images)
    if array.shape == predictor.input_shape:  # one image
        array = array[None]
    array = as_images(array)
    if tuple(array.shape[1:]) != predictor.input_shape:
        raise SpecError(f"images of shape {tuple(array.shape[1:])}; the model takes {predictor.input_shape} "
                        "(pass files to have them decoded and resized)")
    predictor.require_classifier()
    outputs = predictor.probabilities(array, tta=tta)
    return [{"image": i, **given} for i, given in enumerate(predictor.answers(outputs, top))]


def extract(predictor: Predictor, data: Path, output: Path, batch_size: int = 64,
            progress: Any = None) -> tuple[tuple, list[str], list[str]]:
    """Features for an .npz (array `x`) or image files/folders, streamed batch by batch into the
    .npy `output` (written atomically); returns (shape, sources, refusals): a file that is not a
    readable image has no row, and its refusal names it.

    `progress(done, total)` is called after every batch.
    """
    from tlc.atomic import write_npy_rows

    if data.suffix != ".npz":
        return _extract_files(predictor, image_files([data]), output, batch_size, progress)
    try:
        with np.load(data, allow_pickle=False) as arrays:
            x = arrays["x"]
    except (OSError, KeyError, ValueError) as exc:
        raise SpecError(f"{data}: needs an array named x ({exc})") from None
    x = as_images(x)
    if x.shape[1:] != predictor.input_shape:
        raise SpecError(f"{data}: images are {x.shape[1:]}, the model needs {predictor.input_shape}")
    shape = (len(x), *(int(d) for d in predictor.serving.output.shape[1:]))

    def chunks():
        for start in range(0, len(x), batch_size):
            yield predictor(x[start:start + batch_size])
            if progress:
                progress(min(start + batch_size, len(x)), len(x))

    write_npy_rows(output, shape, chunks())
    return shape, [f"{data}[{i}]" for i in range(len(x))], []


def _extract_files(predictor: Predictor, files: list[Path], output: Path, batch_size: int,
                   progress: Any) -> tuple[tuple, list[str], list[str]]:
    """Features of the readable files: written to a scratch file beside `output` as they come (how
    many files are readable is known at the end), then into the .npy atomically."""
    import tempfile

    from tlc.atomic import write_npy_rows

    width = tuple(int(d) for d in predictor.serving.output.shape[1:])
    sources, refusals, done = [], [], 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=output.parent) as scratch:
        for batch, good, images, errors in decoded(predictor, files, batch_size):
            if good:
                np.ascontiguousarray(predictor(images), np.float32).tofile(scratch)
            sources += [str(batch[i]) for i in good]
            refusals += [errors[i] for i in sorted(errors)]
            done += len(batch)
            if progress:
                progress(done, len(files))
        shape = (len(sources), *width)
        scratch.flush()
        rows = np.memmap(scratch, np.float32, "r", shape=shape) if sources else np.zeros(shape, np.float32)
        step = max(1, batch_size)
        write_npy_rows(output, shape, (rows[i:i + step] for i in range(0, len(sources), step)))
    return shape, sources, refusals


def output_stems(paths: list[Path]) -> list[str]:
    """A distinct output name per input, so no heat map overwrites another: the file's stem, with
    as many parent folders as tell clashing stems apart (`a/x.png`, `b/x.png` -> `a_x`, `b_x`),
    numbered when even the whole paths are the same (one file given twice)."""
    import os
    from collections import Counter, defaultdict

    whole = [Path(os.path.abspath(p)).with_suffix("").parts[1:] for p in paths]
    names = [parts[-1] for parts in whole]
    for depth in range(2, max(len(parts) for parts in whole) + 1):
        owners = defaultdict(set)  # name -> the different paths that would write it
        for parts, name in zip(whole, names):
            owners[name].add(parts)
        if all(len(paths) == 1 for paths in owners.values()):
            break
        names = ["_".join(parts[-depth:]) if len(owners[name]) > 1 else name for parts, name in zip(whole, names)]
    seen: Counter = Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out
