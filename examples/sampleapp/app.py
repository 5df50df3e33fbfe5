"""The knpy sample app: a small aiohttp server that exercises a data plane.

Tests, the README demo and the benchmarks put it behind the queue-proxy (and the activator)
to check what reaches the app and how: headers after rewriting, bodies streamed both ways,
slow or broken responses, websockets, readiness, and the app's own concurrency as it saw it.

Run it with ``python examples/sampleapp/app.py``; it listens on ``$HOST:$PORT``
(127.0.0.1:8080 by default) and prints one ``listening on host:port`` line once bound.

Environment:
    PORT            port to listen on (default 8080)
    HOST            address to bind (default 127.0.0.1)
    K_REVISION      echoed by ``GET /`` (Knative sets it in a revision's container)
    READY_DELAY_MS  ``GET /healthz`` answers 503 until this long after start (default 0)

Endpoints:
    GET  /                          hello text
    GET  /sleep?ms=N                sleep N ms, then 200
    GET  /stats                     {"in_flight", "max_in_flight", "total"} (not counted)
    POST /stats/reset               zero the counters (in_flight keeps running requests)
    GET  /headers                   the request as received: headers, method, path, version,
                                    and the peer's address (ip:port)
    POST /echo                      the body streamed back as it is read (chunked)
    GET  /bytes?n=N&chunk=C         N bytes of the pattern 0x00..0xff repeated, C per write
    POST /consume                   {"bytes": n, "sha256": hex} of the body, read streaming
    GET  /sse?n=N&interval_ms=M     N server-sent events, M ms apart
    GET  /ws                        websocket echo of text and binary frames
    GET  /status/{code}             an empty response with that status
    GET  /slowstart?ms=N            wait N ms before sending the response headers
    GET  /slowbody?chunks=K&interval_ms=M   headers at once, then K chunks M ms apart
    GET  /drop                      abort the connection without any response
    GET  /healthz                   200 once ready (READY_DELAY_MS), 503 before or after a fail
    POST /healthz/fail              make /healthz answer 503 from now on
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

DEFAULT_CHUNK_BYTES = 64 * 1024
READ_CHUNK_BYTES = 64 * 1024
# The /bytes pattern repeats every 256 bytes, so any offset into it is offset % 256.
PATTERN_PERIOD_BYTES = 256
HELLO = "Hello from knpy sample app\n"

# Paths that observe or probe the app; counting them would distort what tests measure
# (the queue-proxy polls /healthz on its own schedule, outside the concurrency breaker).
UNCOUNTED_PATHS = frozenset({"/stats", "/stats/reset", "/healthz", "/healthz/fail"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Counters:
    """The app's own view of its load: current, peak and total counted requests."""

    __slots__ = ("in_flight", "max_in_flight", "total")

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.total = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.total += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        self.max_in_flight = self.in_flight
        self.total = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "total": self.total,
        }


class Health:
    """Readiness for /healthz: ready after a delay from start, until told to fail."""

    __slots__ = ("failed", "ready_at")

    def __init__(self, ready_delay_ms: int, now: float) -> None:
        self.ready_at = now + ready_delay_ms / 1000
        self.failed = False

    def ready(self, now: float) -> bool:
        return not self.failed and now >= self.ready_at


COUNTERS = web.AppKey("counters", Counters)
HEALTH = web.AppKey("health", Health)
REVISION = web.AppKey("revision", str)


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"query {name} must be an integer\n") from None
    if value < 0:
        raise web.HTTPBadRequest(text=f"query {name} must not be negative\n")
    return value


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in UNCOUNTED_PATHS:
        return await handler(request)
    counters = request.app[COUNTERS]
    counters.enter()
    try:
        return await handler(request)
    finally:
        counters.leave()


async def hello(request: web.Request) -> web.Response:
    revision = request.app[REVISION]
    text = HELLO + (f"revision: {revision}\n" if revision else "")
    return web.Response(text=text)


async def sleep(request: web.Request) -> web.Response:
    ms = _int_query(request, "ms", 0)
    await asyncio.sleep(ms / 1000)
    return web.Response(text=f"slept {ms} ms\n")


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[COUNTERS].as_dict())


async def stats_reset(request: web.Request) -> web.Response:
    counters = request.app[COUNTERS]
    counters.reset()
    return web.json_response(counters.as_dict())


def _peer(request: web.Request) -> str:
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if not peername:
        return ""
    return f"{peername[0]}:{peername[1]}"


