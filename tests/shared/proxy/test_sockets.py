"""The proxy core on loopback: a pass-through handler between raw sockets and raw upstreams.

The in-memory tests (test_server.py, test_upstream.py) drive every edge; these few check the
same core on real sockets and the event loop's real transports (uvloop's are not
``asyncio.Transport`` subclasses): pipelining, HEAD responses that declare a length, HTTP/1.0
clients, an upstream that closes a kept-alive connection as it is reused, bad input, and the
handler's exactly-once ``finished``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from shared.proxy.exchange import Exchange
from shared.proxy.http1 import HOP_BY_HOP
from shared.proxy.server import ProxyServer
from shared.proxy.upstream import UpstreamPool


class PassThrough:
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.handled: list[Exchange] = []
        self.finished_count: dict[int, int] = {}

    def handle(self, ex: Exchange) -> None:
        self.handled.append(ex)
        lines = [b"%b %b HTTP/%b\r\n" % (ex.method, ex.target, ex.version.encode())]
        lines += [b"%b: %b\r\n" % (n, v) for n, v in ex.headers if n.lower() not in HOP_BY_HOP]
        if ex.chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        lines.append(b"\r\n")
        ex.forward(self.pool, b"".join(lines))

    def finished(self, ex: Exchange) -> None:
        self.finished_count[id(ex)] = self.finished_count.get(id(ex), 0) + 1


Responder = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], "asyncio.Future[None]"]


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


@asynccontextmanager
async def proxy_to(
    upstream: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> AsyncIterator[tuple[int, PassThrough]]:
    loop = asyncio.get_running_loop()
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await upstream(reader, writer)  # type: ignore[misc]

    up_server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    up_port = up_server.sockets[0].getsockname()[1]
    handler = PassThrough(UpstreamPool(loop, "127.0.0.1", up_port))
    proxy = ProxyServer(handler, initial_tag=None)
    proxy.start(loop)
    server = await loop.create_server(proxy, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], handler
    finally:
        proxy.stop()
        proxy.abort_all()
        server.close()
        up_server.close()
        handler.pool.close()
        for writer in writers:
            writer.close()
        await asyncio.sleep(0.01)


async def echo_path(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with its path; HEAD gets the length of a body it does not send."""
    while (head := await _read_head(reader)) is not None:
        method, path, _ = head.split(b"\r\n", 1)[0].split(b" ")
        body = b"path=" + path
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        if method != b"HEAD":
            writer.write(body)
        await writer.drain()
    writer.close()


async def _exchange(port: int, data: bytes, *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()


async def test_pipelined_requests_answered_in_order() -> None:
    async with proxy_to(echo_path) as (port, handler):
        close = {3: b"Connection: close\r\n"}
        data = b"".join(
            b"GET /%d HTTP/1.1\r\nHost: x\r\n%b\r\n" % (i, close.get(i, b"")) for i in (1, 2, 3)
        )
        out = await _exchange(port, data)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b"path=/1") < out.index(b"path=/2") < out.index(b"path=/3")
    assert sorted(handler.finished_count.values()) == [1, 1, 1]


async def test_head_response_with_length_does_not_wait_for_a_body() -> None:
    async with proxy_to(echo_path) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert b"Content-Length: 7" in head
        # The same client and upstream connections carry the next request.
        writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(-1), 2)
        writer.close()
    assert rest.endswith(b"path=/next")


async def test_http10_client_gets_the_response_then_close() -> None:
    async with proxy_to(echo_path) as (port, _):
        out = await _exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"path=/old")


async def test_reused_connection_closed_by_upstream_is_retried() -> None:
    async def one_per_connection(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # Answers the first request of a connection; closes on the second without a word,
        # as an app whose keep-alive timer fired just as the proxy reused the connection.
        if await _read_head(reader) is not None:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
        await _read_head(reader)
        w.close()

    async with proxy_to(one_per_connection) as (port, _):
        for _ in range(3):
            out = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200 OK"), out


async def test_client_gone_mid_request_finishes_once() -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await release.wait()
        w.close()

    async with proxy_to(slow) as (port, handler):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        while not handler.handled or handler.handled[0].upstream is None:
            await asyncio.sleep(0.01)
        writer.close()
        for _ in range(100):
            if handler.finished_count:
                break
            await asyncio.sleep(0.01)
        release.set()
        ex = handler.handled[0]
    assert handler.finished_count == {id(ex): 1}
    assert ex.aborted and ex.done


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", b"400", id="malformed request line"),
        pytest.param(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"400", id="header without colon"),
        pytest.param(
            b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431", id="oversized head"
        ),
    ],
)
async def test_bad_input_answered_then_closed(request_bytes: bytes, status: bytes) -> None:
    async with proxy_to(echo_path) as (port, _):
        out = await _exchange(port, request_bytes)
        assert out.startswith(b"HTTP/1.1 " + status), out
        # Still serving.
        ok = await _exchange(port, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert ok.endswith(b"path=/ok")
