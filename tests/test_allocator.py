"""Training's memory goes back to the system: malloc's mmap threshold stays fixed."""
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, sys
    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes, libc.mallinfo2.restype = [ctypes.c_void_p], Mallinfo2
    if sys.argv[1] == "fixed":
        from tlc.train.allocator import return_large_blocks
        assert return_large_blocks() and return_large_blocks()  # (once is enough; again is harmless)
    libc.free(libc.malloc(16 * 2**20))  # a step's activation freed: glibc raises its threshold to 16 MB
    mapped = libc.mallinfo2().hblks
    libc.malloc(2**20)
    print(libc.mallinfo2().hblks - mapped)  # 1: the block is mapped, and unmapped when freed
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_megabyte_block_is_mapped_after_a_larger_one_was_freed_once_training_set_the_threshold():
    def mapped(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                                  check=True).stdout)

    assert mapped("default") == 0  # glibc's own behaviour: it would stay in the heap when freed
    assert mapped("fixed") == 1

