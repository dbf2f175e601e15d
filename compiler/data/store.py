"""The decoded-image store: each image file decoded once, kept as uint8 at the input size.

Decoding a 12-MP JPEG costs ~30 ms even at 1/8 scale; reading its 48 KB row back costs
microseconds. So a file source's images are kept, after their first decode, in one file per
(file list, decode settings) under `<runs>/.cache/images/`, and later epochs, other specs over
the same files, tune trials and `tlc evaluate` read them from there.

Layout of `<key>.u8`: a stamp per row (the file's size and mtime in ns, int64 x 2; zeros: not
stored yet), then the rows (n, h, w, c). The file is allocated whole when created (so a full disk
shows at once, and training goes on without a store), written with `pwrite` (a row, then its
stamp: a row whose stamp is there is complete, whatever was killed when) and read back with
`pread`, served from the page cache: through a memory map, every page read would count in the
process's resident memory, so a 900 MB store (6,000 images at 224x224) would look like 900 MB
more memory, though the kernel can drop those pages at any time. A row counts only while its
stamp equals the file's current size and mtime, so a file changed since is decoded again. Two
processes filling one store write the same bytes for the same file, so they need no lock beyond
the one that creates the file.

Augmentation comes after the store (it stays random per epoch); the store holds what the
decoder gives, so a stored and a decoded image are the same bytes.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np

from tlc.atomic import write_text

from .images import decode_file, decode_rule

STAMP = 16  # bytes per row's stamp: size and mtime_ns, int64 each


class ImageStore:
    """Rows for one file list at one decode setting; `read(indices)` gives uint8 images."""

    _fd: int | None = None

    def __init__(self, path: Path, files: np.ndarray, hwc: tuple[int, int, int], fit: str = "stretch"):
        self.path, self.files, self.hwc, self.fit = path, files, tuple(hwc), fit
        self.row_bytes = int(np.prod(self.hwc))
        self.decoded = self.from_store = 0
        self.failure: str | None = None  # why writing stopped (the disk filled up), if it did
        self._counts = threading.Lock()
        self._fd = os.open(path, os.O_RDWR)

    # --- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path, files: np.ndarray, hwc: tuple[int, int, int],
             fit: str = "stretch", **settings) -> tuple[ImageStore | None, str]:
        """The store for `files` at `hwc` in `folder`, created when missing; (None, why) when it
        cannot be (a full disk, an unwritable folder), so training goes on decoding every epoch.
        `settings`: a subclass's further decode settings (in its key)."""
        key = store_key(files, hwc, fit, cls.rule(fit, settings))
        path = Path(folder) / f"{key}.u8"
        size = len(files) * (STAMP + int(np.prod(hwc)))
        try:
            with _locked(Path(folder) / f"{key}.lock"):
                if not path.is_file() or path.stat().st_size != size:
                    _create(path, size)
                    write_text(Path(folder) / f"{key}.json", json.dumps(
                        {"images": len(files), "shape": list(hwc), "decode": cls.rule(fit, settings),
                         "first_file": str(files[0]) if len(files) else None}, indent=1) + "\n")
            return cls(path, files, hwc, fit, **settings), ""
        except OSError as exc:
            return None, f"image store: off (cannot keep {size / 2**20:,.0f} MB in {folder}: " \
                         f"{exc.strerror or exc}); every epoch decodes the images"

    # --- reading and filling ----------------------------------------------------------------------
    def reader(self, files: np.ndarray):
        """`read(ids)` for a subset of the files (a split, the held-out files of a run): ids index
        `files`; a file the store does not list is decoded and not kept."""
        index = {os.path.abspath(name): row for row, name in enumerate(self.files)}
        rows = np.array([index.get(os.path.abspath(name), -1) for name in files], np.int64)

        def read(ids: np.ndarray) -> np.ndarray:
            ids = np.asarray(ids)
            wanted = rows[ids]
            listed = wanted >= 0
            if listed.all():
                return self.read(wanted)
            out = np.empty((len(ids), *self.hwc), np.uint8)
            out[listed] = self.read(wanted[listed])
            out[~listed] = [self.decode(str(f)) for f in files[ids[~listed]]]
            return out

        return read

    def stored(self) -> int:
        """How many rows are stored and still match their files (for the data line)."""
        return sum(self._check(i)[1] for i in range(len(self.files)))

    def read(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), h, w, c) uint8: rows from the store, the rest decoded (and stored)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.hwc), np.uint8)
        decoded = 0
        for j, i in enumerate(indices):
            stamp, valid = self._check(i)
            if valid:
                out[j] = self.row(i)
                continue
            out[j] = self.decode(str(self.files[i]))
            decoded += 1
            if stamp is not None:
                self._write(i, out[j], stamp)
        with self._counts:
            self.decoded += decoded
            self.from_store += len(indices) - decoded
        return out

    @staticmethod
    def rule(fit: str, settings: dict) -> str:
        """What decides a row's bytes besides the file (part of the store's key)."""
        return decode_rule(fit)

    def decode(self, path: str) -> np.ndarray:
        """One file's row, decoded."""
        return decode_file(path, self.hwc[:2], self.hwc[2], self.fit)

    def _check(self, i: int) -> tuple[np.ndarray | None, bool]:
        """(the file's stamp now, None when it cannot be read; whether row i holds that version)."""
        stamp = self._stamp_now(i)
        kept = np.frombuffer(os.pread(self._fd, STAMP, int(i) * STAMP), np.int64)
        return stamp, stamp is not None and bool((kept == stamp).all())

    def row(self, i: int) -> np.ndarray:
        """Row i as stored (whether or not its stamp is there)."""
        offset = len(self.files) * STAMP + int(i) * self.row_bytes
        return np.frombuffer(os.pread(self._fd, self.row_bytes, offset), np.uint8).reshape(self.hwc)

    def _stamp_now(self, i: int) -> np.ndarray | None:
        try:
            stat = os.stat(self.files[i])
        except OSError:
            return None  # the decoder names the missing file
        return np.array([stat.st_size, stat.st_mtime_ns], np.int64)

    def _write(self, i: int, row: np.ndarray, stamp: np.ndarray) -> None:
        if self.failure is not None or self._fd is None:
            return
        n = len(self.files)
        try:
            os.pwrite(self._fd, np.ascontiguousarray(row).tobytes(), n * STAMP + int(i) * self.row_bytes)
            os.pwrite(self._fd, stamp.tobytes(), int(i) * STAMP)  # the commit point of this row
        except OSError as exc:
            self.failure = f"image store: stopped writing ({exc.strerror or exc}); the rest is decoded every epoch"

    @property
    def bytes(self) -> int:
        return len(self.files) * (STAMP + self.row_bytes)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    __del__ = close  # a store per tune trial or evaluate call: no descriptor left behind

    def record(self) -> dict:
        """metrics.json's `image_store`: where it is, what this run decoded and read from it."""
        return {"folder": str(self.path.parent.resolve()), "file": self.path.name, "images": len(self.files),
                "decoded": self.decoded, "read_from_store": self.from_store, "bytes": self.bytes,
                "stopped": self.failure}

    def opening(self) -> str:
        """The data line's store part: how much is decoded already (a stat of every file: said once)."""
        return (f"image store: {self.stored():,} of {len(self.files):,} images already decoded "
                f"({self.bytes / 2**20:,.1f} MB in {self.path.parent})")

    def summary(self) -> str:
        return (f"image store: {self.decoded:,} decoded, {self.from_store:,} read from the store "
                f"({self.bytes / 2**20:,.1f} MB at {self.path.parent})")


