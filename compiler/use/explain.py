"""`tlc explain RUN IMAGE...`: Grad-CAM heat maps (Selvaraju et al.; Keras's own Grad-CAM example)
of what the run's model looks at.

For each image: the gradient of the chosen class's score (the logit before the softmax when the
model ends in a Dense layer) with respect to a feature map (by default the last spatial one of
the backbone), averaged over its positions, weights the map's channels; their ReLU'd sum,
upsampled to the image, is the heat map. It works on the flat functional model tlc builds, so
every built-in backbone, `conv_stack` and a plugin's graph get it alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlc.errors import RunError, UsageError
from tlc.layout import RunLayout

from .predictor import split_views, tta_views

GRID_LIMIT = 36  # explain.png shows at most this many images (each has its own PNG)


@dataclass
class Explained:
    image: np.ndarray  # (h, w, c) in [0, 1], as the model saw it
    heat: np.ndarray  # (h, w) in [0, 1]
    class_index: int
    probability: float


def default_layer(spec: Any) -> str:
    """The backbone's last layer with a spatial (height, width, channels) output, from the plan
    (no TensorFlow needed to name it)."""
    from tlc.plan.planner import plan

    spatial = [layer.name for layer in plan(spec).backbone if len(layer.output_shape) == 3]
    if not spatial:
        raise UsageError(f"{spec.name}: the backbone has no spatial feature map to explain; pass --layer")
    return spatial[-1]


def check_layer(model: Any, name: str) -> None:
    try:
        layer = model.get_layer(name)
    except ValueError:
        raise UsageError(f"--layer {name}: the model has no layer of that name") from None
    if len(layer.output.shape) != 4:
        raise UsageError(f"--layer {name}: its output {tuple(layer.output.shape[1:])} is not a feature map "
                         "(height, width, channels)")


class GradCam:
    """Heat maps for one predictor's model and one feature-map layer, for batches of [0, 1] images."""

    def __init__(self, predictor: Any, layer: str):
        import keras

        model = predictor.model
        check_layer(model, layer)
        self.predictor, self.layer = predictor, layer
        last = model.layers[-1]
        self.dense = last if type(last).__name__ == "Dense" else None
        score_source = last.input if self.dense is not None else model.output
        self.probe = keras.Model(model.inputs, [model.get_layer(layer).output, score_source, model.output])

    def __call__(self, images: np.ndarray, classes: list[int | None]) -> tuple[np.ndarray, np.ndarray]:
        """(heat maps (n, h, w) at the images' size in [0, 1], probabilities (n, k))."""
        import tensorflow as tf

        preprocess = self.predictor.preprocess
        x = tf.convert_to_tensor(images if preprocess is None else preprocess(images))
        with tf.GradientTape() as tape:
            feature_map, source, outputs = self.probe(x, training=False)
            probabilities = self.predictor.probabilities_of(outputs)
            if len(probabilities.shape) == 4:  # a mask: a class's pixels, and each class's share of the image
                picked, probabilities = _class_pixels(probabilities, classes)
            elif self.dense is not None:  # the logits: a softmax output saturates, its input does not
                kernel, bias = self.dense.kernel, self.dense.bias
                scores = tf.matmul(source, kernel) + (bias if bias is not None else 0.0)
            else:
                scores = tf.math.log(tf.maximum(source, 1e-12))
            if len(probabilities.shape) == 2 and len(outputs.shape) == 2:
                chosen = [int(np.argmax(p)) if c is None else c for c, p in zip(classes, probabilities.numpy())]
                picked = tf.gather(scores, chosen, axis=1, batch_dims=1)
        grads = tape.gradient(picked, feature_map)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy()
        peak = cam.max(axis=(1, 2), keepdims=True)
        return np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0.0), np.asarray(probabilities)


def top_class(scores: np.ndarray, mask: bool = False) -> int:
    """The class to explain: the most probable; in a mask, the largest share but the background
    (class 0) when another class is there."""
    if mask and len(scores) > 1 and scores[1:].max() > 0:
        return int(np.argmax(scores[1:]) + 1)
    return int(np.argmax(scores))


def _class_pixels(probabilities, classes: list[int | None]):
    """(per image the mean log-probability of a class over the pixels predicted as it, each class's
    share of the pixels): what a segmentation's Grad-CAM follows. The class is the one asked for,
    else the largest but the background (class 0) when any other is predicted."""
    import tensorflow as tf

    predicted = tf.argmax(probabilities, axis=-1)
    k = int(probabilities.shape[-1])
    shares = tf.reduce_mean(tf.one_hot(predicted, k), axis=(1, 2))
    chosen = tf.constant([top_class(share, mask=True) if c is None else c
                          for c, share in zip(classes, shares.numpy())], tf.int64)
    where = tf.cast(tf.equal(predicted, chosen[:, None, None]), probabilities.dtype)
    logs = tf.math.log(tf.maximum(tf.gather(probabilities, chosen, axis=3, batch_dims=1), 1e-12))
    picked = tf.reduce_sum(logs * where, axis=(1, 2)) / tf.maximum(tf.reduce_sum(where, axis=(1, 2)), 1.0)
    return picked, shares


def class_index(names: list[str], class_name: str | None, option: str = "--class") -> int | None:
    """The index of the class to explain (None: each image's top prediction); an unknown name is a
    usage error naming the run's classes (`tlc explain --class`, serve's `?class=`)."""
    if class_name is None:
        return None
    if class_name not in names:
        raise UsageError(f"{option} {class_name}: the run's classes are {', '.join(names)}")
    return names.index(class_name)


