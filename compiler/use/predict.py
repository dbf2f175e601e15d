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
from tlc.layout import RunLayout
from tlc.errors import SpecError
from .predictor import Predictor


def resolve(source: str | Path):
    """What a model source is, checked without TensorFlow: a spec's preflight (`Ready`), a run
    (`Run`: a run folder, or a run's model.keras), or a bare .keras file (its path)."""
    from tlc.spec.preflight import prepare
    from .run import Run

    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        return prepare(path)
    if path.is_dir():
        return Run.open(path)
    if path.suffix != ".keras":
        raise SpecError(f"{path}: expected a .keras model, a run folder or a spec .yaml")
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    return Run.open(path.parent) if path.name == RunLayout(path.parent).model.name and Run.is_run(path.parent) else path


def load(found, *, safe_mode: bool = True) -> Predictor:
    """The predictor for what `resolve` found: a spec compiled on the spot, a run's model with its
    preprocessing and classes, or a bare .keras file (no preprocessing, classes by index)."""
    from tlc.build.emit import compile as emit
    from tlc.build.loading import load_model
    from tlc.spec.preflight import Ready
    from .run import Run

    if isinstance(found, Ready):
        return Predictor(emit(found, safe_mode=safe_mode), preprocess=found.spec.backbone.preprocess,
                         classes=_imagenet_names(found.spec), name=found.spec.name)
    if isinstance(found, Run):
        return Predictor.of_run(found, safe_mode=safe_mode)
    return Predictor(load_model(found, safe_mode=safe_mode))


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


def file_feed(files: list[Path], hwc: tuple[int, int, int]) -> Feed:
    """Image files as [0, 1] images through the data pipeline (read it inside `naming_unreadable`,
    which names an unreadable file; nothing is decoded twice)."""
    return Feed(Examples(np.zeros(len(files), "int64"), files=np.array([str(f) for f in files])), hwc)


def predict(predictor: Predictor, files: list[Path], top: int, batch_size: int = 64,
            tta: str | None = None) -> list[dict]:
    predictor.require_classifier()
    feed = file_feed(files, predictor.input_shape)
    with naming_unreadable([feed.examples], fix=""):
        scores = predictor.of_feed(feed, batch_size, tta)
    return [{"image": str(file), "top": best} for file, best in zip(files, predictor.top(scores, top))]


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
