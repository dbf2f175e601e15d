"""One batching worker in front of the model: requests wait in one queue; the worker takes
whatever has arrived (up to `max_batch` images, waiting at most `MAX_WAIT_S` after the first) and
makes one predictor call for all of it, in a thread, so the event loop keeps accepting. Under
concurrent load that is one call per batch, not per request (`bench/serve_load.py`)."""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

MAX_WAIT_S = 0.005  # how long the first request of a batch waits for company
IN_FLIGHT = max(2, os.cpu_count() or 2)  # model calls running at once, each on one core


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
class Batcher:
    """Batches of queued requests through `call` (images, batch size -> scores)."""

    call: Callable[[np.ndarray, int], np.ndarray]
    max_batch: int
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    calls: int = 0  # model calls made, and the images they classified (/metadata says both)
    images: int = 0
    # threads of their own, so a model call never waits behind decoding (and the reverse)
    model_calls: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(IN_FLIGHT, "tlc-model"))
    _running: set = field(default_factory=set)  # the model calls' tasks

    async def predict(self, images: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def run(self) -> None:
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
            while count < self.max_batch:
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
                self.model_calls, self.call, batch, self.max_batch)
            self.calls += -(-len(batch) // self.max_batch)  # counted here, on the event loop's one thread
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
