"""Memory of a call that holds bad files: `tlc predict` on one good photo alone, and on the same
photo with five small files whose headers claim ~84 megapixels each (a few dozen bytes apiece),
whole processes side by side. Target: the bombs cost no memory (ratio <= 1.1) and every file is
answered (the good one classified, each bomb named, exit 1).

    python bench/bad_files.py
"""
from __future__ import annotations

import json
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from _timing import run_python, tlc_code
from PIL import Image

SPEC = """
input: {shape: [64, 64, 3]}
backbone: {type: conv_stack, blocks: [{filters: 8, strides: 2}, {filters: 16}]}
head: {type: dense, pooling: avg, classes: 2}
train:
  data: {type: directory, path: photos, validation_split: 0.2}
  epochs: 1
"""


def bomb(width: int = 9_000, height: int = 9_300) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) \
        + chunk(b"IEND", b"")


def main(rounds: int = 3) -> None:
    folder = Path(tempfile.mkdtemp(prefix="tlc-bad-files-"))
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (folder / "photos" / label).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / "photos" / label / f"{i}.jpg")
    (folder / "spec.yaml").write_text(SPEC)
    run_python(tlc_code("train", str(folder / "spec.yaml"), "--runs", str(folder / "runs")))
    good = str(folder / "photos" / "a" / "0.jpg")
    bombs = []
    for i in range(5):
        (folder / f"bomb{i}.png").write_bytes(bomb())
        bombs.append(str(folder / f"bomb{i}.png"))
    run = str(folder / "runs" / "spec")
    peaks: dict[str, list[float]] = {"one good photo": [], "the photo and 5 bombs": []}
    answers = None
    for _ in range(rounds):  # alternating, so both see the same machine
        for label, files in (("one good photo", [good]), ("the photo and 5 bombs", [good, *bombs])):
            code = f"try:\n    {tlc_code('predict', run, *files, '--json').replace(chr(10), chr(10) + '    ')}\nexcept SystemExit:\n    pass\n"
            _, peak, out = run_python(code)
            peaks[label].append(peak)
            if len(files) > 1:
                answers = json.loads(out)
    alone, mixed = (float(np.median(peaks[k])) for k in peaks)
    sizes = sorted({Path(b).stat().st_size for b in bombs})
    print(f"bombs: 5 PNGs of {sizes[0]} bytes, each claiming 9000x9300 (84 megapixels)")
    print(f"peak RSS, median of {rounds}: one good photo {alone:,.0f} MB; with the 5 bombs {mixed:,.0f} MB; "
          f"ratio {mixed / alone:.2f}x  [target <= 1.1x]")
    classified = sum("top" in a for a in answers)
    named = [a["error"] for a in answers if "error" in a]
    print(f"answers: {classified} classified, {len(named)} refused; e.g. {named[0]}")
    sys.exit(0 if mixed / alone <= 1.1 and classified == 1 and len(named) == 5 else 1)


if __name__ == "__main__":
    main()
