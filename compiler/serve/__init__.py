"""`tlc serve RUN`: the run's model behind HTTP (FastAPI on uvicorn), batching concurrent requests.

A package of small modules: `uploads` (reading the images of a request, limits), `batching` (the
served predictor and its batching worker), `app` (routes), `server` (socket, uvicorn).

Requests are decoded as `tlc predict` decodes files (the same decoder: upright, DCT-scaled and
antialiased; then the family preprocessing), so the answers are the same. They then wait in one queue: a single
worker takes whatever has arrived (up to `max_batch` images, waiting at most `MAX_WAIT_S` after
the first) and makes one model call for all of it, in a thread, so the event loop keeps
accepting. Under concurrent load that is one call per batch, not per request: the difference
between this and the usual `model.predict` per request (`bench/serve_load.py`).

Bad input is a 4xx with `{"error": ...}` naming the part, and the server keeps serving.
"""
from .app import create_app
from .served import Served
from .server import api_key_from, listen, serve
from .uploads import BadRequest, Limits

__all__ = ["BadRequest", "Limits", "Served", "api_key_from", "create_app", "listen", "serve"]
