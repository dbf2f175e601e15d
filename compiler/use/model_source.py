"""What `tlc predict` and `tlc extract` are given as a model: a spec (compiled on the spot, e.g.
VGG16 with ImageNet weights), a run (its folder or its model.keras, with its class names and
preprocessing) or a bare .keras file; resolved without TensorFlow, then loaded as a predictor."""
from __future__ import annotations

from pathlib import Path

from tlc.errors import SpecError
from tlc.layout import RunLayout

from .predict import _imagenet_names
from .predictor import Predictor
from .run import Run


def resolve(source: str | Path):
    """What a model source is, checked without TensorFlow: a spec's preflight (`Ready`), a run
    (`Run`: a run folder, or a run's model.keras), or a bare .keras file (its path)."""
    from tlc.spec.preflight import prepare

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

    if isinstance(found, Ready):
        return Predictor(emit(found, safe_mode=safe_mode), preprocess=found.spec.backbone.preprocess,
                         classes=_imagenet_names(found.spec), name=found.spec.name)
    if isinstance(found, Run):
        return Predictor.of_run(found, safe_mode=safe_mode)
    return Predictor(load_model(found, safe_mode=safe_mode))


