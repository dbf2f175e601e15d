"""Reading a request's images: multipart files named `file` or one raw `image/*` body, with the
limits on count and bytes checked before or while reading; bad input is a `BadRequest` (4xx)."""
from __future__ import annotations

from dataclasses import dataclass

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
