"""Load pretrained weights into a backbone: ImageNet through keras.applications, or a file by
layer name, so one spec's trained model feeds the next; either adapted to the input's channels.

Keras 3's `load_weights(by_name=True)` only reads legacy `.h5` files, so for a `.keras` model
we load it (safe mode: no lambda deserialisation) and copy `get_weights()` layer by layer.

Channels (the contract's rule, as timm's `adapt_input_conv`): weights made for 3 channels go
onto an input of C channels by adapting the layer that reads the image: for C = 1 its kernel is
summed over RGB, otherwise the RGB kernel is repeated to C channels and scaled by 3/C, so the
layer's response to a gray image keeps its scale (exactly, for C = 1 or a multiple of 3). Per-channel input statistics (EfficientNet's
Normalization) become their mean over RGB; a per-channel Rescaling before the first convolution
(EfficientNet's ImageNet-only one) is folded into the adapted kernel.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np


LOC = ("backbone", "weights")


def load_backbone_weights(backbone: Any, spec: Any, *, safe_mode: bool = True) -> str | None:
    """Give `backbone` the weights `spec.backbone.weights` names; returns a note when they had to
    be adapted to the input's channels (None otherwise)."""
    weights = spec.backbone.weights
    channels = spec.input.hwc[2]
    if weights == "imagenet":
        if channels == 3:
            return None  # keras.applications loaded them while building
        twin = _imagenet_twin(spec)
        return _copy_by_name(backbone, twin, "the ImageNet weights", spec)
    if spec.backbone.weights_file:
        path, sha256 = spec.backbone.weights_file
        return load_by_name(backbone, path, spec, safe_mode=safe_mode, sha256=sha256)
    return None


def _imagenet_twin(spec: Any):
    """The same backbone at 3 channels with ImageNet weights, through keras.applications' own
    loading (its cache, its download and tlc's offline message); layers are matched by name, so
    an `output:` cut needs no twin of its own."""
    from tlc.plan.graph import fresh_layer_names

    h, w, _ = spec.input.hwc
    with fresh_layer_names():
        return spec.backbone.build((h, w, 3))


def load_by_name(backbone: Any, path: str, spec: Any, *, safe_mode: bool = True,
                 sha256: str | None = None) -> str | None:
    """Copy weights from `path` into every weighted layer of `backbone` (a note when adapted).

    With `sha256`, the file's checksum is verified before anything in it is read.
    """
    loc = LOC + ("path",) if sha256 else LOC
    if not os.path.isfile(path):
        raise spec.error(loc, f"file not found: {path}")
    if sha256:
        actual = file_sha256(path)
        if actual != sha256:
            raise spec.error(LOC + ("sha256",), f"{path} has sha256 {actual}, not the expected {sha256}; "
                                                 "refusing to load it")
    if path.endswith(".keras"):
        from .loading import ModelLoadError, load_model

        try:
            source = load_model(path, safe_mode=safe_mode)
        except ModelLoadError as exc:
            raise spec.error(LOC, f"cannot load {path}: {exc.reason}") from None
        return _copy_by_name(backbone, source, path, spec)
    if path.endswith((".h5", ".hdf5")) and not path.endswith(".weights.h5"):
        _load(lambda: backbone.load_weights(path, by_name=True), path, spec)
    elif path.endswith(".weights.h5"):
        _load(lambda: backbone.load_weights(path), path, spec)
    else:
        raise spec.error(LOC, f"expected a .keras model or a .weights.h5 / .h5 file, got {path}")
    return None


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(action, path: str, spec: Any) -> None:
    from tlc.errors import one_line

    try:
        action()
    except Exception as exc:
        raise spec.error(LOC, f"cannot load weights from {path}: {one_line(exc)}") from None


def _copy_by_name(backbone: Any, source: Any, what: str, spec: Any) -> str | None:
    channels = spec.input.hwc[2]
    available = {layer.name: layer for layer in _all_layers(source)}
    scale = _input_rescaling(source, {layer.name for layer in backbone.layers})
    adapted, missing = [], []
    for layer in backbone.layers:
        if not layer.weights:
            continue
        donor = available.get(layer.name)
        if donor is None or not donor.weights:
            missing.append(layer.name)
            continue
        values = donor.get_weights()
        mine = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != mine:
            changed = _adapt(type(layer).__name__, values, mine, channels, scale)
            if changed is None:
                theirs = [tuple(v.shape) for v in values]
                raise spec.error(LOC, f"layer {layer.name!r}: weights in {what} have shapes {theirs}, "
                                      f"the backbone needs {mine} (different input channels or filters?)")
            values = changed
            adapted.append(layer.name)
        layer.set_weights(values)
    if missing:
        raise spec.error(LOC, f"{what} has no weights for backbone layer(s) {', '.join(missing)}; "
                              "weights are matched by layer name")
    if not adapted:
        return None
    how = "summed over RGB" if channels == 1 else f"repeated over the channels and scaled by 3/{channels}"
    return (f"weights: {what} were made for 3 input channels; adapted to {channels}: "
            f"{', '.join(adapted)} (kernels {how}; per-channel statistics averaged over RGB)")


def _adapt(kind: str, values: list, shapes: list, channels: int, scale) -> list | None:
    """Weights for 3 input channels made to fit `shapes` (C input channels), or None when the
    mismatch is not one of input channels."""
    if kind == "Normalization" and all(v.size in (1, 3) for v in values):  # mean, variance, count
        return [np.full(s, v.mean(), v.dtype) if v.size == 3 else v.reshape(s) for v, s in zip(values, shapes)]
    kernel, rest = values[0], values[1:]
    expected = (*kernel.shape[:2], channels, kernel.shape[3]) if kernel.ndim == 4 else None
    if kernel.ndim != 4 or kernel.shape[2] != 3 or tuple(shapes[0]) != expected \
            or [tuple(v.shape) for v in rest] != [tuple(s) for s in shapes[1:]]:
        return None
    if scale is not None:
        kernel = kernel * np.asarray(scale, kernel.dtype)[None, None, :, None]
    return [adapt_kernel(kernel, channels), *rest]


def adapt_kernel(kernel: np.ndarray, channels: int) -> np.ndarray:
    """A (kh, kw, 3, filters) kernel for `channels` inputs (timm's `adapt_input_conv`)."""
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeats = -(-channels // 3)
    return np.tile(kernel, (1, 1, repeats, 1))[:, :, :channels, :] * (3.0 / channels)


def _input_rescaling(source: Any, kept: set[str]):
    """The per-channel scale of a Rescaling layer that the source applies to its input and the
    adapted backbone does not have (EfficientNet's ImageNet-only one), or None."""
    for layer in _all_layers(source):
        scale = getattr(layer, "scale", None)
        if type(layer).__name__ == "Rescaling" and layer.name not in kept and isinstance(scale, (list, tuple)) \
                and len(scale) == 3:
            return scale
    return None


def _all_layers(model: Any):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _all_layers(layer)
