"""Helpers shared by the test modules (which never import each other): Keras-side counts
independent of tlc's arithmetic, fresh interpreters, generated image folders, runs and servers."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

from tlc.show.progress import Reporter

from tlc.plugin.components import Backbone


def keras_layers(model) -> list[dict]:
    """What Keras itself says about each layer."""
    return [{"name": layer.name, "kind": type(layer).__name__,
             "output_shape": tuple(int(d) for d in layer.output.shape[1:]),
             "params": layer.count_params(), "trainable": layer.trainable}
            for layer in model.layers]


def trainable_count(model) -> int:
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def one_type_per_family() -> list[str]:
    """The first keras.applications type of each family module (its variants share its code)."""
    from tlc.plugin import zoo

    return sorted(kinds[0] for kinds in zoo.by_family().values())


def keras_builds(spec, height: int, width: int) -> bool:
    """Does plain Keras accept this spec's layers at height x width? (No tlc planning involved.)"""
    import keras

    backbone: Backbone = spec.backbone.model_copy(update={"weights": None})
    try:
        model = backbone.build((height, width, spec.input.shape[2]))
        if spec.backbone.output is not None:
            model = keras.Model(model.input, model.get_layer(spec.backbone.output).output
                                if isinstance(spec.backbone.output, str)
                                else model.layers[spec.backbone.output].output)
        spec.head.build(model.output)
    except ValueError:
        return False
    return True


def with_input(spec, height: int, width: int):
    from tlc.spec.models import InputSpec

    return spec.model_copy(update={"input": InputSpec(shape=[height, width, spec.input.shape[2]])})


def without_weights(spec):
    """The same spec with `weights: null`, for building offline."""
    return spec.model_copy(update={"backbone": spec.backbone.model_copy(update={"weights": None})})


# --- processes: the console script, fresh interpreters -----------------------------------------

def tlc_executable() -> str:
    """The `tlc` console script beside the interpreter running the tests (the venv's), else PATH's."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "tlc"
    return str(beside) if beside.exists() else (shutil.which("tlc") or "tlc")


_FRESH = """
import json, sys
from typer.testing import CliRunner
from tlc.cli import app
results = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(app, args)
    results.append({"exit_code": r.exit_code, "stdout": r.stdout, "output": r.output})
