"""The Keras emitter: builds exactly the model the plan describes, as one flat functional model."""
from __future__ import annotations

from typing import Any

from tlc.plan.graph import fresh_layer_names
from tlc.spec.preflight import Ready, prepare
from .weights import load_backbone_weights


def compile(source: Any, *, safe_mode: bool = True, notes: list[str] | None = None,
            backbones: dict | None = None) -> Any:
    """A spec (or its `Ready` preflight) -> `keras.Model` named after the spec, with the
    contract's names and trainable flags. `notes` collects what a person should know about the
    weights (e.g. a pretrained first convolution adapted to the input's channels). `backbones`
    keeps built backbones for the process's next models (`_backbone`)."""
    import keras

    ready = source if isinstance(source, Ready) else prepare(source)
    spec, planned = ready.spec, ready.plan
    backbone, note = _backbone(spec, planned.backbone[-1].name, safe_mode, backbones)
    if note and notes is not None:
        notes.append(note)
    set_frozen(backbone, planned.frozen_through, planned.freeze_batch_norm)
    outputs = spec.head.build(backbone.output)
    return keras.Model(backbone.input, outputs, name=spec.name)


def _backbone(spec, last: str, safe_mode: bool, built: dict | None) -> tuple[Any, str | None]:
    """The backbone, cut after `last`, with its weights; and the weights' note. A process that
    builds many models of one backbone (a tune worker; building VGG16 takes longer than training
    a head on its features) keeps it in `built`, by its spec and the random state it was built
    from: a later model gets the same layers, their weights as first built, and the random state
    as right after building, so its head is initialised as if the backbone had been built again."""
    import random

    import keras
    import numpy as np

    key = None
    if built is not None:
        key = (spec.backbone.model_dump_json(), spec.input.hwc, last, hash(random.getstate()),
               hash(np.random.get_state()[1].tobytes()))
        if key in built:
            backbone, weights, states, note = built[key]
            forget_heads(backbone)
            backbone.set_weights(weights)
            random.setstate(states[0])
            np.random.set_state(states[1])
            return backbone, note
    with fresh_layer_names():
        backbone = spec.backbone.build(spec.input.hwc)
    if last != backbone.layers[-1].name:  # `output:` cut: the layers it depends on
        backbone = keras.Model(backbone.input, backbone.get_layer(last).output)
    note = load_backbone_weights(backbone, spec, safe_mode=safe_mode)
    if key is not None:
        built[key] = (backbone, backbone.get_weights(), (random.getstate(), np.random.get_state()), note)
    return backbone, note


def forget_heads(backbone) -> None:
    """Drop the connections models' heads made to a kept backbone: Keras records every call of a
    layer on a layer's output in that layer's outbound nodes, so a kept backbone held every head
    built on it (~1 MB a tune trial, never freed)."""
    inside = {id(layer) for layer in backbone.layers}
    for layer in backbone.layers:
        nodes = getattr(layer, "_outbound_nodes", None)
        if nodes:
            nodes[:] = [node for node in nodes if id(node.operation) in inside]


def set_frozen(backbone_layers: Any, frozen_through: int, batch_norm: bool = False) -> None:
    """Backbone layers 0..frozen_through stop training, and with `batch_norm` every
    BatchNormalization too; the rest train (Keras idiom)."""
    from tlc.plan.planner import trains

    layers = getattr(backbone_layers, "layers", backbone_layers)
    for index, layer in enumerate(layers):
        layer.trainable = trains(index, type(layer).__name__, frozen_through, batch_norm)
