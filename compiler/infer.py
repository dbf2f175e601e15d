"""Use a model without training it: classify images (`tlc predict`) or extract features (`tlc extract`).

A model comes from a `.keras` file (a run's model.keras, whose folder also gives the class names
and the resolved spec for preprocessing) or from a spec, compiled on the spot (e.g. VGG16 with
ImageNet weights as a classifier, or cut at fc2 as a feature extractor).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunError, SpecError, one_line
from .data import IMAGE_SUFFIXES, Examples, as_images
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
        """Image files through the data pipeline; an unreadable one is an error naming it."""
        from .data.images import unreadable

        paths = np.array([str(f) for f in files])
        bad = unreadable(paths, self.input_shape[2])
        if len(bad):
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise RunError(f"{paths[bad[0]]}: not a readable image{more}")
        return Feed(Examples(np.zeros(len(paths), "int64"), files=paths), self.input_shape, self.preprocess)


def validate(source: str | Path):
    """Check a model source without TensorFlow: a valid, buildable spec (returned) or an
    existing .keras file (None)."""
    from .emit import require_buildable

    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        return require_buildable(path)[0]
    if path.suffix != ".keras":
        raise SpecError(f"{path}: expected a .keras model or a spec .yaml")
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    return None


def load(source: str | Path, *, safe_mode: bool = True) -> Loaded:
    spec = validate(source)
    import keras

    from .emit import compile as emit
    from .spec import load_spec

    path = Path(source)
    if spec is not None:
        return Loaded(emit(spec, safe_mode=safe_mode), spec, _imagenet_names(spec))
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:
        raise RunError(f"{path}: cannot load the model: {one_line(exc)}") from None
    spec, names = None, None
    lock, metrics = path.parent / "spec.lock.yaml", path.parent / "metrics.json"
    if lock.is_file():
        spec = load_spec(lock)
    if metrics.is_file():
        names = json.loads(metrics.read_text()).get("classes")
    return Loaded(model, spec, names)


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
    """Image files, with folders expanded (sorted, recursive)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            out.append(path)
        else:
            raise SpecError(f"{path}: file not found")
    if not out:
        raise SpecError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return out


def predict(loaded: Loaded, files: list[Path], top: int, batch_size: int = 64) -> list[dict]:
    activation = _output_activation(loaded.model)
    if activation not in ("softmax", "sigmoid", "linear"):
        raise RunError(f"the model outputs {tuple(loaded.model.output.shape[1:])} features per image "
                       f"({loaded.model.layers[-1].name}), not class scores; use tlc extract")
    scores = np.concatenate([np.asarray(loaded.model.predict_on_batch(x))
                             for x, _ in loaded.feed(files).in_order(batch_size)])
    if activation == "linear":  # logits
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    names = loaded.class_names if loaded.class_names and len(loaded.class_names) == scores.shape[1] else None
    out = []
    for file, row in zip(files, scores):
        best = np.argsort(row)[::-1][:top]
        out.append({"image": str(file), "top": [
            {"class": names[i] if names else str(i), "index": int(i), "probability": float(row[i])} for i in best]})
    return out


def _output_activation(model) -> str | None:
    """The activation of a final Dense layer (a classifier's), or None for anything else."""
    last = model.layers[-1]
    if type(last).__name__ != "Dense":
        return None
    activation = last.get_config().get("activation")
    return activation if isinstance(activation, str) else None


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

    write_npy_rows(output, shape, chunks())
    return shape, sources
