"""Layer graphs without TensorFlow: who feeds whom, and the order Keras lists the layers in.

A backbone describes its layers in the order it creates them, each naming its `inputs` (or none:
the layer before it). Keras's functional `Model.layers` is not that order: it sorts layers by
their depth from the output, ties broken by a depth-first walk from the output
(`keras.src.ops.function.map_graph`). Freeze indices and `output: N` are positions in Keras's
list, so `keras_order` reproduces that algorithm exactly; for a plain chain both orders agree.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
from typing import Sequence

from tlc.errors import FieldError

from .layers import Layer

Inputs = dict[str, tuple[str, ...]]
#: What a head's first layer (and any head layer naming it in `inputs`) takes: the backbone's output.
HEAD_INPUT = "backbone_output"

_cache: dict[int, tuple[Sequence[Layer], str | None, list[Layer], Inputs]] = {}


class Graph:
    """Write a graph description the way Keras code is written: `x = g(Conv2D("c1", ...), x)`
    adds a layer fed by `x` (default: the layer added last) and returns its name;
    `Add("a")` takes several: `g(Add("a"), shortcut, x)`. `g.layers` is the description."""

    def __init__(self, input_layer: Layer):
        self.layers: list[Layer] = [input_layer]
        self._uids: dict[str, int] = {}

    def __call__(self, layer: Layer, *inputs: str) -> str:
        self.layers.append(dataclasses.replace(layer, inputs=inputs or (self.layers[-1].name,)))
        return layer.name

    def auto(self, prefix: str) -> str:
        """The name Keras gives an unnamed layer: `add`, then `add_1`, `add_2`, ..."""
        n = self._uids.get(prefix, 0)
        self._uids[prefix] = n + 1
        return f"{prefix}_{n}" if n else prefix


def wiring(layers: Sequence[Layer], part: str = "backbone") -> Inputs:
    """Each layer's input names: its own `inputs`, or the layer before it in the list."""
    out: Inputs = {}
    previous: str | None = None
    for layer in layers:
        if layer.name in out:
            raise FieldError((part,), f"layer name {layer.name!r} is used twice in the {part}")
        named = layer.inputs or ((previous,) if previous is not None else ())
        for source in named:
            if source not in out:
                raise FieldError((part,), f"layer {layer.name!r} takes input from {source!r}, "
                                          "which is not an earlier layer")
        out[layer.name] = named
        previous = layer.name
    return out


def is_chain(layers: Sequence[Layer]) -> bool:
    return all(not layer.inputs for layer in layers)


def head_graph(layers: Sequence[Layer], taps: Sequence[str] = ()) -> tuple[list[Layer], Inputs]:
    """(a head's layers in Keras's order, their inputs). A head is a chain or a graph like a
    backbone's: a layer without `inputs` takes the one before it, the first takes the backbone's
    output (`HEAD_INPUT`, which a layer may also name to branch from it); a decoder's layers also
    name backbone layers (`taps`). Every head layer comes after the backbone's in Keras's list
    (each backbone layer reaches the output through the backbone's output, a longer path than any
    head layer's), in the order Keras's depth sort gives them among themselves."""
    if not layers:  # no head (`none`): the backbone's output is the model's
        return [], {}
    used = [name for name in dict.fromkeys(n for layer in layers for n in layer.inputs) if name in set(taps)]
    starts = [Layer(HEAD_INPUT), *(Layer(name) for name in used if name != HEAD_INPUT)]
    inputs = wiring([*starts, *layers], "head")
    ordered = list(layers) if is_chain(layers) else _sorted_by_depth([*starts, *layers], inputs, layers[-1].name)
    return [layer for layer in ordered if layer not in starts], inputs


@dataclasses.dataclass(frozen=True)
class BackboneMap:
    """What a head sees of its backbone without TensorFlow: its type and every layer's name,
    Keras class and output shape, in Keras's order (a position is the freeze index). A decoder
    picks its taps here; the emitter gives it the same layers' tensors."""

    type: str
    input_shape: tuple
    layers: tuple  # ((name, kind, output shape), ...)

    @property
    def shape(self) -> tuple:
        return self.layers[-1][2]

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.layers]

    def shape_of(self, name: str) -> tuple:
        return next(shape for n, _, shape in self.layers if n == name)


def keras_order(layers: Sequence[Layer], output: str | None = None) -> tuple[list[Layer], Inputs]:
    """(the layers `output` depends on, in Keras's `Model.layers` order; their inputs).

    `output` defaults to the last layer described. Results are cached per description object,
    since planning asks for the same description at many input sizes.
    """
    cached = _cache.get(id(layers))
    if cached is not None and cached[0] is layers and cached[1] == output:
        return cached[2], cached[3]
    inputs = wiring(layers)
    if is_chain(layers):
        end = len(layers) if output is None else [layer.name for layer in layers].index(output) + 1
        ordered = list(layers[:end])
    else:
        ordered = _sorted_by_depth(layers, inputs, output or layers[-1].name)
    if len(_cache) > 64:
        _cache.clear()
    _cache[id(layers)] = (layers, output, ordered, inputs)
    return ordered, inputs


def _sorted_by_depth(layers: Sequence[Layer], inputs: Inputs, output: str) -> list[Layer]:
    # Depth-first from the output, inputs in order: first-visit (pre-order) indices break ties,
    # and the post-order is the topological order in which depths are propagated.
    first_seen: dict[str, int] = {output: 0}
    post: list[str] = []
    stack = [(output, 0)]
    while stack:
        name, i = stack[-1]
        sources = inputs[name]
        if i < len(sources):
            stack[-1] = (name, i + 1)
            source = sources[i]
            if source not in first_seen:
                first_seen[source] = len(first_seen)
                stack.append((source, 0))
        else:
            stack.pop()
            post.append(name)
    depth: dict[str, int] = {}
    for name in reversed(post):
        d = depth.setdefault(name, 0)
        for source in inputs[name]:
            depth[source] = max(d + 1, depth.get(source, 0))
    by_name = {layer.name: layer for layer in layers}
    return [by_name[n] for n in sorted(post, key=lambda n: (-depth[n], first_seen[n]))]


def build(layers: Sequence[Layer], input_shape: tuple) -> object:
    """A `keras.Model` from a described chain or graph (layers created in described order)."""
    import keras

    ordered, inputs = keras_order(layers)
    tensors = {layers[0].name: keras.Input(shape=tuple(input_shape), name=layers[0].name)}
    for layer in layers[1:]:
        sources = [tensors[name] for name in inputs[layer.name]]
        arg = sources if layer.merges else sources[0]
        shape = tuple(int(d) for d in sources[0].shape[1:])
        tensors[layer.name] = layer.keras_layer(shape)(arg)
    return keras.Model(tensors[layers[0].name], tensors[ordered[-1].name])


@contextlib.contextmanager
def fresh_layer_names():
    """Keras names unnamed layers `add`, `add_1`, ... from a process-wide counter, so building a
    second ResNet50V2 would call its poolings `max_pooling2d_3`...; with fresh counters the
    names are the same in every process, and equal the plan's. (Keras private state, guarded.)"""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - a future Keras moving its private module
        yield
        return
    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)
