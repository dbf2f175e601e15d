"""Running the server: a socket bound before the model loads (a taken port fails at once), the
API key from the environment, uvicorn with a clean exit on SIGTERM."""
from __future__ import annotations

import os
import socket

from tlc.errors import RunError, UsageError

from .app import create_app
from .served import Served
from .uploads import Limits


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, so a taken port is a clear error before the model loads.

    Its protocol is named (IPPROTO_TCP, not 0): asyncio turns Nagle's algorithm off only on
    accepted sockets whose `proto` says TCP, and with it on every answer waited for an ACK
    (168 -> 224 req/s on MobileNetV2 under 16 clients)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
    announce(f"serving {served.run.spec.name} on http://{host}:{bound} (model sha256 {served.sha256[:12]}): "
             f"a page for people at /; POST /predict, POST /explain, GET /metadata, GET /health")
    server.run(sockets=[sock])
    if not server.started:
        raise RunError("the server did not start")
    announce(f"stopped: {served.batcher.images:,} images classified in {served.batcher.calls:,} model calls")
