"""Static layer descriptions: the one place that knows each layer's shape and parameter rules.

A built-in backbone or head describes itself as a list of these: a chain, or a graph where a
layer names its `inputs` (residual adds, concatenations, squeeze-and-excitation). The planner
runs their arithmetic (no TensorFlow); the emitter turns each into the Keras layer of the same
name, so what `tlc check` reports and what `tlc build` makes come from one description.
A description's fields are its Keras layer's arguments (`keras_arguments`), so one method builds
every kind; Keras is imported only inside `keras_layer`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from tlc.show.text import format_shape

MAX_SIDE = int(os.environ.get("TLC_MAX_SIDE", 8192))  # largest input height/width a spec may ask for

Shape = tuple[int, ...]  # without the batch dimension
Pair = tuple[int, int]


class DoesNotFit(Exception):
    """Raised by `output_shape` when the incoming shape is too small or of the wrong rank.

    `need` is the (height, width) window a too-small input needed, for the message; `misaligned`:
    tensors that should meet at one size do not (another input size, not a larger one, fixes it).
    """

    def __init__(self, message: str, need: Pair | None = None, misaligned: bool = False):
        super().__init__(message)
        self.need, self.misaligned = need, misaligned


def pair(value: int | tuple[int, int] | list[int]) -> Pair:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _spatial(shape: Shape, what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise DoesNotFit(f"needs a 3-D feature map (height, width, channels) for {what}")
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class Failure:
    """The first layer that does not fit: its name, the shape that reached it, and why."""

    layer: str | None
    input_shape: Shape | None
    message: str  # e.g. "needs at least 4x4"
    size_limited: bool = True  # a larger input could fix it
    misaligned: bool = False  # a decoder's skip meets its tap at another size (`DoesNotFit.misaligned`)


@dataclass(frozen=True)
class Layer:
    """One Keras layer, described statically.

    `inputs` names the layers that feed it; empty means the layer before it in the list (a
    chain). A layer with `merges = True` (Add, Concatenate, ...) takes a list of shapes.
    """

    name: str
    inputs: tuple[str, ...] = ()
    kind: ClassVar[str] = "Layer"  # the Keras layer class (keras.layers.<kind>)
    merges: ClassVar[bool] = False
    #: a tensor operation Keras applies between layers (`x + 3.0`, `a + b`): it has a shape and a
    #: place in the graph, but, as in Keras's `model.layers`, no freeze index
    is_operation: ClassVar[bool] = False
    not_keras: ClassVar[tuple[str, ...]] = ()  # fields that are tlc's, not the Keras layer's arguments

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def weights(self, shape: Shape) -> tuple[int, int]:
        """(params that train when the layer trains, params that never train)."""
        return (0, 0)

    def keras_arguments(self, shape: Shape) -> dict[str, Any]:
        """The Keras layer's constructor arguments for an incoming `shape`: by default the
        description's own fields, which are named as Keras names them."""
        skip = {"name", "inputs", *self.not_keras}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

    def keras_layer(self, shape: Shape):
        """The Keras layer this describes, for an incoming `shape`."""
        import keras

        return getattr(keras.layers, self.kind)(name=self.name, **self.keras_arguments(shape))


@dataclass(frozen=True)
class Input(Layer):
    """The input layer (index 0). `min_size` encodes a backbone's own minimum (VGG16: 32x32)."""

    kind: ClassVar[str] = "InputLayer"
    min_size: Pair = (1, 1)
    why: str = ""

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = shape
        if h < self.min_size[0] or w < self.min_size[1]:
            raise DoesNotFit(f"needs at least {format_shape(self.min_size)}{self.why}", self.min_size)
        return shape


