"""What a run records of its split (split.json); the splits themselves are the task's
(`tlc.task.splits`)."""
from __future__ import annotations


def split_record(dataset, task) -> dict:
    """What `tlc evaluate` needs to find the held-out examples again (a run's split.json): class
    (tag, target) names, counts, the held-out indices into the source and, for file sources, the
    files with their targets as the task writes them."""
    record = {"classes": dataset.class_names,
              "counts": {part: int(len(getattr(dataset, part))) for part in ("train", "val", "test")},
              "indices": {part: dataset.indices[part].tolist() for part in ("val", "test")},
              "skipped": dataset.skipped}
    for part in ("val", "test"):
        examples = getattr(dataset, part)
        if examples.files is not None:
            record[f"{part}_files"] = [[str(f), task.to_json(y)] for f, y in zip(examples.files, examples.labels)]
    return record
