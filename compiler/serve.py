"""`tlc serve RUN`: the run's model behind HTTP (FastAPI on uvicorn), batching concurrent requests.

Requests are decoded as `tlc predict` decodes files (the same decoder: upright, DCT-scaled and
antialiased; then the family preprocessing), so the answers are the same. They then wait in one queue: a single
worker takes whatever has arrived (up to `max_batch` images, waiting at most `MAX_WAIT_S` after
the first) and makes one model call for all of it, in a thread, so the event loop keeps
accepting. Under concurrent load that is one call per batch, not per request: the difference
between this and the usual `model.predict` per request (`bench/serve_load.py`).

Bad input is a 4xx with `{"error": ...}` naming the part, and the server keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.requests import Request  # at module level: FastAPI resolves the endpoints' annotations here

from .errors import RunError, UsageError

MAX_WAIT_S = 0.005  # how long the first request of a batch waits for company
PREDICT_FIELD = "file"


@dataclass
class Limits:
    max_batch: int = 32
    max_images: int = 64
    max_bytes: int = 20_000_000


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


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

    @classmethod
    def load(cls, run, limits: Limits, *, safe_mode: bool = True) -> Served:
        """`run`: a `Run` (or its folder); its batch shapes are traced before the first request."""
        from .predictor import Predictor
        from .train.runs import Run
        from .weights import file_sha256

        run = Run.of(run)
        served = cls(run, Predictor.of_run(run, safe_mode=safe_mode), file_sha256(str(run.model_path)), limits)
        served.predictor.warm({1, limits.max_batch})
        return served

    def decode(self, name: str, contents: bytes) -> np.ndarray:
        """One uploaded image -> (h, w, c) in [0, 1], decoded as `tlc predict` decodes files
        (upright, DCT-scaled, antialiased); an undecodable part is a 400 naming it."""
        from .data.images import ImageError, decode_bytes

        if not contents:
            raise BadRequest(400, f"{name}: empty")
        h, w, c = self.run.spec.input.hwc
        try:
            return decode_bytes(contents, (h, w), c, name).astype(np.float32) / 255.0
        except ImageError as exc:
            raise BadRequest(400, f"{exc} (PNG, JPEG, GIF, BMP or WebP)") from None

    async def predict(self, images: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def batcher(self) -> None:
        """The one worker: gather queued requests into batches of up to max_batch images."""
        loop = asyncio.get_running_loop()
        while True:
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
            try:
                batch = np.concatenate([images for images, _ in pending])
                scores = await loop.run_in_executor(None, self._chunked, batch)
            except Exception as exc:  # a failed model call fails its requests, not the server
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for images, future in pending:
                if not future.done():
                    future.set_result(scores[start:start + len(images)])
                start += len(images)

    def _chunked(self, batch: np.ndarray) -> np.ndarray:
        size = self.limits.max_batch
        self.calls += -(-len(batch) // size)
        self.images += len(batch)
        return self.predictor.probabilities(batch, size)

    def answer(self, names: list[str], scores: np.ndarray, top: int) -> dict:
        predictions = [{"file": name, "top": [{"class": t["class"], "probability": t["probability"]} for t in best]}
                       for name, best in zip(names, self.predictor.top(scores, top))]
        return {"predictions": predictions, "model": {"name": self.run.spec.name, "sha256": self.sha256}}

    @functools.cached_property
    def resolved_spec(self) -> dict:
        """The run's spec.lock.yaml as data, read once."""
        import yaml

        return yaml.safe_load((self.run.folder / "spec.lock.yaml").read_text())

    def metadata(self) -> dict:
        return {"name": self.run.spec.name, "classes": self.run.classes, "input_shape": list(self.run.spec.input.hwc),
                "sha256": self.sha256, "spec": self.resolved_spec,
                "served": {"images": self.images, "model_calls": self.calls, "max_batch": self.limits.max_batch}}


