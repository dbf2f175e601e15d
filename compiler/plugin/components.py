"""`tlc.Backbone` and `tlc.Head`: the pydantic base classes that built-ins and plugins extend.

A subclass adds `type: Literal["name"]` and its own fields; validation is strict (unknown keys
are errors). It either describes its layers statically (`layers`, fast and TensorFlow-free)
or only implements `build` (Keras), in which case tlc plans it by building it symbolically.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Callable, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tlc.plan.graph import BackboneMap
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
            what = "backbone" if issubclass(cls, Backbone) else "head" if issubclass(cls, Head) else "task"
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


#: The tasks a head serves unless it says otherwise (`Head.tasks`).
IMAGE_TASKS = ("classification", "multi_label", "regression")


class Head(_Typed):
    """What sits on the backbone's output: a classifier, or nothing (`none`).

    `tasks` names the tasks (section 9 of the contract) whose outputs it can give; a spec pairing
    it with another is a located error of `tlc check`."""

    type: str = Field(description="the head type (`tlc plugins` lists them)")

    tasks: ClassVar[tuple[str, ...]] = IMAGE_TASKS

    @classmethod
    def serves(cls, task) -> bool:
        """Whether the head gives what `task` needs: a task it names, or a plugin's subclass of one
        (a `count` task derived from `regression` takes the heads regression takes)."""
        return any(getattr(getattr(kind, "model_fields", {}).get("type"), "default", None) in cls.tasks
                   for kind in type(task).__mro__)

    def layers(self, feature_shape: Shape) -> list[Layer] | None:
        """Static description of the head's layers, or None to be planned by building."""
        return None

    def layers_over(self, backbone: BackboneMap) -> list[Layer] | None:
        """The head's layers over the whole planned backbone: a decoder's layers name backbone
        layers (its taps) in `inputs`. By default `layers(backbone.shape)`."""
        return self.layers(backbone.shape)

    @classmethod
    def backbone_defaults(cls, head: dict, backbone_type: str | None) -> dict:
        """Backbone keys this head decides when the spec leaves them out, from the head's mapping
        as written (PSPNet's cut at its downsample factor). Nothing by default."""
        return {}

    def input_period(self, stride: int) -> int | None:
        """For a head that gives a map per pixel: the inputs it fits are multiples of this (the
        backbone's output `stride` for a decoder), and `check` names the nearest ones. None: any
        input the backbone takes."""
        return None

    def build_over(self, model: Any, backbone: BackboneMap) -> Any:
        """The model's output tensor on a built backbone `model` (planned as `backbone`): the
        layers `layers_over` describes, fed the backbone's output and the tensors of the layers
        they name; a head without a description builds on the output alone (`build`)."""
        described = self.layers_over(backbone)
        if described is None:
            return self.build(model.output)
        taps = {name: model.get_layer(name).output for layer in described for name in layer.inputs
                if name in set(backbone.names)}
        return self.build(model.output, taps, described)

    def build(self, x: Any, taps: dict | None = None, described: list[Layer] | None = None) -> Any:
        """Takes the backbone's output tensor (and the tensors of the backbone layers the head
        taps), returns the model's output tensor: the described layers, chained or wired by their
        `inputs` (`HEAD_INPUT` names the backbone's output)."""
        from tlc.plan.graph import HEAD_INPUT, head_graph

        described = described if described is not None else self.layers(tuple(x.shape[1:]))
        if described is None:
            raise NotImplementedError(f"{type(self).__name__} has neither layers() nor build()")
        ordered, inputs = head_graph(described, list(taps or {}))
        if not ordered:
            return x
        tensors = {HEAD_INPUT: x, **(taps or {})}
        for layer in described:
            sources = [tensors[name] for name in inputs[layer.name]]
            shape = tuple(int(d) for d in sources[0].shape[1:])
            tensors[layer.name] = layer.keras_layer(shape)(sources if layer.merges else sources[0])
        return tensors[ordered[-1].name]


