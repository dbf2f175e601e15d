"""Blocks the keras.applications families share, as static descriptions: each function adds
the layers Keras's own helper creates (same names, same order) to a `Graph` and returns the
name of its output. A third-party family describes itself with the same blocks."""
from __future__ import annotations

from tlc.graph import Graph
from tlc.layers import Activation, BatchNormalization, Conv2D, Dense, GlobalPooling2D, Pooling2D, ZeroPadding2D


def conv(name: str, filters: int, kernel: int | tuple[int, int], stride: int = 1, padding: str = "valid",
         bias: bool = True, activation: str | None = None) -> Conv2D:
    k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    return Conv2D(name, filters=filters, kernel_size=k, strides=(stride, stride), padding=padding, use_bias=bias,
                  activation=activation)


def pointwise(name: str, filters: int, bias: bool = False, activation: str | None = None) -> Conv2D:
    """A same-padded 1x1 convolution."""
    return conv(name, filters, 1, padding="same", bias=bias, activation=activation)


def pool(name: str, size: int, stride: int, mode: str = "max", padding: str = "valid") -> Pooling2D:
    return Pooling2D(name, mode=mode, pool_size=(size, size), strides=(stride, stride), padding=padding)


def pad(name: str, p: int | tuple[tuple[int, int], tuple[int, int]]) -> ZeroPadding2D:
    return ZeroPadding2D(name, padding=((p, p), (p, p)) if isinstance(p, int) else p)


def classifier(g: Graph, x: str, classes: int, pooling: str = "avg_pool") -> str:
    """Keras's usual include_top: global average pooling, then a softmax Dense named predictions."""
    x = g(GlobalPooling2D(pooling, mode="avg"), x)
    return g(Dense("predictions", units=classes, activation="softmax"), x)


def conv_bn(g: Graph, x: str, filters: int, kernel: int | tuple[int, int], stride: int = 1,
            padding: str = "same", name: str | None = None, activation: str | None = "relu",
            bias: bool = False, scale: bool = False, suffixes: tuple[str, str] = ("_bn", "_ac")) -> str:
    """The Inception families' `conv2d_bn`: a bias-free convolution, a BatchNormalization
    without scale, a ReLU; unnamed layers get Keras's automatic names."""
    x = g(conv(name or g.auto("conv2d"), filters, kernel, stride, padding, bias=bias), x)
    if not bias:
        x = g(BatchNormalization(f"{name}{suffixes[0]}" if name else g.auto("batch_normalization"), scale=scale), x)
    if activation is not None:
        x = g(Activation(f"{name}{suffixes[1]}" if name else g.auto("activation"), activation=activation), x)
    return x


def make_divisible(v: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding (`_make_divisible` / `_depth`)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v
