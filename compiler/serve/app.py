"""The FastAPI application: its routes, the API-key guard, and errors as `{"error": ...}`."""
from __future__ import annotations

import asyncio
import contextlib

import numpy as np
from starlette.requests import Request  # at module level: FastAPI resolves the endpoints' annotations here

from .batching import Served
from .uploads import BadRequest, read_images


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
