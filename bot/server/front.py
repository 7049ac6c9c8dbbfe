"""The intake front: a buffering reverse proxy between the network and gunicorn.

gunicorn's threaded worker gives each connection a thread while it reads the request,
so ten clients that open a connection and send nothing, or send a body one byte at a
time, hold every thread and ``/healthz`` stops answering. gunicorn's own advice is a
buffering proxy in front of it; this is that proxy, built in so that ``sluice serve``
still starts from its environment alone.

One asyncio loop holds any number of slow connections for the price of a socket. A
request is forwarded only once it is complete: headers within ``HEADER_TIMEOUT_S``
(aiohttp closes a connection that has not sent a whole request by then), the body
within ``BODY_TIMEOUT_S`` and ``MAX_BODY_BYTES``. gunicorn, on a Unix socket only the
front can reach, then sees nothing but whole requests arriving at local speed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 20.0
UPSTREAM_TIMEOUT_S = 60.0
MAX_CONNECTIONS_UPSTREAM = 32
# RFC 9110 §7.6.1 hop-by-hop fields, and what the proxy itself recomputes.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


class _Front:
    def __init__(self, upstream_socket: str, max_body_bytes: int) -> None:
        self.upstream_socket = upstream_socket
        self.max_body_bytes = max_body_bytes
        self.session: aiohttp.ClientSession | None = None

    async def start(self, _app: web.Application) -> None:
        connector = aiohttp.UnixConnector(path=self.upstream_socket, limit=MAX_CONNECTIONS_UPSTREAM)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    async def stop(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if (request.content_length or 0) > self.max_body_bytes:
            return _error(413, f"body larger than {self.max_body_bytes} bytes")
        try:
            body = await asyncio.wait_for(self._read_body(request), BODY_TIMEOUT_S)
        except TimeoutError:
            return _error(408, f"request body not received within {BODY_TIMEOUT_S:g}s")
        if body is None:
            return _error(413, f"body larger than {self.max_body_bytes} bytes")
        return await self._forward(request, body)

    async def _read_body(self, request: web.Request) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            parts.append(chunk)

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self.session is not None
        try:
            async with self.session.request(
                request.method,
                f"http://sluice{request.rel_url}",
                headers=_end_to_end(request.headers.items()),
                data=body,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                headers = _end_to_end(upstream.headers.items())
                return web.Response(status=upstream.status, body=payload, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("intake front: the HTTP worker did not answer: %s", exc)
            return _error(502, "the HTTP worker did not answer; try again")


def _end_to_end(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(upstream_socket: str, max_body_bytes: int) -> web.Application:
    front = _Front(upstream_socket, max_body_bytes)
    # The body is read by the handler, under its own limit and deadline.
    app = web.Application(client_max_size=max_body_bytes + 1)
    app.on_startup.append(front.start)
    app.on_cleanup.append(front.stop)
    app.router.add_route("*", "/{tail:.*}", front.handle)
    return app


def serve(bind: str, upstream_socket: str, max_body_bytes: int) -> None:
    """Serve until SIGTERM/SIGINT (blocking)."""
    host, _, port = bind.rpartition(":")
    asyncio.run(_serve(host or "0.0.0.0", int(port), upstream_socket, max_body_bytes))


async def _serve(host: str, port: int, upstream_socket: str, max_body_bytes: int) -> None:
    runner = web.AppRunner(
        build_app(upstream_socket, max_body_bytes),
        # Also the header deadline: a connection with no whole request by then is closed.
        keepalive_timeout=HEADER_TIMEOUT_S,
        access_log=None,
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    log.info("intake front listening on %s:%s", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
