"""Large blocks straight from the kernel, so memory TensorFlow frees goes back to the system.

glibc's malloc serves blocks above a threshold with mmap and returns them on free, but the
threshold rises to the size of every such block freed (up to 32 MB), so the activations of a
training step (a decoder's at 256x256: tens of MB each) end up in the heap, where freed memory
stays with the process in fragments: a U-Net's training held ~300 MB more than its work needed,
at the same speed with the threshold fixed ([performance.md](../../docs/performance.md)).
`mallopt(M_MMAP_THRESHOLD)` fixes it, as `MALLOC_MMAP_THRESHOLD_` would before start-up.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
THRESHOLD = 128 * 1024  # glibc's default, kept from rising

_done = False


def return_large_blocks() -> bool:
    """Fix malloc's mmap threshold (once; glibc only: elsewhere nothing happens). True if set."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): their allocators differ
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
    return _done
