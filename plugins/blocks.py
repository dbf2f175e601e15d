"""Blocks the keras.applications families share, as static descriptions: each function adds
the layers Keras's own helper creates (same names, same order) to a `Graph` and returns the
name of its output. A third-party family describes itself with the same blocks."""
from __future__ import annotations

from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, Add, BatchNormalization, Conv2D, Dense, DepthwiseConv2D, Dropout, GlobalPooling2D, \
    Multiply, Pooling2D, Reshape, ZeroPadding2D


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


def round_filters(filters: float, width: float = 1.0, divisor: int = 8, within_90_percent: bool = True) -> int:
    """Channels scaled by `width`, rounded to a multiple of `divisor` (MobileNet's
    `_make_divisible`, EfficientNet's `round_filters`); `within_90_percent` adds a step when
    rounding lost more than a tenth (every family but EfficientNetV2 does)."""
    v = filters * width
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return int(new + divisor if within_90_percent and new < 0.9 * v else new)


def squeeze_excite(g: Graph, x: str, name: str, filters: int, reduced: int) -> str:
    """EfficientNet's squeeze-and-excite: pooled, reduced (swish), expanded (sigmoid), multiplied."""
    se = g(GlobalPooling2D(f"{name}se_squeeze", mode="avg"), x)
    se = g(Reshape(f"{name}se_reshape", target_shape=(1, 1, filters)), se)
    se = g(pointwise(f"{name}se_reduce", max(1, reduced), bias=True, activation="swish"), se)
    se = g(pointwise(f"{name}se_expand", filters, bias=True, activation="sigmoid"), se)
    return g(Multiply(f"{name}se_excite"), x, se)


def mbconv(g: Graph, inputs: str, name: str, f_in: int, f_out: int, kernel: int, strides: int, expand: int,
           se_ratio: float, drop_rate: float, *, fused: bool = False, depthwise: str = "dwconv",
           pad_strided: bool = True) -> str:
    """The inverted-residual block of EfficientNet (MBConv) and EfficientNetV2 (MBConv and
    fused-MBConv): expand, depthwise (fused: one full convolution instead), squeeze-and-excite,
    project, and with the same shape in and out a residual (after dropout). `depthwise` names the
    depthwise layer (`dwconv` in V1, `dwconv2` in V2); `pad_strided` pads a strided depthwise
    convolution explicitly (V1) instead of padding it `same` (V2)."""
    filters, x = f_in * expand, inputs
    if expand != 1:
        x = g(conv(f"{name}expand_conv", filters, kernel if fused else 1, strides if fused else 1,
                   padding="same", bias=False), x)
        x = g(BatchNormalization(f"{name}expand_bn"), x)
        x = g(Activation(f"{name}expand_activation", activation="swish"), x)
    if not fused:
        padded = pad_strided and strides == 2
        if padded:
            x = g(ZeroPadding2D(f"{name}{depthwise}_pad", correct_for=kernel), x)
        x = g(DepthwiseConv2D(f"{name}{depthwise}", kernel_size=(kernel, kernel), strides=(strides, strides),
                              padding="valid" if padded else "same", use_bias=False), x)
        x = g(BatchNormalization(f"{name}bn"), x)
        x = g(Activation(f"{name}activation", activation="swish"), x)
    if 0 < se_ratio <= 1:
        x = squeeze_excite(g, x, name, filters, int(f_in * se_ratio))
    project_here = fused and expand == 1  # the fused block without expansion convolves in its projection
    x = g(conv(f"{name}project_conv", f_out, kernel if project_here else 1, strides if project_here else 1,
               padding="same", bias=False), x)
    x = g(BatchNormalization(f"{name}project_bn"), x)
    if project_here:
        x = g(Activation(f"{name}project_activation", activation="swish"), x)
    if strides == 1 and f_in == f_out:
        if drop_rate > 0:
            x = g(Dropout(f"{name}drop", rate=drop_rate), x)
        x = g(Add(f"{name}add"), x, inputs)
    return x
