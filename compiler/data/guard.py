"""What keeps one bad image file from costing the others: a header that claims more pixels than
its bytes could hold is refused before anything is allocated, the pixels being decoded at once
are bounded across threads, and what Pillow and libtiff say about a file is kept for its
refusal instead of reaching the terminal.

How far formats compress a picture (pixels per byte of a uniform 4000x4000 image, measured with
Pillow): JPEG 64-85, RGB PNG 284, GIF 1,234, bilevel PNG 2,650, bilevel TIFF (deflate) 5,319,
lossless WebP 23,599. Deflate cannot beat 1032:1, so a PNG holds at most 8,256 one-bit pixels
a byte; a 1,335-byte file claiming 84 megapixels (63,000 a byte) is no picture any of them
makes. WebP alone is left to the pixel limit: its lossless mode encodes a uniform picture in a
few hundred bytes at any size.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings

#: pixels a byte of file can hold at most, per Pillow format, with a margin of 2 over the
#: measured or theoretical limit; other formats (not WebP) use `DEFAULT_PIXELS_PER_BYTE`
PIXELS_PER_BYTE = {"PNG": 16_512, "GIF": 5_500, "JPEG": 10_000, "MPO": 10_000, "TIFF": 16_512, "BMP": 1_000}
DEFAULT_PIXELS_PER_BYTE = 25_000
UNBOUNDED = ("WEBP",)
SMALL = 1_000_000  # pixels: below this, no file is worth refusing for its size


def claims_too_much(image, nbytes: int) -> str | None:
    """Why `image`'s header (opened, not decoded) claims more pixels than `nbytes` could hold,
    or None."""
    pixels = image.width * image.height
    if pixels <= SMALL or image.format in UNBOUNDED:
        return None
    limit = PIXELS_PER_BYTE.get(image.format or "", DEFAULT_PIXELS_PER_BYTE)
    if pixels <= limit * max(nbytes, 1):
        return None
    return (f"its header claims {image.width}x{image.height} ({pixels / 1e6:,.0f} megapixels) in {nbytes:,} "
            f"bytes, more than a {image.format or 'file'} of that size can hold: not decoded")


class PixelBudget:
    """At most `limit` pixels decoded at once over every thread: a decode waits for its share,
    so a call of many large files holds about one at a time however many threads decode."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._free = threading.Condition()

    @contextlib.contextmanager
    def share(self, pixels: int):
        pixels = min(pixels, self.limit)
        with self._free:
            self._free.wait_for(lambda: self.used + pixels <= self.limit)
            self.used += pixels
        try:
            yield
        finally:
            with self._free:
                self.used -= pixels
                self._free.notify_all()


# --- what libraries say ----------------------------------------------------------------------

_said = threading.local()
_routed = False
_fd2 = threading.Lock()


def _route_warnings() -> None:
    """Warnings raised while a thread decodes go to that thread's list (`messages`), not to the
    terminal; every other warning is shown as before."""
    global _routed
    if _routed:
        return
    _routed = True
    shown = warnings.showwarning

    def route(message, category, filename, lineno, file=None, line=None):
        kept = getattr(_said, "messages", None)
        if kept is not None:
            kept.append(str(message))
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = route
    warnings.filterwarnings("always", module=r"PIL\.")  # each file's own, not once per process


@contextlib.contextmanager
def messages():
    """Collect what Pillow warns while this thread decodes one file: yields the list."""
    _route_warnings()
    _said.messages = kept = []
    try:
        yield kept
    finally:
        _said.messages = None


@contextlib.contextmanager
def c_library_messages(kept: list[str]):
    """What a C library (libtiff) prints on file descriptor 2 while the block runs, appended to
    `kept` instead of reaching the terminal. The descriptor is the process's, so such blocks run
    one at a time; they are short (one TIFF's decode)."""
    with _fd2:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                text = caught.read().decode(errors="replace")
                lines = (re.sub(r"^\S+\.tiff?: ", "", line.strip()) for line in text.splitlines())  # libtiff's
                kept.extend(dict.fromkeys(line for line in lines if line))  # name for its temporary file: not the user's
