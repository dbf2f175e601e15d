"""Write files so that a reader sees either the old file or the complete new one, never half.

Write to a temporary file beside the target, then `os.replace` (atomic on POSIX); on any
failure the temporary file is removed and the target is untouched.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def replacing(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffix) that replaces `target` on success.
    The writer may make it a file or a folder (a SavedModel); a folder target is swapped whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")  # ends like target: .weights.h5, .keras
    try:
        yield tmp
        if tmp.is_dir():
            swap_folder(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def swap_folder(new: Path, target: Path) -> None:
    """Put the folder `new` where `target` is: the old one moves aside first (a folder cannot be
    replaced by a rename), the new one takes its name, the old one is removed. A reader sees the
    old folder or the new one, and a crash in between leaves both whole."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def write_text(target: str | os.PathLike, text: str) -> None:
    with replacing(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def write_with(target: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """`writer(tmp_path)` writes the content (e.g. `model.save`, `fig.savefig`)."""
    with replacing(target) as tmp:
        writer(tmp)


def write_npy_rows(target: str | os.PathLike, shape: tuple, chunks) -> None:
    """A float32 .npy of `shape` written chunk by chunk (each an array of rows), so memory holds
    one chunk however large the array. Plain writes, not a writable memory map: a full disk must
    be a clear error, not a SIGBUS."""
    write_npy_columns([target], [shape], ["float32"], ((chunk,) for chunk in chunks))


def write_npy_columns(targets: list, shapes: list[tuple], dtypes: list[str], chunks) -> None:
    """Several .npy files of the same number of rows written in one pass, chunk by chunk (each a
    tuple of row arrays, one per file), each replacing its target only when all are complete."""
    import numpy as np

    with contextlib.ExitStack() as stack:
        temporary = [stack.enter_context(replacing(target)) for target in targets]
        handles = [stack.enter_context(open(tmp, "wb")) for tmp in temporary]
        for handle, shape, dtype in zip(handles, shapes, dtypes):
            np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                          "fortran_order": False, "shape": tuple(shape)})
        written = 0
        for chunk in chunks:
            for handle, rows, dtype in zip(handles, chunk, dtypes):
                handle.write(np.ascontiguousarray(rows, dtype).tobytes())
            written += len(chunk[0])
        for handle in handles:
            handle.close()
        if written != shapes[0][0]:
            raise RuntimeError(f"wrote {written} rows of {targets[0]}, expected {shapes[0][0]}")
