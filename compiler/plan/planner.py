"""The static plan: every layer's name, kind, output shape, params and trainable flag, computed
without TensorFlow, plus the first layer that does not fit and the smallest feasible input.

Backbones and heads that describe their layers are planned by arithmetic; those that only
`build` are planned by building them symbolically (see `introspect`), with the same result.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from tlc.errors import FieldError, did_you_mean

from .graph import HEAD_INPUT, BackboneMap, Inputs, head_graph, keras_order
from .layers import MAX_SIDE, DoesNotFit, Failure, Layer, Shape, format_shape

if TYPE_CHECKING:  # pragma: no cover
    from tlc.spec.models import SpecBase

Loc = tuple


@dataclass(frozen=True)
class PlannedLayer:
    index: int | None  # the freeze index for backbone layers (0 = input); None for head layers
    name: str
    kind: str
    output_shape: Shape
    params: int
    trainable_params: int
    trainable: bool
    part: str  # "backbone" or "head"

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "kind": self.kind,
                "output_shape": list(self.output_shape), "params": self.params,
                "trainable": self.trainable}


@dataclass
class Plan:
    spec: SpecBase
    input_shape: Shape
    layers: list[PlannedLayer]
    failure: Failure | None = None
    min_input: tuple[int, int] | None = None
    frozen_through: int = -1  # backbone layers 0..frozen_through are frozen
    phases_frozen_through: list[int] = field(default_factory=list)  # the same for each train.phases entry
    freeze_batch_norm: bool = False  # `freeze: {batch_norm: true}`: every backbone batch norm is frozen too
    phases_freeze_batch_norm: list[bool] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    aligned: tuple | None = None  # a misaligned decoder: (stride, the input below, the input above)
    taps: dict[str, str] = field(default_factory=dict)  # backbone layer -> the head layer that reads it

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def output_shape(self) -> Shape | None:
        return self.layers[-1].output_shape if self.ok else None

    @property
    def backbone(self) -> list[PlannedLayer]:
        return [layer for layer in self.layers if layer.part == "backbone"]

    def frozen_batch_norms(self) -> int:
        """The backbone's frozen BatchNormalization layers (check and summarize report them
        under `batch_norm: true`)."""
        return sum(1 for layer in self.backbone if layer.kind == "BatchNormalization" and not layer.trainable)

    def params(self) -> dict[str, int]:
        total = sum(layer.params for layer in self.layers)
        trainable = sum(layer.trainable_params for layer in self.layers)
        return {"total": total, "trainable": trainable, "non_trainable": total - trainable}

    def failure_message(self) -> str:
        f = self.failure
        assert f is not None
        text = f"{f.layer} {f.message}" if f.layer else f.message
        if f.misaligned:
            text += f" (input {format_shape(self.input_shape[:2])})"
            if self.aligned is not None:
                stride, below, above = self.aligned
                sizes = " or ".join(format_shape(s) for s in (below, above) if s is not None)
                text += f"; the input must be a multiple of {stride}: {sizes}" if sizes else \
                    "; no input near it aligns them (a backbone whose maps shrink, as unpadded convolutions do, " \
                    "never meets its decoder's upsampled sizes)"
            return text
        if f.input_shape is not None:
            text += f", got {format_shape(f.input_shape)} (from input {format_shape(self.input_shape)})"
        if self.min_input is not None:
            text += f"; smallest feasible input is {format_shape(self.min_input)}"
        elif f.size_limited:
            text += f"; no input up to {MAX_SIDE}x{MAX_SIDE} is feasible"
        return text


def plan(spec: SpecBase, *, input_shape: Shape | None = None, search: bool = True,
         min_input: bool = False) -> Plan:
    """Plan `spec` (at `input_shape` if given). Invalid references raise `SpecError`.

    `search`: find the smallest feasible input when the spec is infeasible; `min_input`: find it
    for a feasible spec too (how far the input could shrink, for `check` and `summarize`).
    """
    shape = tuple(input_shape or spec.input.hwc)
    try:
        result = _plan(spec, shape)
    except FieldError as exc:
        raise spec.error(exc.loc, exc.message) from None
    feasible = functools.cache(lambda h, w: _feasible(spec, (h, w, shape[2])))
    period = _period(spec, result, shape) if result.ok or result.failure.misaligned else None
    if period is not None:  # a decoder: feasible sizes are multiples of a period, not a range
        if result.failure is not None and result.failure.misaligned and search:
            result.aligned = (period, *_multiples_around(feasible, shape, period))
        elif result.ok and min_input:
            result.min_input = _smallest_multiple(feasible, shape, period)
        return result
    if (result.failure and search and result.failure.size_limited) or (result.ok and min_input):
        result.min_input = smallest_input(feasible, shape)
        if result.failure and result.failure.layer is None and result.min_input:
            result.failure = _locate_symbolic_failure(spec, result.failure, result.min_input, shape)
    return result


def _period(spec: SpecBase, result: Plan, shape: Shape) -> int | None:
    """The period of the feasible inputs of a head that gives a map per pixel or joins backbone
    taps (or failed to): the head's (`Head.input_period`), else the backbone's stride."""
    stride = _stride(result, shape)
    period = spec.head.input_period(stride)
    if period is None and (result.taps or (result.failure and result.failure.misaligned)):
        return stride
    return period


def _stride(result: Plan, shape: Shape) -> int:
    """The backbone's output stride (input side over output side), as a power of two."""
    out = result.backbone[-1].output_shape if result.backbone else shape
    ratio = max(shape[0] / max(out[0], 1), 1.0) if len(out) == 3 else 1.0
    return 2 ** round(math.log2(ratio))