class Task(_Typed):
    """What a model is asked about each image, and everything that follows from it: how targets
    are read and split, the loss and the metrics, how outputs are finished (softmax, sigmoid,
    de-standardised values), what `evaluate` reports and what `predict` and `serve` answer.

    A spec's `task:` (a name, or a mapping with the task's own fields) validates into one. The
    built-ins (`classification`, `multi_label`, `regression`) register through `tlc_tasks` as a
    plugin's do. A run remembers what its task learnt from the data besides the weights (tuned
    thresholds, the targets' mean and deviation) as a JSON-able `record` (metrics.json `task`),
    and every method that needs it takes it. Arrays are NumPy; Keras is imported inside methods.
    """

    type: str = Field(description="the task type (`tlc plugins` lists them)")

    #: the history's metric names (Keras's, validation's with `val_`); the first is the one that
    #: plots, tunes and decides a run's quality, `higher` says which way is better
    metrics: ClassVar[tuple[str, ...]] = ()
    higher: ClassVar[dict[str, bool]] = {}
    #: the output activations a head may end in (the first is the default)
    activations: ClassVar[tuple[str, ...]] = ("softmax", "sigmoid", "linear")
    #: what one output is called, one and several ("class", "classes"; "tag"; "target")
    noun: ClassVar[tuple[str, str]] = ("class", "classes")
    #: an unlabeled image's target (distillation's extra images, taught by the teacher alone)
    no_label: ClassVar[float] = -1
    #: evaluate's grid of the examples `worst` picks: its file in the run folder, its title, and
    #: what its Grad-CAM shows
    worst_figure: ClassVar[str] = "misclassified.png"
    worst_title: ClassVar[str] = "misclassified"
    worst_heat: ClassVar[str] = "the predicted class"

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @classmethod
    def head_defaults(cls, raw: dict) -> dict:
        """Fields a head that has them takes from this task when the spec leaves them out (the
        output activation; a regression's unit count), from the task's raw mapping."""
        return {"output_activation": cls.activations[0]}

    def outputs(self, names: list[str]) -> int:
        """How many numbers the model gives per image (per pixel) for these class (tag, target) names."""
        return len(names)

    def output_shape(self, names: list[str], spec) -> tuple:
        """The model's output shape (without the batch) for these names."""
        return (self.outputs(names),)

    # reading and splitting targets -------------------------------------------------------------
    def from_classes(self, labels, names: list[str], spec) -> tuple[Any, list[str]]:
        """Targets from a source of one class per image (a folder per class, digits)."""
        raise spec.error(("train", "data", "type"), f"{spec.train.data.type} gives one class per image; "
                                                    f"the {self.type} task reads csv or npz")

    def columns(self, spec) -> list[str]:
        """The csv columns this task reads besides `path` (named in the errors of a csv without them)."""
        return []

    def from_columns(self, rows: list[tuple[dict, int]], columns: list[str], spec,
                     where: str) -> tuple[Any, list[str], list[str]]:
        """(targets, names, located warnings) from a csv file's rows (({column: text}, line) pairs)
        and its header's `columns`."""
        raise NotImplementedError

    def from_array(self, y, spec, where: str) -> tuple[Any, list[str]]:
        """Targets from an npz file's `y`."""
        raise NotImplementedError

    def split(self, targets, validation: float, test: float, seed: int) -> tuple:
        """(train, validation, test) sorted index arrays, seeded, keeping the targets' spread."""
        raise NotImplementedError

    def split_warnings(self, spec, targets, parts: dict) -> list[str]:
        """A located warning for each split the spec asks for (`validation_split`, `test_split`
        above 0) that came out empty: never silent."""
        return [str(spec.error(("train", "data", key), f"{getattr(spec.train.data, key)} gives no "
                                                       f"{key.split('_')[0]} examples of {len(targets)}; add examples "
                                                       f"or raise {key}"))
                for key, indices in parts.items() if getattr(spec.train.data, key) > 0 and not len(indices)]

    def aligned(self, targets, names: list[str], known: list[str]):
        """Another source's targets in the order of a run's `known` names (`evaluate --data`), or
        None when they cannot be (other classes)."""
        return targets if names == known else None

    def to_json(self, target) -> Any:
        """One example's target as split.json records a held-out file's."""
        return target.tolist() if hasattr(target, "tolist") else target

    def from_json(self, targets: list):
        """split.json's targets as an array like the sources give."""
        raise NotImplementedError

    # training ----------------------------------------------------------------------------------
    def record(self, train_targets) -> dict:
        """What the run remembers besides its weights, from the training split's targets."""
        return {}

    def loss_function(self, spec, from_logits: bool, record: dict) -> Any:
        """The Keras loss between the targets (as the sources give them) and the model's outputs."""
        raise NotImplementedError

    # How the distillation loss reads in the run's note (`{a}` alpha, `{b}` 1 - alpha, `{t}` T).
    distillation_note: ClassVar[str] = "{a:g} * the teacher's loss + {b:g} * the task's"

    def distillation_loss(self, spec, from_logits: bool, record: dict) -> Any:
        """The Keras loss against distillation's training targets (the task's targets, `no_label`
        for an unlabeled image, then the teacher's answers; validation targets are the task's
        own), or None: the task cannot learn from a teacher (`train.distill` is refused)."""
        return None

    def distillation_metrics(self, outputs: int, from_logits: bool, record: dict) -> list:
        """`keras_metrics` for distillation's targets; by default the task's own (metrics that
        read such targets themselves)."""
        return self.keras_metrics(outputs, from_logits, record)

    def keras_metrics(self, outputs: int, from_logits: bool, record: dict) -> list:
        """Keras metrics named as `metrics` (history columns)."""
        raise NotImplementedError

    def measured(self, targets, outputs, record: dict) -> dict:
        """`metrics` computed in NumPy from targets and the model's raw outputs (validation outside
        Keras's `fit`)."""
        raise NotImplementedError

    def finishing(self, activation: str | None, record: dict) -> Any:
        """The Keras layer that turns the model's outputs into the task's answers (probabilities,
        values in the targets' units), or None when the outputs are answers already."""
        return None

    def calibrate(self, targets, answers, record: dict) -> dict:
        """The record after training, from the validation split's targets and finished outputs
        (multi_label's tuned thresholds); the record itself when nothing is calibrated."""
        return record

    # using a model -----------------------------------------------------------------------------
    def answer(self, row, names: list[str], record: dict, top: int) -> dict:
        """What predict and serve give for one image's finished outputs (besides its name)."""
        raise NotImplementedError

    def evaluate(self, targets, answers, names: list[str], files: list[str], record: dict) -> dict:
        """evaluate's numbers (the contract's JSON for this task, without `split`)."""
        raise NotImplementedError

    def worst(self, targets, answers, names: list[str], record: dict, limit: int = 16) -> list[tuple[int, str, int]]:
        """The held-out examples a person should look at first: (index, caption, the output whose
        Grad-CAM to draw), worst first."""
        return []

    def worst_grid(self, images, picked, targets, answers, names: list[str], captions: list[str], title: str,
                   record: dict):
        """A writer of evaluate's grid of the `picked` examples (their [0, 1] `images`), or None for
        the images with the Grad-CAM of the output `worst` names."""
        return None

    def figures(self, result: dict, targets, answers, names: list[str], title: str) -> dict[str, Any]:
        """{file name in the run folder: writer(path)} of evaluate's figures."""
        return {}

    def headline(self, result: dict) -> str:
        """evaluate's result in a few words (`accuracy 0.941`)."""
        return f"{self.metric} {result[self.metric]:.3f}"


@dataclass(frozen=True)
class DataSource:
    """A `train.data.type`: one row of the data-source registry (built-ins and plugins alike).

    `read(data, spec)` returns `(examples, class names)` (optionally a third item, {suffix: count}
    of files found but not read): `tlc.data.Examples(labels, files=...)` for image files (streamed,
    decoded once into the decoded-image store, held-out files recorded by path) or
    `Examples(labels, images=...)` for images in [0, 1] (n, h, w, c), fitted to the input by tlc.
    With `needs_path`, `train.data.path` must name an existing file or folder, checked before
    TensorFlow loads; `data.path` arrives resolved against the spec's folder. The labels are class
    indices, which the spec's task takes (`Task.from_classes`); a source with `targets` reads any
    task's targets itself (`spec.task.from_columns` or `from_array`). `spec.error(("train",
    "data", "path"), message)` gives a located error."""

    name: str
    read: Callable[[Any, Any], tuple]
    description: str = ""
    needs_path: bool = False
    files: bool = False  # gives image files (a file list), not images in memory
    targets: bool = False  # reads any task's targets (asks `spec.task`), not one class per image

