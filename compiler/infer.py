"""Use a model without training it: classify images (`tlc predict`) or extract features (`tlc extract`).

A model comes from a `.keras` file (a run's model.keras, whose folder also gives the class names
and the resolved spec for preprocessing) or from a spec, compiled on the spot (e.g. VGG16 with
ImageNet weights as a classifier, or cut at fc2 as a feature extractor).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunError, SpecError
from .data import IMAGE_SUFFIXES, Examples, as_images, naming_unreadable
from .data.pipeline import Feed


@dataclass
class Loaded:
    model: Any
    spec: Any | None  # for preprocessing; None when unknown
    class_names: list[str] | None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.model.input_shape[1:])  # type: ignore[return-value]

    @property
    def preprocess(self):
        """The backbone's preprocessing (images in [0, 1] -> network input), when the spec is known."""
        return None if self.spec is None else self.spec.backbone.preprocess

    def feed(self, files: list[Path]) -> Feed:
        """Image files through the data pipeline (read it inside `naming_unreadable`, which names
        an unreadable file; nothing is decoded twice)."""
        paths = np.array([str(f) for f in files])
        return Feed(Examples(np.zeros(len(paths), "int64"), files=paths), self.input_shape, self.preprocess)


def resolve(source: str | Path):
    """What a model source is, checked without TensorFlow: a spec's preflight (`Ready`), a run
    (`Run`: a run folder, or a run's model.keras), or a bare .keras file (its path)."""
    from .preflight import prepare
    from .train.runs import Run

    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        return prepare(path)
    if path.is_dir():
        return Run.open(path)
    if path.suffix != ".keras":
        raise SpecError(f"{path}: expected a .keras model, a run folder or a spec .yaml")
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    return Run.open(path.parent) if path.name == "model.keras" and Run.is_run(path.parent) else path


def load(source: str | Path, *, safe_mode: bool = True) -> Loaded:
    from .emit import compile as emit
    from .models import load_model
    from .preflight import Ready
    from .train.runs import Run

    found = resolve(source)
    if isinstance(found, Ready):
        return Loaded(emit(found, safe_mode=safe_mode), found.spec, _imagenet_names(found.spec))
    if isinstance(found, Run):
        return Loaded(found.model(safe_mode=safe_mode), found.spec, found.classes)
    return Loaded(load_model(found, safe_mode=safe_mode), None, None)


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
    from .data.sources import list_images

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


def predict(loaded: Loaded, files: list[Path], top: int, batch_size: int = 64) -> list[dict]:
    from .models import output_activation, probabilities

    if output_activation(loaded.model) not in ("softmax", "sigmoid", "linear"):
        raise RunError(f"the model outputs {tuple(loaded.model.output.shape[1:])} features per image "
                       f"({loaded.model.layers[-1].name}), not class scores; use tlc extract")
    feed = loaded.feed(files)
    with naming_unreadable([feed.examples], fix=""):
        scores = probabilities(loaded.model, feed.in_order(batch_size))
    names = loaded.class_names if loaded.class_names and len(loaded.class_names) == scores.shape[1] else None
    out = []
    for file, row in zip(files, scores):
        best = np.argsort(row)[::-1][:top]
        out.append({"image": str(file), "top": [
            {"class": names[i] if names else str(i), "index": int(i), "probability": float(row[i])} for i in best]})
    return out


def extract(loaded: Loaded, data: Path, output: Path, batch_size: int = 64,
            progress: Any = None) -> tuple[tuple, list[str]]:
    """Features for an .npz (array `x`) or image files/folders, streamed batch by batch into the
    .npy `output` (written atomically); returns (shape, sources).

    `progress(done, total)` is called after every batch.
    """
    from .atomic import write_npy_rows

    if data.suffix == ".npz":
        try:
            with np.load(data, allow_pickle=False) as arrays:
                x = arrays["x"]
        except (OSError, KeyError, ValueError) as exc:
            raise SpecError(f"{data}: needs an array named x ({exc})") from None
        x = as_images(x)
        if x.shape[1:] != loaded.input_shape:
            raise SpecError(f"{data}: images are {x.shape[1:]}, the model needs {loaded.input_shape}")
        feed = Feed(Examples(np.zeros(len(x), "int64"), images=x), loaded.input_shape, loaded.preprocess)
        sources = [f"{data}[{i}]" for i in range(len(x))]
    else:
        files = image_files([data])
        feed, sources = loaded.feed(files), [str(f) for f in files]
    shape = (len(feed), *(int(d) for d in loaded.model.output.shape[1:]))

    def chunks():
        done = 0
        for x, _ in feed.in_order(batch_size):
            features = np.asarray(loaded.model.predict_on_batch(x))
            done += len(features)
            if progress:
                progress(done, len(feed))
            yield features

    with naming_unreadable([feed.examples], fix=""):
        write_npy_rows(output, shape, chunks())
    return shape, sources
