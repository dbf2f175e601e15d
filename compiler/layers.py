"""Static layer descriptions: the one place that knows each layer's shape and parameter rules.

A built-in backbone or head describes itself as a list of these. The planner runs their
arithmetic (no TensorFlow); the emitter turns each into the Keras layer of the same name,
so what `tlc check` reports and what `tlc build` makes come from one description.
Keras is imported only inside `to_keras`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

Shape = tuple[int, ...]  # without the batch dimension
Pair = tuple[int, int]


class DoesNotFit(Exception):
    """Raised by `output_shape` when the incoming shape is too small or of the wrong rank.

    `need` is the (height, width) window a too-small input needed, for the message.
    """

    def __init__(self, message: str, need: Pair | None = None):
        super().__init__(message)
        self.need = need


def pair(value: int | tuple[int, int] | list[int]) -> Pair:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def format_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _spatial(shape: Shape, what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise DoesNotFit(f"needs a 3-D feature map (height, width, channels) for {what}")
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class Layer:
    """One Keras layer, described statically."""

    name: str
    kind: ClassVar[str] = "Layer"

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def weights(self, shape: Shape) -> tuple[int, int]:
        """(params that train when the layer trains, params that never train)."""
        return (0, 0)

    def to_keras(self):
        raise NotImplementedError


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


@dataclass(frozen=True)
class Conv2D(Layer):
    kind: ClassVar[str] = "Conv2D"
    filters: int = 1
    kernel_size: Pair = (3, 3)
    strides: Pair = (1, 1)
    padding: str = "valid"
    activation: str | None = None
    use_bias: bool = True

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = _spatial(shape, self.kind)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        if self.padding == "valid" and (h < kh or w < kw):
            raise DoesNotFit(f"needs at least {kh}x{kw}", (kh, kw))
        return (_window(h, kh, sh, self.padding), _window(w, kw, sw, self.padding), self.filters)

    def weights(self, shape: Shape) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return (kh * kw * shape[-1] * self.filters + (self.filters if self.use_bias else 0), 0)

    def to_keras(self):
        import keras

        return keras.layers.Conv2D(
            self.filters, self.kernel_size, strides=self.strides, padding=self.padding,
            activation=self.activation, use_bias=self.use_bias, name=self.name,
        )


@dataclass(frozen=True)
class BatchNormalization(Layer):
    kind: ClassVar[str] = "BatchNormalization"

    def weights(self, shape: Shape) -> tuple[int, int]:
        return (2 * shape[-1], 2 * shape[-1])  # gamma, beta | moving mean, moving variance

    def to_keras(self):
        import keras

        return keras.layers.BatchNormalization(name=self.name)


@dataclass(frozen=True)
class Activation(Layer):
    kind: ClassVar[str] = "Activation"
    activation: str = "relu"

    def to_keras(self):
        import keras

        return keras.layers.Activation(self.activation, name=self.name)


@dataclass(frozen=True)
class Pooling2D(Layer):
    """MaxPooling2D or AveragePooling2D with strides = pool_size and valid padding."""

    mode: str = "max"
    pool_size: Pair = (2, 2)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "MaxPooling2D" if self.mode == "max" else "AveragePooling2D"

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = _spatial(shape, self.kind)
        ph, pw = self.pool_size
        if h < ph or w < pw:
            raise DoesNotFit(f"needs at least {ph}x{pw}", (ph, pw))
        return (h // ph, w // pw, c)

    def to_keras(self):
        import keras

        cls = keras.layers.MaxPooling2D if self.mode == "max" else keras.layers.AveragePooling2D
        return cls(pool_size=self.pool_size, strides=self.pool_size, padding="valid", name=self.name)


@dataclass(frozen=True)
class GlobalPooling2D(Layer):
    mode: str = "avg"

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "GlobalAveragePooling2D" if self.mode == "avg" else "GlobalMaxPooling2D"

    def output_shape(self, shape: Shape) -> Shape:
        return (_spatial(shape, self.kind)[2],)

    def to_keras(self):
        import keras

        cls = keras.layers.GlobalAveragePooling2D if self.mode == "avg" else keras.layers.GlobalMaxPooling2D
        return cls(name=self.name)


@dataclass(frozen=True)
class Dropout(Layer):
    kind: ClassVar[str] = "Dropout"
    rate: float = 0.5

    def to_keras(self):
        import keras

        return keras.layers.Dropout(self.rate, name=self.name)


@dataclass(frozen=True)
class Flatten(Layer):
    kind: ClassVar[str] = "Flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def to_keras(self):
        import keras

        return keras.layers.Flatten(name=self.name)


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

    def to_keras(self):
        import keras

        return keras.layers.Dense(self.units, activation=self.activation, name=self.name)
