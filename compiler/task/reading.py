"""Reading a csv file's target columns for a task, with errors that name the file, the line and
the column, and the hints that keep a mismatched task from training silently."""
from __future__ import annotations

from typing import TYPE_CHECKING

import re

if TYPE_CHECKING:
    import numpy as np  # (imported where used: `tlc check` loads the task without NumPy)


PATH = ("train", "data", "path")
DELIMITERS = (" ", ",", ";", "|")


def needed(columns: list[str], wanted: list[str], spec, where: str, what: str) -> None:
    """Every `wanted` column is in the header (besides path), else a located error listing them."""
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise spec.error(PATH, f"{where} needs the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                               f"({what}); found {','.join(columns) or 'none'}")


def label_column(rows: list[tuple[dict, int]], columns: list[str], spec, where: str) -> list[str]:
    needed(columns, ["label"], spec, where, "one class per image; tags are task: multi_label, numbers task: regression")
    return [row["label"] for row, _ in rows]


def numbers(rows: list[tuple[dict, int]], columns: list[str], spec, where: str) -> np.ndarray:
    """(n, len(columns)) float32 of the named columns; a cell that is not a number is named."""
    import numpy as np

    out = np.zeros((len(rows), len(columns)), "float32")
    for i, (row, line) in enumerate(rows):
        for j, column in enumerate(columns):
            try:
                out[i, j] = float(row[column])
            except ValueError:
                raise spec.error(PATH, f"{where}:{line}: {column} must be a number; "
                                       f"received: {row[column]!r}") from None
            if not np.isfinite(out[i, j]):
                raise spec.error(PATH, f"{where}:{line}: {column} must be a finite number; received: {row[column]!r}")
    return out


def looks_like_numbers(labels: list[str]) -> str:
    """A few of the labels when they read as numbers that are not class indices (fractions, numbers
    written with a decimal point, or more distinct values than classes usually are); '' otherwise."""
    import numpy as np

    try:
        values = np.array([float(label) for label in labels])
    except ValueError:
        return ""
    distinct = np.unique(values)
    fractional = not np.all(np.equal(np.mod(values, 1), 0)) or any("." in label for label in labels)
    if fractional or len(distinct) > max(20, len(labels) // 5):
        return ", ".join(str(label) for label in list(dict.fromkeys(labels))[:3]) + ", ..."
    return ""


def looks_like_tags(labels: list[str]) -> str:
    """An example label when the labels read as tag lists (`cat dog`): some contain a delimiter
    and their parts recur as labels or parts of others; '' otherwise."""
    for delimiter in DELIMITERS:
        joined = [label for label in labels if delimiter in label.strip()]
        if len(joined) < 2:
            continue
        parts = {p for label in set(labels) for p in re.split(re.escape(delimiter) + "+", label.strip()) if p}
        if len(parts) < len(set(labels)):
            return repr(joined[0])
    return ""
