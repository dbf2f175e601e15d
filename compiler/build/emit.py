"""The Keras emitter: builds exactly the model the plan describes, as one flat functional model."""
from __future__ import annotations

from typing import Any, Callable

from tlc.plan.graph import fresh_layer_names
from tlc.plan.planner import backbone_map
from tlc.spec.preflight import Ready, prepare
from .weights import load_backbone_weights


def compile(source: Any, *, safe_mode: bool = True, notes: list[str] | None = None,
            backbones: Callable | None = None) -> Any:
    """A spec (or its `Ready` preflight) -> `keras.Model` named after the spec, with the
    contract's names and trainable flags. `notes` collects what a person should know about the
    weights (e.g. a pretrained first convolution adapted to the input's channels). `backbones`
    builds the backbone in place of `build_backbone` (a tune worker keeps them: `train.pool`)."""
    import keras

    ready = source if isinstance(source, Ready) else prepare(source)
    spec, planned = ready.spec, ready.plan
    backbone, note = (backbones or build_backbone)(spec, planned.backbone[-1].name, safe_mode)
    if note and notes is not None:
        notes.append(note)
    set_frozen(backbone, planned.frozen_through, planned.freeze_batch_norm)
    outputs = spec.head.build_over(backbone, backbone_map(spec, planned))
    return keras.Model(backbone.input, outputs, name=spec.name)


def build_backbone(spec, last: str, safe_mode: bool = True) -> tuple[Any, str | None]:
    """The backbone, cut after `last`, with its weights; and the weights' note."""
    import keras

    with fresh_layer_names():
        backbone = spec.backbone.build(spec.input.hwc)
    if last != backbone.layers[-1].name:  # `output:` cut: the layers it depends on
        backbone = keras.Model(backbone.input, backbone.get_layer(last).output)
    return backbone, load_backbone_weights(backbone, spec, safe_mode=safe_mode)


def set_frozen(backbone_layers: Any, frozen_through: int, batch_norm: bool = False) -> None:
    """Backbone layers 0..frozen_through stop training, and with `batch_norm` every
    BatchNormalization too; the rest train (Keras idiom)."""
    from tlc.plan.planner import trains

    layers = getattr(backbone_layers, "layers", backbone_layers)
    for index, layer in enumerate(layers):
        layer.trainable = trains(index, type(layer).__name__, frozen_through, batch_norm)
