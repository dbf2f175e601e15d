"""Load weights into a backbone by layer name, so one spec's trained model feeds the next.

Keras 3's `load_weights(by_name=True)` only reads legacy `.h5` files, so for a `.keras` model
we load it (safe mode: no lambda deserialisation) and copy `get_weights()` layer by layer.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

from .errors import one_line


LOC = ("backbone", "weights")


def load_by_name(backbone: Any, path: str, spec: Any, *, safe_mode: bool = True, sha256: str | None = None) -> int:
    """Copy weights from `path` into every weighted layer of `backbone`; returns how many.

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
        source = _load_model(path, spec, safe_mode)
        return _copy_by_name(backbone, source, path, spec)
    if path.endswith((".h5", ".hdf5")) and not path.endswith(".weights.h5"):
        _load(lambda: backbone.load_weights(path, by_name=True), path, spec)
    elif path.endswith(".weights.h5"):
        _load(lambda: backbone.load_weights(path), path, spec)
    else:
        raise spec.error(LOC, f"expected a .keras model or a .weights.h5 / .h5 file, got {path}")
    return sum(1 for layer in backbone.layers if layer.weights)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_model(path: str, spec: Any, safe_mode: bool):
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:
        hint = " (it contains code; pass --unsafe only if you trust it)" if "safe_mode" in str(exc) else ""
        raise spec.error(LOC, f"cannot load {path}: {one_line(exc)}{hint}") from None


def _load(action, path: str, spec: Any) -> None:
    try:
        action()
    except Exception as exc:
        raise spec.error(LOC, f"cannot load weights from {path}: {one_line(exc)}") from None


def _copy_by_name(backbone: Any, source: Any, path: str, spec: Any) -> int:
    available = {layer.name: layer for layer in _all_layers(source)}
    copied, missing = 0, []
    for layer in backbone.layers:
        if not layer.weights:
            continue
        donor = available.get(layer.name)
        if donor is None or not donor.weights:
            missing.append(layer.name)
            continue
        values = donor.get_weights()
        mine = [tuple(w.shape) for w in layer.weights]
        theirs = [tuple(v.shape) for v in values]
        if mine != theirs:
            raise spec.error(LOC, f"layer {layer.name!r}: weights in {path} have shapes {theirs}, "
                                  f"the backbone needs {mine} (different input channels or filters?)")
        layer.set_weights(values)
        copied += 1
    if missing:
        raise spec.error(LOC, f"{path} has no weights for backbone layer(s) {', '.join(missing)}; "
                              "weights are matched by layer name")
    return copied


def _all_layers(model: Any):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _all_layers(layer)
