"""Use a model without training it: classify images (`tlc predict`) or extract features (`tlc extract`).

A model comes from a `.keras` file (a run's model.keras, whose folder also gives the class names
and the resolved spec for preprocessing) or from a spec, compiled on the spot (e.g. VGG16 with
ImageNet weights as a classifier, or cut at fc2 as a feature extractor).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlc.data import IMAGE_SUFFIXES, Examples, as_images, naming_unreadable
from tlc.data.pipeline import Feed
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


def file_feed(files: list[Path], hwc: tuple[int, int, int], fit: str = "stretch") -> Feed:
    """Image files as [0, 1] images through the data pipeline (read it inside `naming_unreadable`,
    which names an unreadable file; nothing is decoded twice)."""
    return Feed(Examples(np.zeros(len(files), "int64"), files=np.array([str(f) for f in files])), hwc, fit=fit)


def predict(predictor: Predictor, files: list[Path], top: int, batch_size: int = 64,
            tta: str | None = None) -> list[dict]:
    predictor.require_classifier()
    feed = file_feed(files, predictor.input_shape, predictor.fit)
    with naming_unreadable([feed.examples], fix=""):
        scores = predictor.of_feed(feed, batch_size, tta)
    return [{"image": str(file), "top": best} for file, best in zip(files, predictor.top(scores, top))]


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
    scores = predictor.probabilities(array, tta=tta)
    return [{"image": i, "top": best} for i, best in enumerate(predictor.top(scores, top))]


def extract(predictor: Predictor, data: Path, output: Path, batch_size: int = 64,
            progress: Any = None) -> tuple[tuple, list[str]]:
    """Features for an .npz (array `x`) or image files/folders, streamed batch by batch into the
    .npy `output` (written atomically); returns (shape, sources).

    `progress(done, total)` is called after every batch.
    """
    from tlc.atomic import write_npy_rows

    if data.suffix == ".npz":
        try:
            with np.load(data, allow_pickle=False) as arrays:
                x = arrays["x"]
        except (OSError, KeyError, ValueError) as exc:
            raise SpecError(f"{data}: needs an array named x ({exc})") from None
        x = as_images(x)
        if x.shape[1:] != predictor.input_shape:
            raise SpecError(f"{data}: images are {x.shape[1:]}, the model needs {predictor.input_shape}")
        feed = Feed(Examples(np.zeros(len(x), "int64"), images=x), predictor.input_shape)
        sources = [f"{data}[{i}]" for i in range(len(x))]
    else:
        files = image_files([data])
        feed, sources = file_feed(files, predictor.input_shape), [str(f) for f in files]
    shape = (len(feed), *(int(d) for d in predictor.serving.output.shape[1:]))

    def chunks():
        done = 0
        for x, _ in feed.in_order(batch_size):
            features = predictor(x.numpy())
            done += len(features)
            if progress:
                progress(done, len(feed))
            yield features

    with naming_unreadable([feed.examples], fix=""):
        write_npy_rows(output, shape, chunks())
    return shape, sources