def _window(n: int, k: int, s: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(n / s)
    return (n - k) // s + 1


def _convolved(shape: Shape, kind: str, kernel: Pair, strides: Pair, padding: str, channels: int) -> Shape:
    h, w, _ = _spatial(shape, kind)
    (kh, kw), (sh, sw) = kernel, strides
    if padding == "valid" and (h < kh or w < kw):
        raise DoesNotFit(f"needs at least {kh}x{kw}", (kh, kw))
    return (_window(h, kh, sh, padding), _window(w, kw, sw, padding), channels)


@dataclass(frozen=True)
class Conv2D(Layer):
    kind: ClassVar[str] = "Conv2D"
    filters: int = 1
    kernel_size: Pair = (3, 3)
    strides: Pair = (1, 1)
    padding: str = "valid"
    activation: str | None = None
    use_bias: bool = True
    groups: int = 1  # grouped convolution: each group of input channels feeds filters/groups outputs
    kernel_initializer: str = "glorot_uniform"
    dilation_rate: Pair = (1, 1)  # atrous: the kernel's taps `dilation_rate` pixels apart

    def output_shape(self, shape: Shape) -> Shape:
        if shape and (shape[-1] % self.groups or self.filters % self.groups):
            raise DoesNotFit(f"{self.groups} groups need channels and filters divisible by {self.groups}")
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation_rate
        spread = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)  # the window a dilated kernel covers
        return _convolved(shape, self.kind, spread, self.strides, self.padding, self.filters)

    def weights(self, shape: Shape) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return (kh * kw * shape[-1] // self.groups * self.filters + (self.filters if self.use_bias else 0), 0)


@dataclass(frozen=True)
class BatchNormalization(Layer):
    """gamma (`scale`) and beta (`center`) train; the moving mean and variance never do."""

    kind: ClassVar[str] = "BatchNormalization"
    scale: bool = True
    center: bool = True
    epsilon: float = 1e-3

    def weights(self, shape: Shape) -> tuple[int, int]:
        return ((self.scale + self.center) * shape[-1], 2 * shape[-1])


@dataclass(frozen=True)
class LayerNormalization(Layer):
    kind: ClassVar[str] = "LayerNormalization"
    epsilon: float = 1e-3

    def weights(self, shape: Shape) -> tuple[int, int]:
        return (2 * shape[-1], 0)  # gamma, beta


@dataclass(frozen=True)
class Activation(Layer):
    kind: ClassVar[str] = "Activation"
    activation: str = "relu"


@dataclass(frozen=True)
class Pooling2D(Layer):
    """MaxPooling2D or AveragePooling2D (strides default to pool_size, as in Keras)."""

    not_keras: ClassVar[tuple[str, ...]] = ("mode",)
    mode: str = "max"
    pool_size: Pair = (2, 2)
    strides: Pair | None = None
    padding: str = "valid"

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "MaxPooling2D" if self.mode == "max" else "AveragePooling2D"

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = _spatial(shape, self.kind)
        (ph, pw), (sh, sw) = self.pool_size, self.strides or self.pool_size
        if self.padding == "valid" and (h < ph or w < pw):
            raise DoesNotFit(f"needs at least {ph}x{pw}", (ph, pw))
        return (_window(h, ph, sh, self.padding), _window(w, pw, sw, self.padding), c)


@dataclass(frozen=True)
class GlobalPooling2D(Layer):
    not_keras: ClassVar[tuple[str, ...]] = ("mode",)
    mode: str = "avg"
    keepdims: bool = False  # a 1x1xC map instead of C

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "GlobalAveragePooling2D" if self.mode == "avg" else "GlobalMaxPooling2D"

    def output_shape(self, shape: Shape) -> Shape:
        channels = _spatial(shape, self.kind)[2]
        return (1, 1, channels) if self.keepdims else (channels,)


@dataclass(frozen=True)
class Dropout(Layer):
    kind: ClassVar[str] = "Dropout"
    rate: float = 0.5


@dataclass(frozen=True)
class Flatten(Layer):
    kind: ClassVar[str] = "Flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


@dataclass(frozen=True)
class Dense(Layer):
    """Keras Dense: acts on the last axis, so a 3-D input gives a 3-D output."""

    kind: ClassVar[str] = "Dense"
    units: int = 1
    activation: str | None = None

    def output_shape(self, shape: Shape) -> Shape:
        return shape[:-1] + (self.units,)

    def weights(self, shape: Shape) -> tuple[int, int]:
        return (shape[-1] * self.units + self.units, 0)


# --- layers of graph backbones (keras.applications families and plugin graphs) ---------------


@dataclass(frozen=True)
class ZeroPadding2D(Layer):
    """Zero padding ((top, bottom), (left, right)); with `correct_for: k`, the padding Keras's
    `imagenet_utils.correct_pad(x, k)` gives, which depends on the incoming size's parity."""

    kind: ClassVar[str] = "ZeroPadding2D"
    padding: tuple[Pair, Pair] = ((1, 1), (1, 1))
    correct_for: int | None = None

    def pads(self, shape: Shape) -> tuple[Pair, Pair]:
        if self.correct_for is None:
            return self.padding
        c = self.correct_for // 2
        return ((c - (1 - shape[0] % 2), c), (c - (1 - shape[1] % 2), c))

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = _spatial(shape, self.kind)
        (top, bottom), (left, right) = self.pads(shape)
        return (h + top + bottom, w + left + right, c)

    def keras_arguments(self, shape: Shape) -> dict[str, Any]:
        return {"padding": self.pads(shape)}


@dataclass(frozen=True)
class Cropping2D(Layer):
    kind: ClassVar[str] = "Cropping2D"
    cropping: tuple[Pair, Pair] = ((0, 0), (0, 0))

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = _spatial(shape, self.kind)
        (top, bottom), (left, right) = self.cropping
        if h <= top + bottom or w <= left + right:
            raise DoesNotFit(f"needs at least {top + bottom + 1}x{left + right + 1}", (top + bottom + 1, left + right + 1))
        return (h - top - bottom, w - left - right, c)


@dataclass(frozen=True)
class DepthwiseConv2D(Layer):
    kind: ClassVar[str] = "DepthwiseConv2D"
    kernel_size: Pair = (3, 3)
    strides: Pair = (1, 1)
    padding: str = "valid"
    depth_multiplier: int = 1
    use_bias: bool = True

    def output_shape(self, shape: Shape) -> Shape:
        channels = _spatial(shape, self.kind)[2] * self.depth_multiplier
        return _convolved(shape, self.kind, self.kernel_size, self.strides, self.padding, channels)

    def weights(self, shape: Shape) -> tuple[int, int]:
        out = shape[-1] * self.depth_multiplier
        return (math.prod(self.kernel_size) * out + (out if self.use_bias else 0), 0)


@dataclass(frozen=True)
class SeparableConv2D(Conv2D):
    """A depthwise convolution followed by a 1x1 pointwise one (depth_multiplier 1)."""

    kind: ClassVar[str] = "SeparableConv2D"

    def weights(self, shape: Shape) -> tuple[int, int]:
        c = shape[-1]
        return (math.prod(self.kernel_size) * c + c * self.filters + (self.filters if self.use_bias else 0), 0)


@dataclass(frozen=True)
class ReLU(Layer):
    kind: ClassVar[str] = "ReLU"
    max_value: float | None = None


@dataclass(frozen=True)
class Rescaling(Layer):
    """`x * scale + offset` (a number, or one per channel)."""

    kind: ClassVar[str] = "Rescaling"
    scale: float | tuple[float, ...] = 1.0
    offset: float = 0.0

    def keras_arguments(self, shape: Shape) -> dict[str, Any]:
        return {"scale": list(self.scale) if isinstance(self.scale, tuple) else self.scale, "offset": self.offset}


@dataclass(frozen=True)
class Normalization(Layer):
    """Per-channel `(x - mean) / sqrt(variance)`: with `mean` and `variance` given they are
    constants; otherwise they are weights (with a count) that never train."""

    kind: ClassVar[str] = "Normalization"
    mean: tuple[float, ...] | None = None
    variance: tuple[float, ...] | None = None

    def weights(self, shape: Shape) -> tuple[int, int]:
        return (0, 0) if self.mean is not None else (0, 2 * shape[-1] + 1)

    def keras_arguments(self, shape: Shape) -> dict[str, Any]:
        given = {"mean": list(self.mean), "variance": list(self.variance)} if self.mean is not None else {}
        return {"axis": -1, **given}


@dataclass(frozen=True)
class Reshape(Layer):
    kind: ClassVar[str] = "Reshape"
    target_shape: Shape = ()

    def output_shape(self, shape: Shape) -> Shape:
        if math.prod(shape) != math.prod(self.target_shape):
            raise DoesNotFit(f"cannot reshape {format_shape(shape)} to {format_shape(self.target_shape)}")
        return tuple(self.target_shape)


@dataclass(frozen=True)
class Add(Layer):
    """Element-wise sum of its inputs (sizes of 1 broadcast, as in Keras's merge layers)."""

    kind: ClassVar[str] = "Add"
    merges: ClassVar[bool] = True

    def output_shape(self, shapes: list[Shape]) -> Shape:  # type: ignore[override]
        out = shapes[0]
        for other in shapes[1:]:
            if len(other) != len(out) or any(a != b and 1 not in (a, b) for a, b in zip(out, other)):
                raise DoesNotFit(f"cannot combine {' and '.join(format_shape(s) for s in shapes)}")
            out = tuple(max(a, b) for a, b in zip(out, other))
        return out


@dataclass(frozen=True)
class Multiply(Add):
    kind: ClassVar[str] = "Multiply"


@dataclass(frozen=True)
class Concatenate(Layer):
    """Joins its inputs along the channel axis; every other dimension must agree."""

    kind: ClassVar[str] = "Concatenate"
    merges: ClassVar[bool] = True

    def output_shape(self, shapes: list[Shape]) -> Shape:  # type: ignore[override]
        if any(s[:-1] != shapes[0][:-1] for s in shapes):
            raise DoesNotFit(f"cannot concatenate {' and '.join(format_shape(s) for s in shapes)}")
        return (*shapes[0][:-1], sum(s[-1] for s in shapes))

    def keras_arguments(self, shape: Shape) -> dict[str, Any]:
        return {"axis": -1}


@dataclass(frozen=True)
class UpSampling2D(Layer):
    """Repeats rows and columns `size` times (nearest) or interpolates (bilinear)."""

    kind: ClassVar[str] = "UpSampling2D"
    size: Pair = (2, 2)
    interpolation: str = "nearest"

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = _spatial(shape, self.kind)
        return (h * self.size[0], w * self.size[1], c)


@dataclass(frozen=True)
class Conv2DTranspose(Layer):
    """A transposed convolution; with `same` padding its output is the input times the strides."""

    kind: ClassVar[str] = "Conv2DTranspose"
    filters: int = 1
    kernel_size: Pair = (3, 3)
    strides: Pair = (1, 1)
    padding: str = "same"
    use_bias: bool = True

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = _spatial(shape, self.kind)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        if self.padding == "same":
            return (h * sh, w * sw, self.filters)
        return ((h - 1) * sh + kh, (w - 1) * sw + kw, self.filters)

    def weights(self, shape: Shape) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return (kh * kw * shape[-1] * self.filters + (self.filters if self.use_bias else 0), 0)


def _aligned(shapes: list[Shape], verb: str, source: str, tap: str, factor: int = 2) -> None:
    """A decoder's merge of a tensor upsampled `factor` times (first) with a tap's (second): the
    same size, or `DoesNotFit(misaligned=True)` saying which tensors met, and from where."""
    (h, w, _), (th, tw, _) = shapes[0], shapes[1]
    if (h, w) != (th, tw):
        raise DoesNotFit(f"{verb} {h}x{w} ({source} {h // factor}x{w // factor} upsampled) "
                         f"{'with' if verb == 'joins' else 'to'} {th}x{tw} from {tap}", misaligned=True)


@dataclass(frozen=True)
class SkipConcatenate(Concatenate):
    """A decoder's join of an upsampled tensor (`inputs[0]`) with a backbone tap (`inputs[1]`)."""

    not_keras: ClassVar[tuple[str, ...]] = ("source", "factor", "tap")
    source: str = ""  # the layer whose output was upsampled
    factor: int = 2  # how many times
    tap: str = ""  # the backbone layer behind `inputs[1]` (default: `inputs[1]` itself)

    def output_shape(self, shapes: list[Shape]) -> Shape:  # type: ignore[override]
        _aligned(shapes, "joins", self.source, self.tap or self.inputs[1], self.factor)
        return super().output_shape(shapes)


@dataclass(frozen=True)
class SkipAdd(Add):
    """A pyramid's sum of an upsampled tensor (`inputs[0]`) and a tap's projection (`inputs[1]`)."""

    not_keras: ClassVar[tuple[str, ...]] = ("source", "tap")
    source: str = ""  # the layer whose output was upsampled
    tap: str = ""  # the backbone layer the projection reads

    def output_shape(self, shapes: list[Shape]) -> Shape:  # type: ignore[override]
        _aligned(shapes, "adds", self.source, self.tap)
        return super().output_shape(shapes)


@dataclass(frozen=True)
class SpatialDropout2D(Layer):
    kind: ClassVar[str] = "SpatialDropout2D"
    rate: float = 0.5


# --- layers that keras.applications defines itself ------------------------------------------


@dataclass(frozen=True)
class LayerScale(Layer):
    """ConvNeXt's learned per-channel scale `x * gamma`."""

    kind: ClassVar[str] = "LayerScale"
    init_values: float = 1e-6
    projection_dim: int = 1

    def weights(self, shape: Shape) -> tuple[int, int]:
        return (self.projection_dim, 0)

    def keras_layer(self, shape: Shape):
        from keras.src.applications.convnext import LayerScale as KerasLayerScale

        return KerasLayerScale(self.init_values, self.projection_dim, name=self.name)


@dataclass(frozen=True)
class CustomScaleLayer(Add):
    """InceptionResNetV2's residual `inputs[0] + inputs[1] * scale` (shapes as for Add)."""

    kind: ClassVar[str] = "CustomScaleLayer"
    scale: float = 1.0

    def keras_layer(self, shape: Shape):
        from keras.src.applications.inception_resnet_v2 import CustomScaleLayer as KerasScale

        return KerasScale(self.scale, name=self.name)


@dataclass(frozen=True)
class Sequential(Layer):
    """A `keras.Sequential` used as one layer of a functional model (ConvNeXt's stem and
    downsampling blocks): one index, its inner layers' shapes and weights."""

    kind: ClassVar[str] = "Sequential"
    layers: tuple[Layer, ...] = ()

    def _shapes(self, shape: Shape) -> list[Shape]:
        shapes = [shape]
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
        return shapes

    def output_shape(self, shape: Shape) -> Shape:
        return self._shapes(shape)[-1]

    def weights(self, shape: Shape) -> tuple[int, int]:
        pairs = [layer.weights(s) for layer, s in zip(self.layers, self._shapes(shape))]
        return (sum(p[0] for p in pairs), sum(p[1] for p in pairs))

    def keras_layer(self, shape: Shape):
        import keras

        inner, shapes = [], self._shapes(shape)
        for layer, s in zip(self.layers, shapes):
            inner.append(layer.keras_layer(s))
        return keras.Sequential(inner, name=self.name)


# --- tensor operations between layers (no freeze index) --------------------------------------


@dataclass(frozen=True)
class Sum(Add):
    """`a + b` on two tensors (ConvNeXt's residual): `keras.ops.add`, not a layer."""

    kind: ClassVar[str] = "add"
    is_operation: ClassVar[bool] = True

    def keras_layer(self, shape: Shape):
        import keras

        return lambda tensors: keras.ops.add(*tensors)


@dataclass(frozen=True)
class Affine(Layer):
    """`x * scale + offset` with Python numbers (MobileNetV3's hard sigmoid: `relu6(x + 3) / 6`):
    Keras records the `+` and the `*` as operations, not layers."""

    kind: ClassVar[str] = "affine"
    is_operation: ClassVar[bool] = True
    scale: float = 1.0
    offset: float = 0.0

    def keras_layer(self, shape: Shape):
        return lambda x: x * self.scale + self.offset
