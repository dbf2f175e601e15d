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
from .train.data import IMAGE_SUFFIXES, as_images, read_images


@dataclass
class Loaded:
    model: Any
    spec: Any | None  # for preprocessing; None when unknown
    class_names: list[str] | None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.model.input_shape[1:])  # type: ignore[return-value]

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        return images if self.spec is None else np.asarray(self.spec.backbone.preprocess(images), "float32")


def load(source: str | Path, *, safe_mode: bool = True) -> Loaded:
    import keras

    from .emit import compile as emit
    from .spec import load_spec

    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        spec = load_spec(path)
        return Loaded(emit(spec, safe_mode=safe_mode), spec, _imagenet_names(spec))
    if path.suffix != ".keras":
        raise SpecError(f"{path}: expected a .keras model or a spec .yaml")
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
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


def load_images(files: list[Path], shape: tuple[int, int, int]) -> np.ndarray:
    return read_images(files, shape[:2], shape[2])


def predict(loaded: Loaded, files: list[Path], top: int) -> list[dict]:
    activation = _output_activation(loaded.model)
    if activation not in ("softmax", "sigmoid", "linear"):
        raise RunError(f"the model outputs {tuple(loaded.model.output.shape[1:])} features per image "
                       f"({loaded.model.layers[-1].name}), not class scores; use tlc extract")
    x = loaded.preprocess(load_images(files, loaded.input_shape))
    scores = loaded.model.predict(x, verbose=0)
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


def extract(loaded: Loaded, data: Path, batch_size: int = 64,
            progress: Any = None) -> tuple[np.ndarray, list[str]]:
    """Features for an .npz (array `x`) or image files/folders; returns (features, sources).

    `progress(done, total)` is called after every batch.
    """
    if data.suffix == ".npz":
        try:
            with np.load(data, allow_pickle=False) as arrays:
                x = arrays["x"]
        except (OSError, KeyError, ValueError) as exc:
            raise SpecError(f"{data}: needs an array named x ({exc})") from None
        x = as_images(x)
        if x.shape[1:] != loaded.input_shape:
            raise SpecError(f"{data}: images are {x.shape[1:]}, the model needs {loaded.input_shape}")
        sources = [f"{data}[{i}]" for i in range(len(x))]
    else:
        files = image_files([data])
        x, sources = load_images(files, loaded.input_shape), [str(f) for f in files]
    x, parts = loaded.preprocess(x), []
    for start in range(0, len(x), batch_size):
        parts.append(np.asarray(loaded.model.predict_on_batch(x[start:start + batch_size])))
        if progress:
            progress(min(start + batch_size, len(x)), len(x))
    return np.concatenate(parts), sources
