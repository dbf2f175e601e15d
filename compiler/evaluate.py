"""`tlc evaluate RUN`: the run's model on its held-out examples, per class, with a confusion matrix.

The examples are found again from the run folder: `split.json` lists the held-out files of a
folder or csv source, and records the indices of an in-memory source (digits, npz, cifar10),
which is read again through the resolved spec (`spec.lock.yaml`) and checked against them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunError, UsageError, one_line

RUN_FILES = ("model.keras", "spec.lock.yaml", "split.json", "metrics.json")


def open_run(folder: Path) -> tuple[Any, dict]:
    """(resolved spec, split record) of a finished run folder, without TensorFlow."""
    from .spec import load_spec

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such run folder")
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if missing:
        raise UsageError(f"{folder} is not a finished tlc run (missing {', '.join(missing)}); "
                         "train one with `tlc train SPEC` (runs/<name>/)")
    return load_spec(folder / "spec.lock.yaml"), json.loads((folder / "split.json").read_text())


def choose_split(record: dict, asked: str | None, folder: Path) -> str:
    counts = record["counts"]
    if asked == "test" and not counts.get("test"):
        raise UsageError(f"{folder} has no test split (train.data.test_split was 0); "
                         "use --split val, or train with a test_split")
    if asked is None:
        asked = "test" if counts.get("test") else "val"
    if not counts.get(asked):
        raise UsageError(f"{folder} has no {asked} examples")
    return asked


def held_out(spec, record: dict, part: str):
    """The run's `part` ('val' or 'test') examples, as recorded at training time."""
    from .data import load
    from .data.sources import Examples

    files = record.get(f"{part}_files")
    if files is not None:
        missing = [f for f, _ in files if not Path(f).is_file()]
        if missing:
            raise RunError(f"{missing[0]}: held-out image not found (moved since training?)"
                           + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        return Examples(np.array([int(y) for _, y in files], dtype="int64"), files=np.array([f for f, _ in files]))
    dataset = load(spec, check_files=False)
    if dataset.indices[part].tolist() != record["indices"][part]:
        raise RunError(f"the {part} examples differ from those recorded at training time "
                       "(the data source or its split changed); evaluate a new run")
    return getattr(dataset, part)


def predict_probabilities(model, feed, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for every example of `feed`, in order (softmax applied to logits)."""
    scores = np.concatenate([np.asarray(model.predict_on_batch(x)) for x, _ in feed.in_order(batch_size)])
    if _output_activation(model) == "linear":
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    return scores


def _output_activation(model) -> str | None:
    activation = model.layers[-1].get_config().get("activation")
    return activation if isinstance(activation, str) else None


def scores(labels: np.ndarray, probabilities: np.ndarray, names: list[str]) -> dict:
    """Accuracy, loss, top-k, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support, top_k_accuracy_score

    k = len(names)
    predicted = probabilities.argmax(axis=1)
    every = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=every,
                                                                     zero_division=0)
    out = {
        "examples": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "loss": float(log_loss(labels, np.clip(probabilities, 1e-7, 1), labels=every)),
        "top_k": {},
        "per_class": [{"class": names[c], "precision": float(precision[c]), "recall": float(recall[c]),
                       "f1": float(f1[c]), "support": int(support[c])} for c in every],
        "confusion": confusion_matrix(labels, predicted, labels=every).tolist(),
        "classes": list(names),
    }
    if k > 3:
        out["top_k"]["3"] = float(top_k_accuracy_score(labels, probabilities, k=3, labels=every))
    return out


def worst_mistakes(labels: np.ndarray, probabilities: np.ndarray, limit: int = 16) -> np.ndarray:
    """Up to `limit` misclassified examples, the most confident mistakes first, taken in turn from
    each true class (so one confused class does not fill the grid)."""
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    wrong = wrong[np.argsort(-probabilities[wrong].max(axis=1), kind="stable")]
    per_class = [list(wrong[labels[wrong] == c]) for c in np.unique(labels[wrong])]
    picked = []
    while len(picked) < limit and any(per_class):
        picked += [queue.pop(0) for queue in per_class if queue][: limit - len(picked)]
    return np.array(picked, dtype="int64")


def evaluate(folder: Path, split: str | None = None, *, safe_mode: bool = True, progress=None) -> dict:
    """Evaluate a run; writes evaluation.json, confusion.png and misclassified.png into it."""
    import keras

    from .atomic import write_text, write_with
    from .data import naming_unreadable
    from .data.pipeline import Feed
    from .train.plots import confusion_plot, examples_grid

    folder = Path(folder)
    spec, record = open_run(folder)
    part = choose_split(record, split, folder)
    examples = held_out(spec, record, part)
    try:
        model = keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=safe_mode)
    except Exception as exc:
        raise RunError(f"{folder / 'model.keras'}: cannot load the model: {one_line(exc)}") from None
    feed = Feed(examples, spec.input.hwc, spec.backbone.preprocess)
    with naming_unreadable([examples], spec.input.hwc[2], fix="the run never read its held-out images; "
                                                              "replace it, or train again without it"):
        probabilities = predict_probabilities(model, feed)
    names = record["classes"]
    result = {"split": part, **scores(examples.labels, probabilities, names)}
    write_text(folder / "evaluation.json", json.dumps(result, indent=2) + "\n")
    title = f"{spec.name}: {part} split, {result['examples']} examples, accuracy {result['accuracy']:.3f}"
    write_with(folder / "confusion.png", confusion_plot(np.array(result["confusion"]), names, title))
    wrong = worst_mistakes(examples.labels, probabilities)
    if len(wrong):
        images = np.concatenate([x.numpy() for x, _ in Feed(examples.take(wrong), spec.input.hwc).in_order(16)])
        captions = [f"true {names[examples.labels[i]]}\npredicted {names[probabilities[i].argmax()]} "
                    f"({probabilities[i].max():.2f})" for i in wrong]
        write_with(folder / "misclassified.png", examples_grid(images, captions, f"{spec.name}: misclassified"))
    return result