async def headers(request: web.Request) -> web.Response:
    joined: dict[str, str] = {}
    for name, value in request.headers.items():
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "version": f"{request.version.major}.{request.version.minor}",
            # The peer's port tells a test whether a proxy reused its upstream connection.
            "peer": _peer(request),
            "headers": joined,
            "raw_headers": [
                [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers
            ],
        }
    )


async def echo(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    content_type = request.headers.get("Content-Type")
    if content_type:
        response.content_type = content_type
    response.enable_chunked_encoding()
    await response.prepare(request)
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        await response.write(chunk)
    await response.write_eof()
    return response


async def stream_bytes(request: web.Request) -> web.StreamResponse:
    total = _int_query(request, "n", 0)
    chunk = _int_query(request, "chunk", DEFAULT_CHUNK_BYTES) or DEFAULT_CHUNK_BYTES
    # One buffer of chunk + period bytes holds every window of `chunk` bytes into the pattern.
    period = bytes(range(PATTERN_PERIOD_BYTES))
    repeats = chunk // PATTERN_PERIOD_BYTES + 2
    buffer = memoryview(period * repeats)
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.content_length = total
    await response.prepare(request)
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        start = sent % PATTERN_PERIOD_BYTES
        await response.write(buffer[start : start + size])
        sent += size
    await response.write_eof()
    return response


async def consume(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"bytes": size, "sha256": digest.hexdigest()})


async def sse(request: web.Request) -> web.StreamResponse:
    count = _int_query(request, "n", 5)
    interval_ms = _int_query(request, "interval_ms", 100)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for i in range(count):
        if i:
            await asyncio.sleep(interval_ms / 1000)
        event = f"id: {i}\ndata: event {i} at {time.time():.6f}\n\n"
        await response.write(event.encode())
    await response.write_eof()
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
        elif message.type == WSMsgType.ERROR:
            break
    return ws


async def status(request: web.Request) -> web.Response:
    try:
        code = int(request.match_info["code"])
    except ValueError:
        raise web.HTTPBadRequest(text="status code must be an integer\n") from None
    if not 200 <= code <= 599:
        raise web.HTTPBadRequest(text="status code must be in 200..599\n")
    return web.Response(status=code)


async def slowstart(request: web.Request) -> web.Response:
    ms = _int_query(request, "ms", 1000)
    await asyncio.sleep(ms / 1000)
    return web.Response(text=f"started after {ms} ms\n")


async def slowbody(request: web.Request) -> web.StreamResponse:
    chunks = _int_query(request, "chunks", 5)
    interval_ms = _int_query(request, "interval_ms", 100)
    response = web.StreamResponse()
    response.content_type = "text/plain"
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i in range(chunks):
        if i:
            await asyncio.sleep(interval_ms / 1000)
        await response.write(f"chunk {i}\n".encode())
    await response.write_eof()
    return response


async def drop(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Cancelling is how aiohttp's server ends a request whose connection is gone: it writes
    # nothing more and does not log an error, so the client sees a reset and no response.
    raise asyncio.CancelledError


async def healthz(request: web.Request) -> web.Response:
    if request.app[HEALTH].ready(time.monotonic()):
        return web.Response(text="ok\n")
    return web.Response(status=503, text="not ready\n")


async def healthz_fail(request: web.Request) -> web.Response:
    request.app[HEALTH].failed = True
    return web.Response(text="healthz now fails\n")


def make_app(ready_delay_ms: int = 0, revision: str = "") -> web.Application:
    app = web.Application(middlewares=[count_requests], client_max_size=1024**4)
    app[COUNTERS] = Counters()
    app[HEALTH] = Health(ready_delay_ms, time.monotonic())
    app[REVISION] = revision
    app.router.add_get("/", hello)
    app.router.add_get("/sleep", sleep)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/reset", stats_reset)
    app.router.add_route("*", "/headers", headers)
    app.router.add_post("/echo", echo)
    app.router.add_get("/bytes", stream_bytes)
    app.router.add_post("/consume", consume)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slowstart", slowstart)
    app.router.add_get("/slowbody", slowbody)
    app.router.add_get("/drop", drop)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/healthz/fail", healthz_fail)
    return app


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    ready_delay_ms = int(os.environ.get("READY_DELAY_MS", "0"))
    app = make_app(ready_delay_ms, os.environ.get("K_REVISION", ""))
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()

    def announce(_: str) -> None:
        print(f"listening on {host}:{port}", flush=True)

    web.run_app(app, host=host, port=port, access_log=None, print=announce, loop=loop)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
