"""The ingest baseline: the sidecar's server stack with a handler that only decodes the body.

Run as ``python -m bench._decode_server --port 0``. It serves ``POST /v1/events`` with uvicorn and
Starlette under the same uvicorn settings as the sidecar, reads the body, decodes it with
``orjson.loads`` and answers 202 with the event count, nothing more. The bound port is logged as
one JSON line on stderr, like the sidecar's, so the benchmark starts both the same way.
"""

from __future__ import annotations

import argparse
import socket
import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench._server import uvicorn_options


async def _events(request: Request) -> Response:
    body = await request.body()
    decoded = orjson.loads(body)
    answer = {"accepted": len(decoded["events"]), "rejected": []}
    return Response(orjson.dumps(answer), status_code=202, media_type="application/json")


def create_app() -> Starlette:
    """The decode-only ingest app."""
    return Starlette(routes=[Route("/v1/events", _events, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    """Bind, log the port, serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m bench._decode_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # asyncio sets TCP_NODELAY on accepted connections only when proto says TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(), **uvicorn_options())
    server = uvicorn.Server(config)
    sys.stderr.write(orjson.dumps({"message": "listening", "ingest_port": port}).decode() + "\n")
    sys.stderr.flush()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
