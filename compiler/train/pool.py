"""What a process that trains many runs keeps between them (a `tlc tune` worker): the loaded
datasets, the built backbones, the cached features in memory, and one compiled head per structure.

A head on cached features trains in less time than Keras takes to trace its train and test
steps. So a run whose head has the structure of an earlier run's trains the earlier compiled
copy instead of its own: the copy takes the run's freshly initialised weights, its optimizer
state goes back to the start, and its learning rate and dropout rates are variables that take
the run's values. Keras's traced steps are then reused, and the run's own model gets the trained
weights back. The dropout arithmetic is Keras's with a Python rate, operation for operation, so
a run trained on the copy has the history it would have had on its own model (`tlc train
best.yaml` reproduces a trial exactly).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

HEADS_KEPT = 16  # compiled heads and training batches a worker keeps (a space of units can offer dozens)


@dataclass
class KeptBackbones:
    """Backbones built once per process (`emit.compile`'s `backbones`): building VGG16 takes
    longer than training a head on its features. One is kept per spec and the random state it
    was built from: a later model gets the same layers, their weights as first built, and the
    random state as right after building, so its head is initialised as if the backbone had been
    built again."""

    built: dict = field(default_factory=dict)

    def __call__(self, spec, last: str, safe_mode: bool = True) -> tuple[Any, str | None]:
        import random

        from tlc.build.emit import build_backbone

        key = (spec.backbone.model_dump_json(), spec.input.hwc, last, hash(random.getstate()),
               hash(np.random.get_state()[1].tobytes()))
        if key in self.built:
            backbone, weights, states, note = self.built[key]
            _forget_heads(backbone)
            backbone.set_weights(weights)
            random.setstate(states[0])
            np.random.set_state(states[1])
            return backbone, note
        backbone, note = build_backbone(spec, last, safe_mode)
        self.built[key] = (backbone, backbone.get_weights(), (random.getstate(), np.random.get_state()), note)
        return backbone, note

    def forget_heads(self) -> None:
        for backbone, *_ in self.built.values():
            _forget_heads(backbone)


def _forget_heads(backbone) -> None:
    """Drop the connections models' heads made to a kept backbone: Keras records every call of a
    layer on a layer's output in that layer's outbound nodes, so a kept backbone held every head
    built on it (~1 MB a tune trial, never freed)."""
    inside = {id(layer) for layer in backbone.layers}
    for layer in backbone.layers:
        nodes = getattr(layer, "_outbound_nodes", None)
        if nodes:
            nodes[:] = [node for node in nodes if id(node.operation) in inside]


@dataclass
class Pool:
    datasets: dict = field(default_factory=dict)  # what `data.load` reads -> the Dataset
    features: dict = field(default_factory=dict)  # cache file path -> its array (`cache.split`)
    heads: dict = field(default_factory=dict)  # a head's structure -> its compiled copy (`_Head`)
    backbones: KeptBackbones = field(default_factory=lambda: KeptBackbones())  # (`emit.compile`'s builder)
    batches: dict = field(default_factory=dict)  # a feed's arrays, seed, epochs, batch size -> its tf.data batches

    def epochs(self, feed, seed: int, epochs: range, batch_size: int):
        """`feed.epochs(...)` of a feed over arrays (cached features), built once per arrays and
        settings: building the tf.data pipeline took ~30 ms a trial. (The batches depend on
        nothing else: epoch orders come from (seed, epoch).)"""
        arrays = (feed.examples.images, *feed.examples.more, feed.examples.labels, feed.targets)
        key = (*map(id, arrays), feed.views, seed, epochs.start, epochs.stop, batch_size)
        if key not in self.batches:
            _keep(self.batches, key, (arrays, feed.epochs(seed, epochs, batch_size)))  # (the arrays keep their ids)
        return self.batches[key][1]

    @staticmethod
    def seed(seed: int) -> None:
        """`keras.utils.set_random_seed(seed)`, except that TensorFlow's global seed is set only
        when it changes: setting it clears TensorFlow's caches of instantiated functions, so
        every traced step (the compiled heads' too) was instantiated again, ~0.12 s a run. Keras
        and tlc draw their randomness statelessly (initializers, dropout, augmentation, epoch
        orders), so a run's numbers do not depend on it (tested: a pooled run equals its own run)."""
        import random

        import keras

        try:
            from keras.src.backend.common import global_state
            from keras.src.random import seed_generator
            from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
            from tensorflow.python.eager import context
        except ImportError:  # pragma: no cover - a Keras or TensorFlow that moved them
            keras.utils.set_random_seed(seed)
            return
        if context.global_seed() != seed:
            keras.utils.set_random_seed(seed)
            return
        global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)  # what set_random_seed does besides
        global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
        random.seed(seed)
        np.random.seed(seed)

    def release(self) -> None:
        """Let go of the runs trained so far: the kept backbones forget the heads built on them,
        so a run's model dies with the run's last reference to it."""
        self.backbones.forget_heads()

    def dataset(self, spec, load: Callable):
        """`load()`, once per data source, input shape, seed and unlabeled folder."""
        distill = spec.train.distill
        key = json.dumps([spec.train.data.model_dump(mode="json"), list(spec.input.hwc), spec.train.seed,
                          distill.unlabeled if distill is not None else None], default=str)
        if key not in self.datasets:
            self.datasets[key] = load()
        return self.datasets[key]

    def borrow(self, tail, loss, metrics, optimizer, steps_per_execution: int) -> _Head | None:
        """The compiled copy of `tail`'s structure (its `model` trains), holding `tail`'s weights,
        `optimizer`'s learning rate and fresh optimizer state; None when the head cannot be pooled."""
        try:
            signature = _signature(tail, loss, metrics, optimizer, steps_per_execution)
        except (NotImplementedError, TypeError, ValueError):  # a plugin layer without a usable config
            return None
        if signature is None:
            return None
        if signature not in self.heads:
            try:
                head = _Head.compiled_like(tail, loss, metrics, optimizer, steps_per_execution)
            except (NotImplementedError, TypeError, ValueError):  # cannot be rebuilt from its config
                head = None
            _keep(self.heads, signature, head)
        head = self.heads[signature]
        if head is None:
            return None
        head.take(tail, optimizer)
        return head

    @staticmethod
    def give_back(head: _Head, tail) -> None:
        """The trained weights into the run's own head."""
        tail.set_weights(head.holder.get_weights())


def _keep(kept: dict, key, value) -> None:
    """`kept[key] = value`, the oldest entry going first when `kept` is full (memory stays bounded
    over a long study)."""
    if len(kept) >= HEADS_KEPT:
        kept.pop(next(iter(kept)))
    kept[key] = value


@dataclass
class _Head:
    model: Any  # what trains: the copy's faster twin (`rewrite`), over the copy's variables
    holder: Any  # the copy itself, its weights in the order of the run's head
    optimizer: Any
    initial: list  # the optimizer's variables as built: what each run starts from

    @classmethod
    def compiled_like(cls, tail, loss, metrics, optimizer, steps_per_execution: int) -> _Head:
        import keras

        from .optimizing import compile_model
        from .rewrite import faster

        tunable = tunable_dropout()

        def clone(layer):
            if _is_plain_dropout(layer) and 0 < layer.rate < 1:
                return tunable.from_config(layer.get_config())
            return layer.__class__.from_config(layer.get_config())

        holder = keras.models.clone_model(tail, clone_function=clone)
        model = faster(holder)
        copy = type(optimizer).from_config(optimizer.get_config())
        compile_model(model, loss, metrics, copy, steps_per_execution=steps_per_execution)
        copy.build(holder.trainable_variables)
        return cls(model, holder, copy, [v.numpy() for v in copy.variables])

    def take(self, tail, optimizer) -> None:
        self.holder.set_weights(tail.get_weights())
        for mine, theirs in zip(self.holder.layers, tail.layers):
            if hasattr(mine, "hold_rate"):
                mine.hold_rate(theirs.rate)
        for variable, value in zip(self.optimizer.variables, self.initial):
            variable.assign(value)
        self.optimizer.learning_rate.assign(np.asarray(optimizer.learning_rate))


def _is_plain_dropout(layer) -> bool:
    import keras

    return type(layer) is keras.layers.Dropout


def _signature(tail, loss, metrics, optimizer, steps_per_execution: int) -> str | None:
    """What a compiled head bakes into its traced steps: every layer's configuration (a dropout
    rate only as zero or not: rate 0 is no layer at all to Keras) and connections, the loss and metrics, the
    optimizer without its learning rate, and the steps per call; names (which Keras numbers per
    process) as positions. None for a learning-rate schedule."""
    config = tail.get_config()
    config["name"] = None
    for layer, entry in zip(tail.layers, config["layers"]):
        if _is_plain_dropout(layer) and 0 < layer.rate < 1:
            entry["config"]["rate"] = "held"
    settings = optimizer.get_config()
    if isinstance(settings.get("learning_rate"), dict):
        return None
    settings = {k: v for k, v in settings.items() if k not in ("learning_rate", "name")}
    measures = [[type(m).__name__, m.get_config()] if hasattr(m, "get_config") else m for m in metrics()]
    text = json.dumps([config, type(loss).__name__, loss.get_config(), measures, type(optimizer).__name__, settings,
                       steps_per_execution], sort_keys=True, default=str)
    for index, layer in enumerate(tail.layers):  # (quoted: "dense_1" is not part of "dense_10")
        text = text.replace(json.dumps(layer.name), json.dumps(f"#{index}"))
    return text


@functools.cache
def tunable_dropout():
    """Keras's Dropout with its rate held in a variable (not a weight: the head's weights stay
    those of the run's model). Same operations as `tf.nn.experimental.stateless_dropout` with a
    Python rate: x * float32(1 / (1 - rate)), kept where uniform >= float32(rate)."""
    import keras
    import tensorflow as tf
    from keras.src.backend.tensorflow.random import _cast_seed, _get_concrete_noise_shape, draw_seed
    from tensorflow.python.ops import stateless_random_ops

    class Held:  # (a plain object: Keras does not track what it holds)
        def __init__(self, rate: float):
            self.rate = tf.Variable(np.float32(rate), trainable=False)
            self.scale = tf.Variable(np.float32(1 / (1 - rate)), trainable=False)

    class TunableDropout(keras.layers.Dropout):
        def __init__(self, rate, **kwargs):
            super().__init__(rate, **kwargs)
            self.held = Held(rate)

        def hold_rate(self, rate: float) -> None:
            self.held.rate.assign(np.float32(rate))
            self.held.scale.assign(np.float32(1 / (1 - rate)))

        def call(self, inputs, training=False):
            if not training:
                return inputs
            seed = _cast_seed(draw_seed(self.seed_generator))
            shape = _get_concrete_noise_shape(inputs, self.noise_shape)
            noise = stateless_random_ops.stateless_random_uniform(shape=shape, seed=seed, alg=None, dtype=inputs.dtype)
            return tf.where(noise >= self.held.rate, inputs * self.held.scale, tf.zeros((), inputs.dtype))

    return TunableDropout
