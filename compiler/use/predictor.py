"""One predictor between a model and every command that answers about images: `tlc predict`, `evaluate`,
`explain`, the export and quantize checks and `tlc serve` (and what builds on them: test-time
augmentation, a distillation teacher).

Images in [0, 1] go in, the task's answers come out (probabilities; values in their units). The
backbone's preprocessing, the model and its task's finishing (the one softmax or sigmoid over
logits, a regression's standardisation undone) form one Keras model, the serving
model, which `tlc export` also writes, so an artifact computes exactly what the commands do. It
is called through one traced function whose batch dimension is free: traced once, whatever the
batches' sizes, and no batch is padded (padding 9 images to 16 cost MobileNetV2 40% of its
throughput in `tlc serve`, and a free dimension is no slower at any size). A feature extractor
(a model that does not end in a classifier) goes through the same path and gives its features.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from tlc.build.serving import finishing, output_activation, serving_model
from tlc.errors import RunError

from .formats import TTA

BATCH = 64


def tta_views(images: np.ndarray, tta: str | None) -> np.ndarray:
    """The views of a batch one after the other: the images, then (flip) their mirror images."""
    if tta is None:
        return images
    if tta not in TTA:
        raise ValueError(f"unknown test-time augmentation {tta!r}; known: {', '.join(TTA)}")
    return np.concatenate([images, images[:, :, ::-1]])


def split_views(outputs: np.ndarray, n: int) -> np.ndarray:
    """The outputs of `tta_views`' stacked views, (views * n, ...) -> (views, n, ...)."""
    return outputs.reshape(len(outputs) // n if n else 1, n, *outputs.shape[1:])


def unmirrored(views: np.ndarray, tta: str | None) -> np.ndarray:
    """`split_views`' outputs with a per-pixel output (views, n, h, w, classes) of the mirror
    images mirrored back over the images' own pixels."""
    if tta is None or views.ndim != 5:
        return views
    return np.concatenate([views[:1], views[1:, :, :, ::-1]])


class Predictor:
    """A model ready to answer: `probabilities(images)` (finished outputs) for [0, 1] images
    (`tta="flip"`: averaged with their mirror images'), `answers(outputs, top)`."""

    def __init__(self, model: Any, *, preprocess: Callable | None = None, classes: list[str] | None = None,
                 name: str = "model", fit: str = "stretch", task: Any = None, record: dict | None = None):
        import tensorflow as tf

        self.model, self.preprocess, self.name = model, preprocess, name
        self.fit = fit  # how an image file of another aspect meets the input (`train.data.fit`)
        if task is None:
            from tlc.task.classification import Classification

            task = Classification()
        self.task, self.record = task, dict(record or {})  # the run's task and what it recorded (thresholds...)
        self.finish = finishing(model, task, self.record)
        self.serving = serving_model(model, preprocess, name, self.finish)
        width = int(self.serving.output.shape[-1]) if len(self.serving.output.shape) in (2, 4) else None
        self.classes = classes if classes and len(classes) == width else None
        serving = self.serving
        signature = [tf.TensorSpec((None, *self.input_shape), tf.float32)]
        self._call = tf.function(lambda images: serving(images, training=False), input_signature=signature)

    @classmethod
    def of_run(cls, run: Any, *, safe_mode: bool = True) -> Predictor:
        from tlc.data import fit_of

        return cls(run.trained_model(safe_mode=safe_mode), preprocess=run.spec.backbone.preprocess, classes=run.classes,
                   name=run.spec.name, fit=fit_of(run.spec), task=run.spec.task, record=run.task_record)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.model.input_shape[1:])  # type: ignore[return-value]

    @property
    def is_classifier(self) -> bool:
        return output_activation(self.model) is not None

    def require_classifier(self) -> None:
        if not self.is_classifier:
            raise RunError(f"the model outputs {tuple(self.model.output.shape[1:])} features per image "
                           f"({self.model.layers[-1].name}), not class scores; use tlc extract")

    def probabilities_of(self, outputs):
        """The model's outputs (a tensor) as probabilities: what the serving model appends."""
        return self.finish(outputs) if self.finish is not None else outputs

    def warm(self) -> None:
        """Trace the call before the first request (`tlc serve`)."""
        self._call(np.zeros((1, *self.input_shape), np.float32))

    def views(self, images: np.ndarray, tta: str | None = None) -> np.ndarray:
        """One batch's outputs per view, (views, n, ...): every view in one model call; a per-pixel
        output of a mirror image is mirrored back, so it lies over the image's own pixels."""
        return unmirrored(split_views(np.asarray(self._call(tta_views(np.asarray(images, np.float32), tta))),
                                      len(images)), tta)

    def __call__(self, images: np.ndarray, tta: str | None = None) -> np.ndarray:
        """One batch's outputs (probabilities for a classifier), averaged over the `tta` views."""
        return self.views(images, tta).mean(axis=0)

    def probabilities(self, images: np.ndarray, batch_size: int = BATCH, tta: str | None = None) -> np.ndarray:
        """Every image in batches of at most `batch_size`."""
        return self.over((images[i:i + batch_size] for i in range(0, len(images), batch_size)), tta)

    def over(self, batches, tta: str | None = None, *, per_view: bool = False) -> np.ndarray:
        """Outputs for an iterable of image batches (arrays, or (images, labels) pairs from a `Feed`),
        averaged over the `tta` views, or with `per_view` kept apart: (views, n, ...)."""
        chunks = [self.views(_images(batch), tta) for batch in batches]
        if not chunks:
            chunks = [np.zeros((TTA.get(tta, 1), 0, *self.serving.output.shape[1:]), np.float32)]
        every = np.concatenate(chunks, axis=1)
        return every if per_view else every.mean(axis=0)

    def of_feed(self, feed: Any, batch_size: int = BATCH, tta: str | None = None, *,
                per_view: bool = False) -> np.ndarray:
        """Outputs for every example of a `Feed` (built without preprocessing: [0, 1] images), in order."""
        return self.over(feed.in_order(batch_size if tta is None else max(1, batch_size // TTA[tta])), tta,
                         per_view=per_view)

    def answers(self, outputs: np.ndarray, top: int) -> list[dict]:
        """The task's answer for each row of finished outputs: `{"top": [{"class", "index",
        "probability"}, ...]}` (the `top` most probable classes), `{"tags", "scores"}` or `{"values"}`."""
        names = self.classes or [str(i) for i in range(outputs.shape[-1])]
        return [self.task.answer(row, names, self.record, top) for row in outputs]


def _images(batch) -> np.ndarray:
    if isinstance(batch, tuple):
        batch = batch[0]
    return batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)