prefixes = tuple(json.loads(sys.argv[2]))
imported = sorted(m for m in sys.modules if m.split('.')[0] in prefixes or m.startswith(prefixes))
print(json.dumps({"results": results, "imported": imported}))
"""


def in_fresh_interpreter(*commands, modules=("tensorflow", "keras"), env=None) -> tuple[list[dict], list[str]]:
    """Run CLI commands (lists of arguments) in a new Python process; returns each one's
    {exit_code, stdout, output} and the imported modules named by, or starting with, `modules`
    (so a test can say what a command never imports)."""
    import json
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FRESH, json.dumps([[str(a) for a in c] for c in commands]),
                           json.dumps(list(modules))], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["results"], report["imported"]


# --- runs and specs ----------------------------------------------------------------------------

def rows_of(folder) -> list[dict]:
    """A run's history.csv rows (strings, as written)."""
    import csv

    with open(folder / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def spec_from_data(data: dict, name: str = "case"):
    """A validated spec from plain data, as if read from `<name>.yaml` (no file needed)."""
    from tlc.spec.loader import Document
    from tlc.spec.validation import validate

    return validate(Document(path=f"{name}.yaml", data={"name": name, **data}))


# --- generated image folders -------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle")


def draw_shapes(folder, per_class: int, size: tuple[int, int] = (48, 48), seed: int = 0,
                suffix: str = ".png", noise: int = 140, ink: int = 170) -> list[tuple[str, str, int]]:
    """A folder of class sub-folders (circle, square, triangle): each image is noise (0..noise)
    with one filled shape (colour ink..255) in a random quadrant. Returns (path, class, quadrant)
    per image; quadrants are 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    from pathlib import Path

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = size
    out = []
    for label in SHAPES:
        (Path(folder) / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(0, noise, (height, width, 3), dtype=np.uint8))
            quadrant = int(rng.integers(4))
            r = int(min(height, width) * rng.uniform(0.14, 0.2))
            cy = (height // 4) * (1 + 2 * (quadrant // 2)) + int(rng.integers(-2, 3))
            cx = (width // 4) * (1 + 2 * (quadrant % 2)) + int(rng.integers(-2, 3))
            colour = tuple(int(c) for c in rng.integers(ink, 256, 3))
            draw_shape(ImageDraw.Draw(image), label, cx, cy, r, colour)
            path = Path(folder) / label / f"{label}_{i:04d}{suffix}"
            image.save(path)
            out.append((str(path), label, quadrant))
    return out


def draw_shape(draw, shape: str, cx: float, cy: float, r: float, colour: tuple) -> None:
    """A filled circle, square or (anything else) triangle of radius `r` around (cx, cy)."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)


def draw_tagged(folder, n: int, size: tuple[int, int] = (48, 48), seed: int = 0, suffix: str = ".png",
                tags: tuple[str, ...] = SHAPES, empty: float = 0.05) -> list[dict]:
    """Images of any number of shapes (each of `tags` present with probability 0.5, none in about
    `empty` of them; one per quadrant, over noise) and `labels.csv` beside them (path, tags as
    space-separated names, a 0/1 column per shape, and `size`: the shapes' radii summed, in
    pixels). Returns the csv's rows."""
    import csv
    from pathlib import Path

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = size
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        present = [t for t in tags if rng.random() < 0.5] if rng.random() >= empty else []
        image = Image.fromarray(rng.integers(0, 120, (height, width, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        total = 0.0
        for shape, quadrant in zip(present, rng.permutation(4)):
            r = int(min(height, width) * rng.uniform(0.08, 0.22))
            cy = (height // 4) * (1 + 2 * (quadrant // 2))
            cx = (width // 4) * (1 + 2 * (quadrant % 2))
            colour = tuple(int(c) for c in rng.integers(170, 256, 3))
            draw_shape(draw, shape, cx, cy, r, colour)
            total += r
        name = f"images/{i:05d}{suffix}"
        image.save(folder / name)
        rows.append({"path": name, "tags": " ".join(present), **{t: int(t in present) for t in tags},
                     "size": round(total, 2)})
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


PALETTE = [0, 0, 0, 230, 80, 60, 60, 120, 230, 250, 210, 60] + [0] * (256 - 4) * 3


def draw_masks(folder, n: int, size: tuple[int, int] = (64, 64), seed: int = 0, suffix: str = ".png") -> None:
    """`images/` and `masks/` under `folder`: noise with a circle (class 1) and a square (class 2)
    somewhere in each image, their palette PNG masks of class indices (0: background), paired by
    file stem; a thin ring of 255 (ignored) around each shape."""
    from pathlib import Path

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = size
    for part in ("images", "masks"):
        (Path(folder) / part).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = Image.fromarray(rng.integers(0, 120, (height, width, 3), dtype=np.uint8))
        mask = Image.new("P", (width, height), 0)
        mask.putpalette(PALETTE)
        draw, drawn = ImageDraw.Draw(image), ImageDraw.Draw(mask)
        for shape, cell in zip(("circle", "square"), rng.permutation(4)[:2]):
            r = int(min(height, width) * rng.uniform(0.1, 0.2))
            cy = (height // 4) * (1 + 2 * (cell // 2)) + int(rng.integers(-3, 4))
            cx = (width // 4) * (1 + 2 * (cell % 2)) + int(rng.integers(-3, 4))
            draw_shape(draw, shape, cx, cy, r, tuple(int(c) for c in rng.integers(170, 256, 3)))
            draw_shape(drawn, shape, cx, cy, r + 1, 255)
            draw_shape(drawn, shape, cx, cy, r - 1, 1 if shape == "circle" else 2)
        image.save(Path(folder) / "images" / f"{i:04d}{suffix}")
        mask.save(Path(folder) / "masks" / f"{i:04d}.png")


def unboxed(text: str) -> str:
    """A CLI message as one line: typer's rich error panel wraps it and draws borders around it."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def photos(root, classes=("cat", "dog"), n=6, size=(20, 24), seed=0):
    """A folder of small JPEGs, one sub-folder per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (*size, 3)).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.jpg", quality=90)
    return root


# --- training and serving ----------------------------------------------------------------------

class StopAfter(Reporter):
    """A progress reporter that interrupts training after `epochs` epochs (as Ctrl-C would)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def epoch_done(self, epoch, row):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt


@contextlib.contextmanager
def serving(run, *args, env=None, expect_exit=0):
    """A `tlc serve` process on a free port: yields (base URL, process); stops it with SIGTERM."""
    import os
    import re
    import signal
    import subprocess
    import threading

    process = subprocess.Popen([tlc_executable(), "serve", str(run), "--port", "0", *args], stderr=subprocess.PIPE,
                               text=True, env={**os.environ, **(env or {})})
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in process.stderr:
            lines.append(line)
            if "serving " in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    assert ready.wait(120) and process.poll() is None, "".join(lines)
    url = re.search(r"on (http://127\.0\.0\.1:\d+)", "".join(lines)).group(1)
    try:
        yield url, process, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(60) == expect_exit, "".join(lines)


def files_of(drawn, n):
    return [Path(path) for path, _, _ in drawn[::len(drawn) // n][:n]]


def predicted(run, files) -> dict[str, list]:
    """`tlc predict`'s answers, by file name."""
    import json

    from .conftest import tlc

    result = tlc("predict", run, *files, "--json", "--top", "3")
    assert result.exit_code == 0, result.output
    return {Path(r["image"]).name: [(t["class"], t["probability"]) for t in r["top"]] for r in json.loads(result.stdout)}