def store_key(files: np.ndarray, hwc: tuple[int, int, int], fit: str = "stretch", rule: str | None = None) -> str:
    """The store's name: the file list (absolute paths, in order) and the decode settings."""
    digest = hashlib.sha256(f"{tuple(int(d) for d in hwc)}|{rule or decode_rule(fit)}\n".encode())
    for name in files:
        digest.update(f"{os.path.abspath(name)}\n".encode())
    return digest.hexdigest()[:20]


class MaskStore(ImageStore):
    """Segmentation masks kept beside their images: each image's mask drawn once (class indices at
    the input size, met to it as its image is), rows of (h, w, 1) uint8. `draw(file)` makes one
    (a mask file decoded, a COCO JSON's shapes rasterized); what else decides it is in the key:
    `fill` (the ignored value, what padding takes), `colors` (an RGB mask's colour -> class),
    `source` (the COCO JSON's version and classes). A mask file that does not decode is in
    `unreadable` ({file: why}); its row, all `fill`, is not kept."""

    def __init__(self, path: Path, files: np.ndarray, hwc: tuple[int, int, int], fit: str = "stretch",
                 fill: int = 255, colors: dict | None = None, source: str | None = None, draw=None):
        super().__init__(path, files, hwc, fit)
        self.fill, self.draw = fill, draw  # (`colors`, `source`: in the key only; `draw` applies them)
        self.unreadable: dict[str, str] = {}

    @staticmethod
    def rule(fit: str, settings: dict) -> str:
        colors = sorted((settings.get("colors") or {}).items())
        source = f"|from {settings['source']}" if settings.get("source") else ""
        return f"mask|{decode_rule(fit)}|fill {settings.get('fill', 255)}|colors {colors}{source}"

    def decode(self, path: str) -> np.ndarray:
        return drawn(self.draw, path, self.hwc[:2], self.fill, self.unreadable)[..., None]

    def _write(self, i: int, row: np.ndarray, stamp: np.ndarray) -> None:
        if str(self.files[i]) not in self.unreadable:
            super()._write(i, row, stamp)


