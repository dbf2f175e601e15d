"""`tlc evaluate RUN`: the run's model on its held-out examples, per class, with a confusion matrix.

The examples are found again from the run folder (`Run.held_out`): `split.json` lists the
held-out files of a folder or csv source, and records the indices of an in-memory source
(digits, npz, cifar10), which is read again through the resolved spec and checked against them.
"""
from __future__ import annotations

import json
import os

import numpy as np


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


def mistakes(labels: np.ndarray, probabilities: np.ndarray, names: list[str], files: list[str]) -> list[dict]:
    """Every misclassified example, the most confident mistake first: what `evaluation.json`
    lists and the console names."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    return [{"file": files[i], "true": names[labels[i]], "predicted": names[predicted[i]],
             "probability": float(probabilities[i, predicted[i]])} for i in wrong]


def example_names(run, part: str, examples, data=None) -> list[str]:
    """Each evaluated example's name: its file, or for an in-memory source (digits, npz, cifar10)
    the source and the example's index in it (`digits#1034`; with `--data`, that file's)."""
    if examples.files is not None:
        return [str(f) for f in examples.files]
    if data is not None:
        return [f"{data}#{i}" for i in range(len(examples))]
    return [f"{run.spec.train.data.type}#{i}" for i in run.split["indices"][part]]


def _short_name(name: str) -> str:
    """A file's name as a caption: its last two parts (class folder and file)."""
    from pathlib import PurePath

    return "/".join(PurePath(name).parts[-2:])


def evaluate(run, split: str | None = None, *, data: str | os.PathLike | None = None, safe_mode: bool = True,
             tta: str | None = None) -> dict:
    """Evaluate a run (a `Run`: `Run(folder).evaluate()` is the library's way in) on its held-out
    `split`, or with `data` on every example of another source of its kind (a new labelled
    folder); writes evaluation.json, confusion.png and misclassified.png into it. With `tta`, the
    metrics are those of the averaged views, and `accuracy_no_tta` is the plain images' (both
    from the same pass)."""
    from tlc.atomic import write_text, write_with
    from tlc.data import naming_unreadable
    from tlc.data.pipeline import Feed
    from tlc.show.figures import confusion_plot, examples_grid

    from .explain import heat_maps
    from .predictor import Predictor
    spec = run.spec
    if data is not None:
        part, examples = "data", run.other_source(data)
        store, fix = None, "remove it from the folder"
    else:
        part = run.choose_split(split)
        examples, store = run.held_out(part), run.image_store
        fix = "the run never read its held-out images; replace it, or train again without it"
    predictor = run.predictor if safe_mode else Predictor.of_run(run, safe_mode=False)
    feed = Feed(examples, spec.input.hwc, store=store, fit=predictor.fit)
    with naming_unreadable([examples], fix=fix):
        views = predictor.of_feed(feed, tta=tta, per_view=True)
    probs, names = views.mean(axis=0), run.classes
    result = {"split": part, **({"data": str(data)} if data is not None else {}),
              **scores(examples.labels, probs, names)}
    files = example_names(run, part, examples, data)
    result["mistakes"] = mistakes(examples.labels, probs, names, files)
    if tta is not None:
        result.update(tta=tta, accuracy_no_tta=float(np.mean(views[0].argmax(axis=1) == examples.labels)))
    written = run.files
    write_text(written.evaluation, json.dumps(result, indent=2) + "\n")
    where = f"{data}" if data is not None else f"{part} split"
    title = f"{spec.name}: {where}, {result['examples']} examples, accuracy {result['accuracy']:.3f}"
    write_with(written.confusion_plot, confusion_plot(np.array(result["confusion"]), names, title))
    wrong = worst_mistakes(examples.labels, probs)
    written.mistakes_plot.unlink(missing_ok=True)  # an earlier evaluation's, when there is none now
    if len(wrong):
        images = run.images(examples.take(wrong), 16)
        captions = [f"{_short_name(files[i])}\ntrue {names[examples.labels[i]]}\n"
                    f"predicted {names[probs[i].argmax()]} ({probs[i].max():.2f})" for i in wrong]
        heats = heat_maps(predictor, spec, images, [int(probs[i].argmax()) for i in wrong])
        title = f"{spec.name}: misclassified" + (" (Grad-CAM of the predicted class)" if heats is not None else "")
        write_with(written.mistakes_plot, examples_grid(images, captions, title, heats))
    return result