def create_app(served: Served, api_key: str | None = None):
    """The FastAPI application for a loaded model."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker = asyncio.create_task(served.batcher())
        yield
        worker.cancel()

    app = FastAPI(title=f"tlc serve: {served.run.spec.name}", lifespan=lifespan)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):  # 404 / 405 in the same shape as every other error
        return error(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key is not None and request.url.path != "/health":
            if request.headers.get("authorization") != f"Bearer {api_key}":
                return error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        try:
            return await call_next(request)
        except BadRequest as exc:
            return error(exc.status, exc.message)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        return served.metadata()

    @app.post("/predict")
    async def predict(request: Request):
        try:
            top = int(request.query_params.get("top", 3))
        except ValueError:
            return error(400, f"top: expected a whole number, got {request.query_params.get('top')!r}")
        if top < 1:
            return error(400, f"top: must be at least 1, got {top}")
        try:
            parts = await read_images(request, served.limits)
            images = await asyncio.get_running_loop().run_in_executor(
                None, lambda: np.stack([served.decode(name, data) for name, data in parts]))
        except BadRequest as exc:
            return error(exc.status, exc.message)
        scores = await served.predict(images)
        return served.answer([name for name, _ in parts], scores, top)

    return app


async def read_images(request, limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image of a request: multipart files named `file`, or one raw
    `image/*` body; limits on count and bytes are checked before or while reading."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise BadRequest(413, f"the body is {int(declared):,} bytes; the limit is {limits.max_bytes:,} (--max-bytes)")
    kind = request.headers.get("content-type", "")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_bytes:
            raise BadRequest(413, f"the body is over {limits.max_bytes:,} bytes (--max-bytes)")
    if kind.startswith("image/"):
        return [("body", bytes(body))]
    if not kind.startswith("multipart/form-data"):
        raise BadRequest(415, f"send images as multipart/form-data (field {PREDICT_FIELD!r}) or one raw image "
                              f"body with Content-Type image/...; got {kind or 'no Content-Type'!r}")
    form = await _parse_form(kind, bytes(body), limits)
    parts = form.getlist(PREDICT_FIELD)
    if not parts:
        raise BadRequest(400, f"no images: the form has no {PREDICT_FIELD!r} field")
    if len(parts) > limits.max_images:
        raise BadRequest(413, f"{len(parts)} images; the limit is {limits.max_images} per request (--max-images)")
    out = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            raise BadRequest(400, f"{PREDICT_FIELD}[{i}]: a text field, not a file")
        out.append((part.filename or f"{PREDICT_FIELD}[{i}]", await part.read()))
    return out


async def _parse_form(kind: str, body: bytes, limits: Limits):
    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    try:
        return await MultiPartParser(Headers({"content-type": kind}), stream(), max_files=limits.max_images + 1,
                                     max_fields=limits.max_images + 16, max_part_size=limits.max_bytes).parse()
    except MultiPartException as exc:
        raise BadRequest(400, f"malformed multipart body: {exc.message}") from None


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, so a taken port is a clear error before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RunError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def api_key_from(variable: str | None) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise UsageError(f"--api-key-env {variable}: that environment variable is not set (or empty)")
    return value


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT once its graceful shutdown is done, so the process
        would die of the signal (exit 143 or 130); a requested stop is a clean exit 0 here."""

        async def shutdown(self, sockets=None):
            await super().shutdown(sockets=sockets)
            getattr(self, "_captured_signals", []).clear()  # uvicorn's private list, guarded

    return Server


def serve(run, *, host: str, port: int, limits: Limits, api_key: str | None, safe_mode: bool,
          announce) -> None:
    """Load, listen, serve until SIGTERM or Ctrl-C (uvicorn finishes the requests in flight)."""
    import uvicorn

    sock = listen(host, port)
    served = Served.load(run, limits, safe_mode=safe_mode)
    app = create_app(served, api_key)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=30)
    server = _server_class()(config)
    bound = sock.getsockname()[1]
    announce(f"serving {served.run.spec.name} on http://{host}:{bound} (model sha256 {served.sha256[:12]}; "
             f"POST /predict, GET /health, GET /metadata)")
    server.run(sockets=[sock])
    if not server.started:
        raise RunError("the server did not start")
    announce(f"stopped: {served.images:,} images classified in {served.calls:,} model calls")