def drawn(draw, file: str, size: tuple[int, int], fill: int, unreadable: dict[str, str]) -> np.ndarray:
    """`draw(file)`, or, for a mask file that does not decode, every pixel `fill`, noted in `unreadable`."""
    from .images import UnreadableMask

    try:
        return draw(file)
    except UnreadableMask as exc:
        unreadable[file] = str(exc)
        return np.full(size, fill, np.uint8)


def kept_masks(files: np.ndarray, size: tuple[int, int], fit: str, fill: int, draw,
               **settings) -> tuple[np.ndarray, dict[str, str]]:
    """((n, h, w) class indices of `files`, {file: why} for mask files that do not decode);
    `draw(file)` makes one's mask. From the store in this process's store folder (`store_folder`),
    drawing only what it lacks; else drawn here. `settings`: `MaskStore`'s `colors` or `source`."""
    folder = store_folder.get()
    store = MaskStore.open(folder, files, (*size, 1), fit, fill=fill, draw=draw, **settings)[0] if folder else None
    if store is None:
        unreadable: dict[str, str] = {}
        masks = [drawn(draw, str(f), size, fill, unreadable) for f in files]
        return (np.stack(masks) if masks else np.zeros((0, *size), np.uint8)), unreadable
    try:
        return store.read(np.arange(len(files)))[..., 0], store.unreadable
    finally:
        store.close()


#: Where this process keeps decoded files (`<runs>/.cache/images`), set around a run's data
#: loading; a masks source keeps its masks there beside the images (None: decoded in memory).
store_folder: contextvars.ContextVar[Path | None] = contextvars.ContextVar("store_folder", default=None)


@contextlib.contextmanager
def keeping_in(folder: Path | None):
    """Data read inside the block keeps what it decodes (masks) in `folder`'s store (None: not kept)."""
    token = store_folder.set(folder)
    try:
        yield
    finally:
        store_folder.reset(token)


def _create(path: Path, size: int) -> None:
    """A zero-filled file of `size` bytes with its blocks reserved, put in place atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if size:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it
                        raise
                    os.ftruncate(fd, size)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(lock: Path):
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