class Explainer:
    """A run's predictor with Grad-CAM at one layer, for `tlc explain` and `tlc serve`'s /explain:
    heat maps for [0, 1] images, and the picture `tlc explain` draws of one."""

    def __init__(self, run: Any, predictor: Any, layer: str | None = None):
        self.run, self.predictor, self.names = run, predictor, run.classes
        self.layer = layer or default_layer(run.spec)
        self.cam = GradCam(predictor, self.layer)

    def __call__(self, images: np.ndarray, wanted: int | None = None, batch: int = 32,
                 tta: str | None = None) -> list[Explained]:
        """With `tta="flip"`, the class is chosen on the averaged probabilities, and the mirror
        image's heat map, mirrored back, is averaged with the image's."""
        explained: list[Explained] = []
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            if tta is None:
                heat, probs = self.cam(chunk, [wanted] * len(chunk))
            else:
                probs = self.predictor(chunk, tta)
                if probs.ndim == 4:  # a mask: each class's share of the pixels
                    probs = np.eye(probs.shape[-1])[probs.argmax(axis=-1)].mean(axis=(1, 2))
            classes = [top_class(p, probs.ndim == 2 and self.run.spec.task.type == "segmentation")
                       if wanted is None else wanted for p in probs]
            if tta is not None:  # both views' heat maps in one pass; the mirror's mirrored back
                image, mirror = split_views(self.cam(tta_views(chunk, tta), classes * 2)[0], len(chunk))
                heat = (image + mirror[:, :, ::-1]) / 2
            explained += [Explained(image, h, c, float(p[c])) for image, h, c, p in zip(chunk, heat, classes, probs)]
        return explained

    def picture(self, items: list[Explained], labels: list[str], more: str = ""):
        """A writer for the PNG of these explained images, each captioned with its label and class."""
        from tlc.show.figures import examples_grid

        captions = [f"{label}\n{self.names[e.class_index]} ({e.probability:.2f})" for label, e in zip(labels, items)]
        return examples_grid([e.image for e in items], captions,
                             f"{self.run.spec.name}: Grad-CAM at {self.layer}{more}", [e.heat for e in items])


def explain(run, images: list[Path], *, output: Path | None = None, class_name: str | None = None,
            layer: str | None = None, safe_mode: bool = True, tta: str | None = None) -> list[dict]:
    """Write a `<name>.cam.png` per image (and `explain.png` for several) into `output`
    (default RUN/explain/); returns one record per image, in order: a file that is not a readable
    image gets `{"image", "file", "error"}` and costs only itself. `run` is a `Run`."""
    from tlc.atomic import write_with

    from .predict import decoded, output_stems, refusal
    from .predictor import Predictor
    wanted = class_index(run.classes, class_name)  # before the model loads
    explainer = Explainer(run, run.predictor if safe_mode else Predictor.of_run(run, safe_mode=False), layer)
    target = Path(output) if output else RunLayout(run.folder).explain
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot write {target}: {exc.strerror or exc}") from None
    stems = iter(output_stems(images))
    records, shown = [], []
    for batch, good, pixels, errors in decoded(explainer.predictor, images, GRID_LIMIT):
        explained = iter(explainer(pixels, wanted, tta=tta) if good else ())
        for i, path in enumerate(batch):
            stem = next(stems)
            if i in errors:
                records.append(refusal(path, errors[i]))
                continue
            item = next(explained)
            png = target / f"{stem}.cam.png"
            write_with(png, explainer.picture([item], [path.name]))
            said = {"regression": "value", "segmentation": "fraction"}.get(run.spec.task.type, "probability")
            records.append({"image": str(path), "class": explainer.names[item.class_index],
                            said: item.probability, "layer": explainer.layer, "png": str(png),
                            "peak": original_peak(path, item.heat, explainer.predictor.fit)})
            if len(shown) < GRID_LIMIT:
                shown.append((item, path.name))
    answered = len(images) - sum("error" in r for r in records)
    if answered > 1:
        more = f" (the first {GRID_LIMIT} of {answered})" if answered > GRID_LIMIT else ""
        write_with(target / "explain.png", explainer.picture([i for i, _ in shown], [n for _, n in shown], more))
    return records


def heat_maps(predictor: Any, spec: Any, images: np.ndarray, classes: list[int]) -> np.ndarray | None:
    """Grad-CAM maps for images in [0, 1] at the default layer (evaluate's misclassified.png), or
    None when the backbone has no spatial feature map."""
    try:
        cam = GradCam(predictor, default_layer(spec))
    except UsageError:
        return None
    return cam(images, classes)[0]


def original_peak(path: Path, heat: np.ndarray, fit: str = "stretch") -> list[int]:
    """The heat map's maximum as [y, x] in the original image's pixels, upright as it is shown
    (the model saw it resized, and cropped or padded as `fit` says)."""
    from tlc.data.images import oriented_size, placement

    width, height = oriented_size(str(path))
    top, left, bottom, right = placement(width, height, heat.shape[:2], fit)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    row = top + (y + 0.5) * (bottom - top) / heat.shape[0]
    column = left + (x + 0.5) * (right - left) / heat.shape[1]
    return [min(height - 1, max(0, int(row))), min(width - 1, max(0, int(column)))]