def _multiples_around(feasible: Callable[[int, int], bool], shape: Shape, stride: int):
    """The feasible inputs of `stride` multiples just below and just above `shape` (or None)."""
    h, w = shape[0], shape[1]
    below = (h // stride * stride, w // stride * stride)
    above = (-(-h // stride) * stride, -(-w // stride) * stride)
    return (below if min(below) >= 1 and feasible(*below) else None), (above if feasible(*above) else None)


def _smallest_multiple(feasible: Callable[[int, int], bool], shape: Shape, stride: int) -> tuple[int, int] | None:
    """The smallest feasible input among multiples of `stride`: the square side first, then each side."""
    sides = range(stride, max(shape[0], shape[1]) + 1, stride)
    side = next((s for s in sides if feasible(s, s)), None)
    if side is None:
        return None
    return (next(h for h in range(stride, side + 1, stride) if feasible(h, side)),
            next(w for w in range(stride, side + 1, stride) if feasible(side, w)))


def _locate_symbolic_failure(spec: SpecBase, failure: Failure, min_input, shape: Shape) -> Failure:
    """For a backbone planned by building: which layer fails at `shape`, found by re-running the
    graph of a feasible build at the smaller size."""
    from . import introspect

    if spec.backbone.layers(shape) is not None:
        return failure
    found = introspect.failing_layer(spec.backbone, (*min_input, shape[2]), shape)
    if found is None:
        return failure
    layer, reached = found
    return Failure(layer, reached, failure.message, failure.size_limited)


def _feasible(spec: SpecBase, shape: Shape) -> bool:
    try:
        return _plan(spec, shape).ok
    except FieldError:
        return False


def _plan(spec: SpecBase, shape: Shape) -> Plan:
    described = spec.backbone.layers(shape)
    if described is None:
        from . import introspect  # Keras-based planning, only for types without a static description

        described, failure = introspect.backbone_layers(spec.backbone, shape)
        if failure is not None:
            return Plan(spec, shape, [], failure)
    described, inputs = cut(spec, described)
    layers = numbered(described)
    frozen = frozen_through(spec.freeze, layers, ("freeze",))
    policies = [phase.freeze for phase in (spec.train.phases if spec.train else [])]
    result = Plan(spec, shape, [], frozen_through=frozen, freeze_batch_norm=freezes_batch_norm(spec.freeze),
                  phases_frozen_through=[frozen_through(policy, layers, ("train", "phases", i, "freeze"))
                                         for i, policy in enumerate(policies)],
                  phases_freeze_batch_norm=[freezes_batch_norm(policy) for policy in policies])
    known: dict[str, Shape] = {}
    current = _walk(result, described, shape, "backbone",
                    lambda i, layer: trains(i, layer.kind, frozen, result.freeze_batch_norm), inputs, known)
    if current is None:
        return result
    seen = backbone_map(spec, result)
    head = spec.head.layers_over(seen)
    if head is None:
        from . import introspect

        head, failure = introspect.head_layers(spec.head, current)
        if failure is not None:
            result.failure = failure
            return result
    _check_unique_names([*described, *head])
    try:
        ordered, wired = head_graph(head, seen.names)
    except FieldError as exc:  # a head layer naming an input that is not there
        result.failure = Failure(None, current, exc.message)
        return result
    result.taps = {name: layer.name for layer in ordered for name in layer.inputs if name in set(seen.names)}
    _walk(result, ordered, current, "head", lambda i, layer: True, wired, known)
    out = result.layers[-1].output_shape if result.ok and result.layers else ()
    per_pixel = _period(spec, result, shape) is not None
    if per_pixel and len(out) == 3 and tuple(out[:2]) != tuple(shape[:2]):  # a mask per pixel of the input
        result.failure = Failure(None, None, f"the decoder gives {format_shape(out[:2])} masks, not the input's "
                                             "size", size_limited=False, misaligned=True)
    result.warnings += _warnings(spec, result)
    return result


def _walk(result: Plan, layers: list[Layer], shape: Shape, part: str,
          trains: Callable[[int, Layer], bool], inputs: Inputs, known: dict[str, Shape]) -> Shape | None:
    """Append planned layers (in Keras's order; `inputs` wires them: a layer with none takes
    `shape`, as a backbone's input layer does; a head's layers may name `HEAD_INPUT`, the
    backbone's output, and backbone layers, whose shapes the backbone's walk left in `known`);
    on the first that does not fit, record the failure and stop. Tensor operations are walked for
    their shapes but, as in Keras's `model.layers`, not listed."""
    shapes = known
    shapes[HEAD_INPUT] = shape
    i = -1
    for layer in layers:
        sources = inputs[layer.name]
        received = [shapes[name] for name in sources] if sources else [shape]
        shape = received[0]
        try:
            out = layer.output_shape(received if layer.merges else shape)
            if min(out, default=1) < 1:
                raise DoesNotFit("would produce an empty output", need=(1, 1))
        except DoesNotFit as exc:
            result.failure = Failure(layer.name, None if exc.misaligned else shape, str(exc),
                                     size_limited=exc.need is not None, misaligned=exc.misaligned)
            return None
        shapes[layer.name] = out
        if layer.is_operation:
            shape = out
            continue
        i += 1
        can_train, never_trains = layer.weights(received if layer.merges else shape)
        trainable = trains(i, layer)
        result.layers.append(PlannedLayer(
            index=i if part == "backbone" else None, name=layer.name, kind=layer.kind,
            output_shape=out, params=can_train + never_trains,
            trainable_params=can_train if trainable else 0, trainable=trainable, part=part,
        ))
        shape = out
    return shape


def backbone_map(spec: SpecBase, result: Plan) -> BackboneMap:
    """The planned backbone as its head sees it (`BackboneMap`)."""
    return BackboneMap(spec.backbone.type, result.input_shape,
                       tuple((layer.name, layer.kind, layer.output_shape) for layer in result.backbone))


def cut(spec: SpecBase, described: list[Layer]) -> tuple[list[Layer], Inputs]:
    """The backbone's layers in Keras's order and their inputs, after `backbone.output`: the
    layers that output depends on (for a chain, those up to and including it)."""
    ordered, inputs = keras_order(described)
    output = spec.backbone.output
    if output is None:
        return ordered, inputs
    layers = numbered(ordered)
    last = layers[_layer_index(output, layers, ("backbone", "output"), first=1)]
    return keras_order(described, last.name)


def numbered(layers: list[Layer]) -> list[Layer]:
    """The layers that have an index (Keras's `model.layers`): all but the tensor operations."""
    return [layer for layer in layers if not layer.is_operation]


def frozen_through(policy: Any, layers: list[Any], loc: Loc) -> int:
    """The last frozen backbone index for a freeze policy (-1: nothing frozen).

    Mirrors the Keras idiom `for l in base.layers[:N + 1]: l.trainable = False`.
    """
    if policy == "none":
        return -1
    if policy == "all":
        return len(layers) - 1
    if policy.up_to is None:
        return -1
    return _layer_index(policy.up_to, layers, loc + ("up_to",), first=0)


def freezes_batch_norm(policy: Any) -> bool:
    return not isinstance(policy, str) and policy.batch_norm


def trains(index: int, kind: str, frozen_through: int, batch_norm: bool) -> bool:
    """Does backbone layer `index` (of Keras class `kind`) train under a freeze policy?"""
    return index > frozen_through and not (batch_norm and kind == "BatchNormalization")


def _layer_index(ref: int | str, layers: list[Any], loc: Loc, first: int) -> int:
    last = len(layers) - 1
    if isinstance(ref, int):
        if not first <= ref <= last:
            raise FieldError(loc, f"layer index {ref} is out of range; the backbone's layers are "
                                  f"{first}..{last} ({layers[first].name} .. {layers[last].name})")
        return ref
    names = [layer.name for layer in layers]
    if ref in names[first:]:
        return names.index(ref)
    raise FieldError(loc, f"no backbone layer named {ref!r}{did_you_mean(ref, names)}; "
                          f"layers: {', '.join(names[first:])}")


def _check_unique_names(layers: list[Layer]) -> None:
    seen: set[str] = set()
    for layer in layers:
        if layer.name in seen:
            raise FieldError(("head",), f"layer name {layer.name!r} is used twice (backbone and head); "
                                        "cut the backbone with `output:` or use `head: {type: none}`")
        seen.add(layer.name)


def _warnings(spec: SpecBase, result: Plan) -> list[str]:
    """Located warnings (`file:line:col: field: message`): things that are valid but likely wrong."""
    out = []
    if result.frozen_through > 0 and spec.backbone.weights is None:
        out.append(str(spec.error(("freeze",), "backbone layers are frozen but weights is null: "
                                               "they keep their random initial values")))
    return out


def smallest_input(feasible: Callable[[int, int], bool], shape: Shape) -> tuple[int, int] | None:
    """Smallest feasible (height, width), using that feasibility is monotone in each side.

    First the smallest feasible square side s (doubling, then bisection), then each side alone
    with the other held at s.
    """
    side = max(shape[0], shape[1], 1)
    while not feasible(side, side):
        if side >= MAX_SIDE:
            return None
        side = min(side * 2, MAX_SIDE)
    side = _bisect(lambda s: feasible(s, s), side)
    return (_bisect(lambda h: feasible(h, side), side), _bisect(lambda w: feasible(side, w), side))


def _bisect(ok: Callable[[int], bool], high: int) -> int:
    """Smallest n in 1..high with ok(n), given ok(high) and monotonicity."""
    low = 0  # not ok (sentinel)
    while high - low > 1:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid
    return high
