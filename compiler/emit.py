"""The Keras emitter: builds exactly the model the plan describes, as one flat functional model."""
from __future__ import annotations

import os
from typing import Any

from .errors import InfeasibleError
from .graph import fresh_layer_names
from .plan import Plan, plan as make_plan
from .spec import SpecBase
from .weights import load_by_name

MAX_PARAMS = int(os.environ.get("TLC_MAX_PARAMS", 1_000_000_000))  # keeps hostile specs from exhausting memory


def compile(spec: SpecBase, *, planned: Plan | None = None, safe_mode: bool = True) -> Any:
    """Spec -> `keras.Model` named after the spec, with the contract's names and trainable flags."""
    import keras

    planned = planned or make_plan(spec)
    if not planned.ok:
        raise InfeasibleError(f"infeasible: {planned.failure_message()}")
    total = planned.params()["total"]
    if total > MAX_PARAMS:
        raise spec.error((), f"the model would have {total:,} parameters, more than the limit of "
                             f"{MAX_PARAMS:,} (raise it with the TLC_MAX_PARAMS environment variable)")
    with fresh_layer_names():
        backbone = spec.backbone.build(spec.input.hwc)
    last = planned.backbone[-1].name
    if last != backbone.layers[-1].name:  # `output:` cut: the layers it depends on
        backbone = keras.Model(backbone.input, backbone.get_layer(last).output)
    if spec.backbone.weights_file:
        path, sha256 = spec.backbone.weights_file
        load_by_name(backbone, path, spec, safe_mode=safe_mode, sha256=sha256)
    set_frozen(backbone, planned.frozen_through)
    outputs = spec.head.build(backbone.output)
    return keras.Model(backbone.input, outputs, name=spec.name)


def require_buildable(path) -> tuple[SpecBase, Plan]:
    """Load, validate and plan a spec file, and check its weights file exists, all without
    TensorFlow: what `build` and `train` do before importing Keras (exit 2 or 1 early)."""
    from .plan import missing_weights
    from .spec import load_spec

    spec = load_spec(path)
    planned = make_plan(spec)
    if not planned.ok:
        raise InfeasibleError(f"infeasible: {planned.failure_message()}")
    missing = missing_weights(spec)
    if missing is not None:
        raise missing
    return spec, planned


def set_frozen(backbone_layers: Any, frozen_through: int) -> None:
    """Backbone layers 0..frozen_through stop training; the rest train (Keras idiom)."""
    layers = getattr(backbone_layers, "layers", backbone_layers)
    for index, layer in enumerate(layers):
        layer.trainable = index > frozen_through
