"""`tlc evaluate RUN`: the run's model on its held-out examples, as its task reports (per class with
a confusion matrix; per tag with PR curves; per target with predicted against true values).

The examples are found again from the run folder (`Run.held_out`): `split.json` lists the
held-out files of a folder or csv source, and records the indices of an in-memory source
(digits, npz, cifar10), which is read again through the resolved spec and checked against them.
"""
from __future__ import annotations

import json
import os

import numpy as np


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
    folder); writes evaluation.json and the task's figures into it (a confusion matrix, PR curves,
    predicted against true values; the worst examples with their Grad-CAM). With `tta`, the
    metrics are those of the averaged views, and `<metric>_no_tta` is the plain images' (both from
    the same pass)."""
    from tlc.atomic import write_text, write_with
    from tlc.data import naming_unreadable
    from tlc.data.pipeline import Feed
    from tlc.show.figures import examples_grid

    from .explain import heat_maps
    from .predictor import Predictor
    spec, task = run.spec, run.spec.task
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
    answers, names, record = views.mean(axis=0), run.classes, predictor.record
    files = example_names(run, part, examples, data)
    result = {"split": part, **({"data": str(data)} if data is not None else {}),
              **task.evaluate(examples.labels, answers, names, files, record)}
    if tta is not None:
        plain = task.evaluate(examples.labels, views[0], names, files, record)
        result.update(tta=tta, **{f"{task.metric}_no_tta": plain[task.metric]})
    where = f"{data}" if data is not None else f"{part} split"
    title = f"{spec.name}: {where}, {result['examples']} examples, {task.headline(result)}"
    figures = task.figures(result, examples.labels, answers, names, title)
    worst = task.worst(examples.labels, answers, names, record)
    result["figures"] = [*figures, *([task.worst_figure] if worst else [])]
    written = run.files
    write_text(written.evaluation, json.dumps(result, indent=2) + "\n")
    for name, writer in figures.items():
        write_with(written.folder / name, writer)
    grid = written.folder / task.worst_figure
    grid.unlink(missing_ok=True)  # an earlier evaluation's, when there is none now
    if worst:
        picked = np.array([i for i, _, _ in worst], dtype="int64")
        images = run.images(examples.take(picked), 16)
        captions = [f"{_short_name(files[i])}\n{caption}" for i, caption, _ in worst]
        writer = task.worst_grid(images, picked, examples.labels, answers, names, captions,
                                 f"{spec.name}: {task.worst_title}", record)
        if writer is None:
            heats = heat_maps(predictor, spec, images, [output for _, _, output in worst])
            title = f"{spec.name}: {task.worst_title}" + (f" (Grad-CAM of {task.worst_heat})" if heats is not None
                                                          else "")
            writer = examples_grid(images, captions, title, heats)
        write_with(grid, writer)
    return result
