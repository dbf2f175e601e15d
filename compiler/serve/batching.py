"""The served model: the run's predictor, decoding as `tlc predict` decodes files, and one
batching worker. Requests wait in one queue; the worker takes whatever has arrived (up to
`max_batch` images, waiting at most `MAX_WAIT_S` after the first) and makes one predictor call
for all of it, in a thread, so the event loop keeps accepting. Under concurrent load that is one
call per batch, not per request (`bench/serve_load.py`)."""
from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .uploads import BadRequest, Limits
from tlc.layout import RunLayout

MAX_WAIT_S = 0.005  # how long the first request of a batch waits for company
IN_FLIGHT = max(2, os.cpu_count() or 2)  # model calls running at once, each on one core
DECODERS = 8  # threads decoding uploads (Pillow releases the GIL while it decodes)


def one_core_per_call() -> None:
    """TensorFlow runs each op on every core by default; for the small ops of a serving batch,
    splitting them costs more than it gains. One core per model call and `IN_FLIGHT` calls at
    once doubled throughput (MobileNetV2 at 160x160, two calls of 5 images: 389 -> 823 img/s on
    2 cores). Set before the runtime starts; inside a process that already ran TensorFlow (a
    test) its threads stay as they are."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # "... cannot be modified after initialization"
        pass


@dataclass
class Served:
    """The run's predictor, ready to answer: decoding, the batched call, and what /metadata says."""

    run: Any
    predictor: Any
    sha256: str
    limits: Limits
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    calls: int = 0  # model calls made, and the images they classified (/metadata says both)
    images: int = 0
    # threads of their own, so decoding never waits behind a model call (and the reverse)
    model_calls: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(IN_FLIGHT, "tlc-model"))
    decoders: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(DECODERS, "tlc-decode"))
    _running: set = field(default_factory=set)  # the model calls' tasks

    @classmethod
    def load(cls, run, limits: Limits, *, safe_mode: bool = True) -> Served:
        """`run`: a `Run` (or its folder); its batch shapes are traced before the first request."""
        from tlc.use.predictor import Predictor
        from tlc.use.run import Run
        from tlc.build.weights import file_sha256

        one_core_per_call()
        run = Run.of(run)
        served = cls(run, Predictor.of_run(run, safe_mode=safe_mode), file_sha256(str(run.model_path)), limits)
        served.predictor.warm()
        return served

    def decode(self, name: str, contents: bytes) -> np.ndarray:
        """One uploaded image -> (h, w, c) in [0, 1], decoded as `tlc predict` decodes files
        (upright, DCT-scaled, antialiased); an undecodable part is a 400 naming it."""
        from tlc.data.images import ImageError, decode_bytes

        if not contents:
            raise BadRequest(400, f"{name}: empty")
        h, w, c = self.run.spec.input.hwc
        try:
            return decode_bytes(contents, (h, w), c, name, self.predictor.fit).astype(np.float32) / 255.0
        except ImageError as exc:
            raise BadRequest(400, f"{exc} (PNG, JPEG, GIF, BMP or WebP)") from None

    async def predict(self, images: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def batcher(self) -> None:
        """The one worker: gather queued requests into batches of up to max_batch images, and keep
        up to `IN_FLIGHT` model calls running (while one computes, the next gathers and starts:
        one call alone leaves the cores idle between its small layers). With every slot busy,
        requests wait in the queue, so the next batch is larger."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(IN_FLIGHT)
        while True:
            await slots.acquire()
            pending = [await self.queue.get()]
            count = len(pending[0][0])
            deadline = loop.time() + MAX_WAIT_S
            while count < self.limits.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                pending.append(item)
                count += len(item[0])
            task = asyncio.create_task(self._answer(pending, slots))
            self._running.add(task)  # (the loop keeps only weak references to tasks)
            task.add_done_callback(self._running.discard)

    async def _answer(self, pending: list, slots: asyncio.Semaphore) -> None:
        """One model call for the gathered requests, then each request's share of the scores."""
        try:
            batch = np.concatenate([images for images, _ in pending])
            scores = await asyncio.get_running_loop().run_in_executor(
                self.model_calls, self.predictor.probabilities, batch, self.limits.max_batch)
            self.calls += -(-len(batch) // self.limits.max_batch)  # counted here, on the event loop's one thread
            self.images += len(batch)
        except Exception as exc:  # a failed model call fails its requests, not the server
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            slots.release()
        start = 0
        for images, future in pending:
            if not future.done():
                future.set_result(scores[start:start + len(images)])
            start += len(images)

    def answer(self, names: list[str], scores: np.ndarray, top: int) -> dict:
        predictions = [{"file": name, "top": [{"class": t["class"], "probability": t["probability"]} for t in best]}
                       for name, best in zip(names, self.predictor.top(scores, top))]
        return {"predictions": predictions, "model": {"name": self.run.spec.name, "sha256": self.sha256}}

    @functools.cached_property
    def resolved_spec(self) -> dict:
        """The run's spec.lock.yaml as data, read once."""
        import yaml

        return yaml.safe_load(RunLayout(self.run.folder).spec_lock.read_text())

    def class_index(self, name: str | None) -> int | None:
        """`?class=NAME` of /explain: its index (None: the top prediction); an unknown name is a 400."""
        from tlc.errors import UsageError
        from tlc.use.explain import class_index

        try:
            return class_index(self.run.classes, name, option="class")
        except UsageError as exc:
            raise BadRequest(400, str(exc)) from None

    @functools.cached_property
    def explainer(self):
        """Grad-CAM over the served predictor (`tlc explain`'s), built on the first /explain."""
        from tlc.use.explain import Explainer

        return Explainer(self.run, self.predictor)

    def explain(self, image: np.ndarray, wanted: int | None, tta: str | None = None):
        return self.explainer(image[None], wanted, tta=tta)[0]

    @staticmethod
    def tta_of(value: str | None) -> str | None:
        """`?tta=flip`: the test-time augmentation asked for (None: none); another value is a 400."""
        from tlc.use.formats import TTA

        if value in (None, "", "none"):
            return None
        if value not in TTA:
            raise BadRequest(400, f"tta: expected {' or '.join(TTA)} (or none), got {value!r}")
        return value

    def picture_png(self, item, name: str) -> bytes:
        """`tlc explain`'s picture of one image, as PNG bytes."""
        import io

        buffer = io.BytesIO()
        self.explainer.picture([item], [name])(buffer)
        return buffer.getvalue()

    @staticmethod
    def overlay_png(item, name: str = "") -> bytes:
        """The heat map alone in `tlc explain`'s colours (jet), opaque, as an RGBA PNG at the input size."""
        import io

        import matplotlib
        from PIL import Image

        rgba = (matplotlib.colormaps["jet"](np.clip(item.heat, 0, 1)) * 255).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
        return buffer.getvalue()

    def metadata(self) -> dict:
        return {"name": self.run.spec.name, "classes": self.run.classes, "input_shape": list(self.run.spec.input.hwc),
                "sha256": self.sha256, "spec": self.resolved_spec,
                "served": {"images": self.images, "model_calls": self.calls, "max_batch": self.limits.max_batch,
                           "max_images": self.limits.max_images, "max_bytes": self.limits.max_bytes}}
