"""Write files so that a reader sees either the old file or the complete new one, never half.

Write to a temporary file beside the target, then `os.replace` (atomic on POSIX); on any
failure the temporary file is removed and the target is untouched.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def replacing(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffix) that replaces `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{''.join(target.suffixes[-1:])}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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
