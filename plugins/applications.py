"""What every keras.applications backbone shares: `include_top`/`classes`, Keras's input rules,
ImageNet weights (with a clear offline error naming the file), preprocessing, and a build through
`keras.applications` itself. Each family describes its layers statically (`describe`), so `check`
and `summarize` never import TensorFlow; a test holds every description equal to Keras's model.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from tlc.plugin.components import Backbone
from tlc.errors import FieldError, RunError
from tlc.plugin.fields import Count
from tlc.plan.layers import Input, Layer, Shape

from tlc.plugin.zoo import MODELS, Pretrained


class Application(Backbone):
    """A keras.applications model without (or with) its classifier top."""

    include_top: bool = Field(False, description="keep Keras's ImageNet classifier top (then head: {type: none})")
    classes: Count = Field(1000, description="classes of the top (only with include_top)")

    supports_imagenet = True
    row: ClassVar[Pretrained]  # the model's row in `tlc.plugins.zoo.MODELS`
    keras_function: ClassVar[str]  # e.g. "ResNet50": keras.applications.ResNet50
    preprocess_mode: ClassVar[str]  # keras.applications.imagenet_utils mode: caffe | tf | torch | none
    default_size: ClassVar[int] = 224  # the only input size Keras accepts with imagenet weights and the top
    min_size: ClassVar[int] = 32
    top_sizes: ClassVar[tuple[int, ...] | None] = None  # ImageNet sizes with the top (None: default_size; (): any)

    @model_validator(mode="after")
    def _keras_rules(self) -> Application:
        if "classes" in self.model_fields_set and not self.include_top and self.classes != 1000:
            raise ValueError("classes is only used with include_top: true")  # (1000: a resolved spec.lock.yaml)
        if self.weights == "imagenet" and self.include_top and self.classes != 1000:
            raise ValueError("with weights: imagenet and include_top: true, classes must be 1000")
        return self

    def describe(self, channels: int = 3) -> list[Layer]:
        """The layers as Keras creates them for an input of `channels` (a graph: each names its
        inputs), Input first."""
        raise NotImplementedError

    def keras_weights(self, channels: int) -> str | None:
        """What the keras.applications function is given: ImageNet weights load there only onto
        3 channels; for others tlc adapts them afterwards (`tlc.weights`), onto a model Keras
        builds without weights (its layers are those of `weights=None`)."""
        return "imagenet" if self.weights == "imagenet" and channels == 3 else None

    def keras_arguments(self) -> dict[str, Any]:
        """Extra arguments of the keras.applications function (e.g. MobileNetV2's alpha)."""
        return {}

    def layers(self, input_shape: Shape) -> list[Layer]:
        sizes = (self.default_size,) if self.top_sizes is None else self.top_sizes
        if self.weights == "imagenet" and self.include_top and sizes and \
                tuple(input_shape) not in {(s, s, 3) for s in sizes}:
            need = " or ".join(f"[{s}, {s}, 3]" for s in sizes)
            raise FieldError(("input", "shape"), f"{self.type} with include_top and imagenet weights needs input {need}")
        return _described(self, input_shape[2])

    def input_layer(self) -> Input:
        return Input("input", min_size=(self.min_size, self.min_size),
                     why=f" (Keras's {self.keras_function} minimum)")

    def build(self, input_shape: Shape):
        import keras

        inputs = keras.Input(shape=tuple(input_shape), name="input")
        make = getattr(keras.applications, self.keras_function)
        weights = self.keras_weights(input_shape[2])
        with imagenet_download(self.type) if weights else contextlib.nullcontext():
            return make(include_top=self.include_top, weights=weights, input_tensor=inputs, classes=self.classes,
                        input_shape=tuple(input_shape), **self.keras_arguments())

    def preprocess(self, images):
        """Images in [0, 1] -> the family's `preprocess_input` of 0..255 images, whatever the
        weights: a model keeps one input convention when its weights move to another spec."""
        return preprocess(images, self.preprocess_mode)


class WidthMultiplied(Application):
    """A family with a width multiplier `alpha` (MobileNet, MobileNetV2), for some of whose
    values ImageNet weights exist."""

    alpha: Annotated[float, Field(gt=0, le=4)] = Field(1.0, description="the width multiplier")
    imagenet_alphas: ClassVar[tuple[float, ...]]

    @model_validator(mode="after")
    def _imagenet_alphas(self) -> WidthMultiplied:
        if self.weights == "imagenet" and self.alpha not in self.imagenet_alphas:
            raise ValueError(f"imagenet weights exist for alpha {', '.join(map(str, self.imagenet_alphas))}; "
                             f"received: {self.alpha}")
        return self

    def keras_arguments(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


def variants(family: type[Application]) -> list[type[Application]]:
    """The backbone types of `family`, one per row of the zoo table whose family is the module
    `family` is defined in: a variant is a row (its parameters become class attributes)."""
    module = family.__module__.rsplit(".", 1)[-1]
    out = []
    for row in MODELS:
        if row.family != module:
            continue
        namespace = {"__module__": family.__module__, "__qualname__": row.keras, "__doc__": family.__doc__,
                     "__annotations__": {"type": Literal[row.type]}, "type": row.type, "row": row,
                     "keras_function": row.keras, "preprocess_mode": row.preprocess, "default_size": row.size,
                     "min_size": row.min_size, **row.params}
        out.append(type(family)(row.keras, (family,), namespace))
    return out


#: keras.applications.imagenet_utils' constants: caffe subtracts BGR means from BGR 0..255
#: images; torch scales to [0, 1] and standardises with RGB means and deviations.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def preprocess(images, mode: str):
    """Keras's `preprocess_input(images * 255, mode)` for 3 channels, and for any other channel
    count the same with each per-channel constant replaced by its mean over RGB (the contract's
    channel rule), so a grayscale or multispectral input gets the family's scale and offset.
    Mode `none` (EfficientNet) hands 0..255 images to the model's own rescaling layers."""
    import numpy as np

    x = images * 255.0
    if mode == "none":
        return x
    if mode == "tf":
        return x / 127.5 - 1.0
    rgb = int(images.shape[-1]) == 3

    def constant(values):
        return np.asarray(values if rgb else [sum(values) / 3], dtype="float32")

    if mode == "caffe":
        return (x[..., ::-1] if rgb else x) - constant(CAFFE_MEAN_BGR)
    if mode == "torch":
        return (x / 255.0 - constant(TORCH_MEAN_RGB)) / constant(TORCH_STD_RGB)
    raise ValueError(f"unknown preprocessing mode {mode!r}")


@functools.lru_cache(maxsize=64)
def _described(backbone: Application, channels: int) -> tuple[Layer, ...]:
    """One description per configuration (planning asks at many input sizes)."""
    return tuple(backbone.describe(channels))


@contextlib.contextmanager
def imagenet_download(kind: str):
    """Keras downloads ImageNet weights itself; offline, say which file to put where."""
    from keras.src.utils import file_utils

    real, asked = file_utils.get_file, {}

    def get_file(fname=None, origin=None, *args, **kwargs):
        asked.update(fname=fname or os.path.basename(origin or ""), origin=origin)
        return real(fname, origin, *args, **kwargs)

    file_utils.get_file = get_file
    try:
        yield
    except Exception as exc:
        if "fname" not in asked:
            raise
        name, cache = asked["fname"], os.path.join(keras_home(), "models")
        raise RunError(
            f"weights: imagenet: could not download {name} ({type(exc).__name__}). "
            f"Without network access, copy {name} into {cache}/ (from {asked['origin']}) "
            f"and run again, or use weights: null or a path."
        ) from None
    finally:
        file_utils.get_file = real


def keras_home() -> str:
    try:  # where keras.utils.get_file really looks (KERAS_HOME, ~/.keras or /tmp/.keras)
        from keras.src.backend.config import keras_home as home

        return home()
    except ImportError:  # pragma: no cover - a future Keras moving its private module
        return os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
