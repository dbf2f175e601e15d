"""The FastAPI application: its routes, the API-key guard, and errors as `{"error": ...}`.

`GET /` is the page for people (`page.html`: one file, its script inline, nothing from another
origin); it asks the API routes for everything it shows, so it needs no key itself."""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import quote

import numpy as np
from starlette.requests import Request  # at module level: FastAPI resolves the endpoints' annotations here

from tlc.use.predictor import split_views, tta_views, unmirrored

from .served import Served
from .uploads import BadRequest, read_images

PAGE = Path(__file__).with_name("page.html")
OPEN_PATHS = ("/", "/health")  # what answers without the API key: the page asks for the key itself


class KeyGuard:
    """A plain ASGI middleware (Starlette's `BaseHTTPMiddleware` costs every request a detour
    through memory streams): the API key on every path but `OPEN_PATHS`."""

    def __init__(self, app, key: str, refuse):
        self.app, self.expected, self.refuse = app, f"Bearer {key}".encode(), refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            if dict(scope["headers"]).get(b"authorization") != self.expected:
                return await self.refuse(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(served: Served, api_key: str | None = None):
    """The FastAPI application for a loaded model."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker = asyncio.create_task(served.batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title=f"tlc serve: {served.run.spec.name}", lifespan=lifespan)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):  # 404 / 405 in the same shape as every other error
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(BadRequest)
    async def bad_request(request, exc):
        return error(exc.status, exc.message)

    if api_key is not None:
        app.add_middleware(KeyGuard, key=api_key, refuse=error(401, "missing or wrong API key "
                                                                    "(Authorization: Bearer <key>)"))

    page = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def home():
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                                                      "script-src 'unsafe-inline'; style-src 'unsafe-inline'"})

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
            tta = served.tta_of(request.query_params.get("tta"))
            parts = await read_images(request, served.limits)
        except BadRequest as exc:
            return error(exc.status, exc.message)
        decoded = await asyncio.get_running_loop().run_in_executor(served.decoders, served.decode_parts, parts)
        good = [image for image in decoded if not isinstance(image, str)]
        if not good:  # nothing to answer: a 4xx naming every part
            return error(400, "; ".join(decoded))
        images = np.stack(good)
        scores = await served.predict(tta_views(images, tta))  # the views go through the batching like images
        scores = unmirrored(split_views(scores, len(images)), tta).mean(axis=0)
        if request.query_params.get("format") == "png":  # a segmentation's mask itself (the first image's)
            return served.mask_png(parts, decoded, scores)
        return served.answer(parts, decoded, scores, top)

    @app.post("/explain")
    async def explain(request: Request):
        """One image's Grad-CAM: `tlc explain`'s picture, or with `?overlay=1` the heat map alone (an
        RGBA PNG at the input size, for drawing over the photo); class, probability and layer in headers."""
        loop = asyncio.get_running_loop()
        try:
            wanted = served.heat_maps.class_index(request.query_params.get("class"))
            tta = served.tta_of(request.query_params.get("tta"))
            parts = await read_images(request, served.limits)
            if len(parts) != 1:
                raise BadRequest(400, f"/explain takes one image; got {len(parts)}")
            (name, data), = parts
            image = await loop.run_in_executor(served.decoders, served.decode, name, data)
        except BadRequest as exc:
            return error(exc.status, exc.message)
        item = await loop.run_in_executor(None, served.heat_maps.explain, image, wanted, tta)
        overlay = request.query_params.get("overlay", "0").lower() not in ("0", "false", "no", "")
        png = await loop.run_in_executor(None, served.heat_maps.overlay_png if overlay else served.heat_maps.picture_png, item, name)
        return Response(png, media_type="image/png", headers={
            "X-TLC-Class": quote(served.run.classes[item.class_index], safe=" !#$&'()*+,/:;=?@[]~"),
            "X-TLC-Probability": repr(item.probability), "X-TLC-Layer": served.heat_maps.explainer.layer,
            "X-TLC-Placement": served.heat_maps.placement(data)})

    return app
