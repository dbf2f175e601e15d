"""`tlc.Backbone` and `tlc.Head`: the pydantic base classes that built-ins and plugins extend.

A subclass adds `type: Literal["name"]` and its own fields; validation is strict (unknown keys
are errors). It either describes its layers statically (`layers`, fast and TensorFlow-free)
or only implements `build` (Keras), in which case tlc plans it by building it symbolically.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Callable, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tlc.plan.layers import Layer, Shape

from .fields import by_kind


class StrictModel(BaseModel):
    """Pydantic model that refuses unknown keys: a typo in a spec must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class _Typed(StrictModel):
    """A component named by its `type`. Subclasses write `type: Literal["name"] = "name"`; that
    field gets its schema description here (editors show it), unless the subclass wrote one."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("type")
        if field is not None and field.description is None:
            what = "backbone" if issubclass(cls, Backbone) else "head"
            field.description = f"the {what} type: {field.default}" + (f" ({cls.__doc__.splitlines()[0]})"
                                                                       if cls.__doc__ else "")


    def unused_fields(self) -> set[str]:
        """Fields whose value changes nothing as this component is configured (the dense head's
        dropout without hidden layers): `tlc tune` warns when its space searches one."""
        return set()


class WeightsFile(StrictModel):
    """`weights: {path: ..., sha256: ...}`: a weights file whose checksum is verified before loading."""

    path: Annotated[str, Field(min_length=1)] = Field(description="a .keras model or a weights file")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] = Field(
        description="the file's expected SHA-256; a different file is refused before it is read")


class Backbone(_Typed):
    """A feature extractor: from an input image to a feature map.

    `weights`: null, `imagenet` (only if the backbone supports it) or a path to a `.keras` model
    or a weights file, loaded by layer name by tlc. `output`: cut after this layer (name or index).
    """

    type: str = Field(description="the backbone type (`tlc plugins` lists them)")
    weights: Optional[by_kind("null, imagenet, a path, or {path, sha256}",  # noqa: UP007
                              str=Annotated[str, Field(min_length=1)], map=WeightsFile)] = Field(
        None, description="null (random), imagenet, or a .keras model / weights file loaded by layer name; "
                          "3-channel weights adapt to other channel counts")
    output: Optional[by_kind("a layer name or index",  # noqa: UP007
                             str=Annotated[str, Field(min_length=1)],
                             int=Annotated[int, Field(strict=True, ge=0)])] = Field(
        None, description="cut the backbone after this layer (a name or an index)")

    supports_imagenet: ClassVar[bool] = False

    @field_validator("weights")
    @classmethod
    def _imagenet_only_if_supported(cls, value: str | None) -> str | None:
        if value == "imagenet" and not cls.supports_imagenet:
            raise ValueError("this backbone has no imagenet weights; use null or a path to a model")
        return value

    @property
    def weights_file(self) -> tuple[str, str | None] | None:
        """(path, expected sha256 or None) when weights come from a file; None otherwise."""
        if isinstance(self.weights, WeightsFile):
            return self.weights.path, self.weights.sha256.lower()
        if self.weights in (None, "imagenet"):
            return None
        return self.weights, None

    def layers(self, input_shape: Shape) -> list[Layer] | None:
        """Static description: `[tlc.layers.Input(...), ...]`, or None to be planned by building."""
        return None

    def build(self, input_shape: Shape) -> Any:
        """A `keras.Model` from an Input named `input` to the feature map.

        The default builds the static `layers` (a chain or a graph); backbones without them must
        override this.
        """
        from tlc.plan.graph import build

        described = self.layers(input_shape)
        if described is None:
            raise NotImplementedError(f"{type(self).__name__} has neither layers() nor build()")
        return build(described, input_shape)

    def preprocess(self, images: Any) -> Any:
        """Images scaled to [0, 1] -> what the network expects. Identity by default."""
        return images


class Head(_Typed):
    """What sits on the backbone's output: a classifier, or nothing (`none`)."""

    type: str = Field(description="the head type (`tlc plugins` lists them)")

    def layers(self, feature_shape: Shape) -> list[Layer] | None:
        """Static description of the head's layers, or None to be planned by building."""
        return None

    def build(self, x: Any) -> Any:
        """Takes the backbone's output tensor, returns the model's output tensor: the described
        layers, chained or wired by their `inputs` (`HEAD_INPUT` names the backbone's output)."""
        from tlc.plan.graph import HEAD_INPUT, head_graph

        described = self.layers(tuple(x.shape[1:]))
        if described is None:
            raise NotImplementedError(f"{type(self).__name__} has neither layers() nor build()")
        ordered, inputs = head_graph(described)
        if not ordered:
            return x
        tensors = {HEAD_INPUT: x}
        for layer in described:
            sources = [tensors[name] for name in inputs[layer.name]]
            shape = tuple(int(d) for d in sources[0].shape[1:])
            tensors[layer.name] = layer.keras_layer(shape)(sources if layer.merges else sources[0])
        return tensors[ordered[-1].name]


@dataclass(frozen=True)
class DataSource:
    """A `train.data.type`: one row of the data-source registry (built-ins and plugins alike).

    `read(data, spec)` returns `(examples, class names)` (optionally a third item, {suffix: count}
    of files found but not read): `tlc.data.Examples(labels, files=...)` for image files (streamed,
    decoded once into the decoded-image store, held-out files recorded by path) or
    `Examples(labels, images=...)` for images in [0, 1] (n, h, w, c), fitted to the input by tlc.
    With `needs_path`, `train.data.path` must name an existing file or folder, checked before
    TensorFlow loads; `data.path` arrives resolved against the spec's folder. `spec.error(("train",
    "data", "path"), message)` gives a located error."""

    name: str
    read: Callable[[Any, Any], tuple]
    description: str = ""
    needs_path: bool = False
    files: bool = False  # gives image files (a file list), not images in memory

