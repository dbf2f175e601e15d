"""Stratified, seeded splits: every class is split in the same proportions, and the split
depends only on the seed and the examples (not on anything that ran before)."""
from __future__ import annotations

import numpy as np


def stratified(labels: np.ndarray, validation: float, test: float, seed: int):
    """(train, validation, test) index arrays, each sorted; per class, `round(n * fraction)`
    examples go to the test split, then to validation, the rest to training."""
    rng = np.random.default_rng([seed, 20261125])
    parts: tuple[list, list, list] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(members) * test))
        n_val = int(round(len(members) * validation))
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test:n_test + n_val])
        parts[0].append(members[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)).astype("int64") if p else np.zeros(0, "int64") for p in parts)


def split_record(dataset) -> dict:
    """What `tlc evaluate` needs to find the held-out examples again (a run's split.json): class
    names, counts, the held-out indices into the source and, for file sources, the files."""
    record = {"classes": dataset.class_names,
              "counts": {part: int(len(getattr(dataset, part))) for part in ("train", "val", "test")},
              "indices": {part: dataset.indices[part].tolist() for part in ("val", "test")},
              "skipped": dataset.skipped}
    for part in ("val", "test"):
        examples = getattr(dataset, part)
        if examples.files is not None:
            record[f"{part}_files"] = [[str(f), int(y)] for f, y in zip(examples.files, examples.labels)]
    return record
