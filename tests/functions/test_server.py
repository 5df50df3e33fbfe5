"""functions/server.py over real sockets: framing, keep-alive, pipelining, bodies in and out,
100-continue, HEAD, bad requests and draining, byte for byte as a client sees them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import pytest

from functions.server import BODY_HIGH_WATER_BYTES, Server
from shared.ports import LOOPBACK

Scope = MutableMapping[str, Any]
BIG_BYTES = 16 * 1024 * 1024


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with what it saw; /stream streams, /fail raises, /late fails mid-response."""
    path = scope["path"]
    if path == "/early":  # answers without reading the body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"early"})
        return
    if path == "/fail":
        raise RuntimeError("boom")
    body = b""
    parts = 0
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        parts += 1
        if not msg.get("more_body"):
            break
    if path == "/huge":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(BIG_BYTES).encode())]})
        chunk = b"z" * 65536
        for _ in range(BIG_BYTES // len(chunk)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/late":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("late")
    text = f"{scope['method']} {path} q={scope['query_string'].decode()} len={len(body)}"
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"text/plain"), (b"x-parts", str(parts).encode())]})
    await send({"type": "http.response.body", "body": text.encode()})


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, int]]:
    srv = Server(echo_app)
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    await srv.listen(sock)
    yield srv, port
    await srv.drain(0.1)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Until ``condition()`` holds (a condition, not a guess at how long it takes)."""
    end = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < end, f"never {what}"
        await asyncio.sleep(0.005)


async def exchange(port: int, raw: bytes, *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(raw)
    await writer.drain()
    try:
        if until_close:
            return await asyncio.wait_for(reader.read(), 5)
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_one_request_with_content_length(server: tuple[Server, int]) -> None:
    _, port = server
    data = await exchange(port, b"GET /a%20b?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"content-length: %d" % len(body) in head
    assert b"connection: close" in head
    assert b"date: " in head
    assert body == b"GET /a b q=x=1 len=0"


async def test_keep_alive_and_pipelining(server: tuple[Server, int]) -> None:
    _, port = server
    raw = (
        b"POST /1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    data = await exchange(port, raw)
    assert data.count(b"HTTP/1.1 201 Created\r\n") == 3
    assert data.index(b"POST /1") < data.index(b"GET /2") < data.index(b"GET /3")
    assert b"len=3" in data


async def test_chunked_request_body_and_chunked_response(server: tuple[Server, int]) -> None:
    _, port = server
    raw = (b"POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")  # fmt: skip
    data = await exchange(port, raw)
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"


async def test_http10_stream_ends_by_closing(server: tuple[Server, int]) -> None:
    _, port = server
    data = await exchange(port, b"GET /stream HTTP/1.0\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head
    assert body == b"one two three"


async def test_a_large_body_arrives_in_parts(server: tuple[Server, int]) -> None:
    _, port = server
    size = 4 * BODY_HIGH_WATER_BYTES
    raw = b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size
    data = await exchange(port, raw + b"x" * size)
    assert f"len={size}".encode() in data
    parts = int(data.split(b"x-parts: ")[1].split(b"\r\n")[0])
    assert parts > 1


async def test_a_body_the_app_did_not_read_is_dropped(server: tuple[Server, int]) -> None:
    """The app answered before reading a large body: the rest is read and dropped, and the
    connection serves the next request (it must not stall with reading paused)."""
    _, port = server
    size = 8 * BODY_HIGH_WATER_BYTES
    raw = b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
    raw += b"y" * size + b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    data = await exchange(port, raw)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert data.endswith(b"GET /after q= len=0")


async def test_expect_100_continue(server: tuple[Server, int]) -> None:
    _, port = server
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(b"POST /c HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                 b"Expect: 100-continue\r\nConnection: close\r\n\r\n")  # fmt: skip
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hi")
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    assert rest.startswith(b"HTTP/1.1 201")
    assert rest.endswith(b"len=2")


async def test_head_gets_no_body(server: tuple[Server, int]) -> None:
    _, port = server
    data = await exchange(port, b"HEAD /h HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"content-length: %d" % len(b"HEAD /h q= len=0") in head  # what it would carry
    assert body == b""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/fail", b"HTTP/1.1 500 Internal Server Error", id="before-the-response"),
        pytest.param("/late", b"HTTP/1.1 200 OK", id="mid-response-closes"),
    ],
)
async def test_an_app_that_fails(server: tuple[Server, int], path: str, expected: bytes) -> None:
    _, port = server
    # keep-alive asked for: a failed application's connection is closed all the same
    data = await exchange(port, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert data.startswith(expected)
    if path == "/fail":
        assert b"connection: close" in data
    if path == "/late":
        assert data.endswith(b"7\r\npartial\r\n")  # no last chunk: the client sees it cut


async def test_a_slow_reader_gets_every_byte(server: tuple[Server, int]) -> None:
    """16 MiB streamed to a client that waits before reading: send() waits on the
    transport's buffer (pause_writing) and the whole body still arrives."""
    srv, port = server
    reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=1 << 20)
    writer.write(b"GET /huge HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    await until(lambda: len(srv.connections) == 1, "accepted")
    (conn,) = srv.connections
    # The app is held back, not buffering 16 MiB in the server: writing pauses while the
    # server has sent at most a few buffers' worth (the kernel's and the transport's).
    await until(lambda: conn.write_paused, "paused")
    assert conn.transport is not None
    assert conn.transport.get_write_buffer_size() < 4 * 1024 * 1024
    data = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    await writer.wait_closed()
    assert len(data.split(b"\r\n\r\n", 1)[1]) == BIG_BYTES


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", id="big-header"),
        pytest.param(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", id="big-url"),
    ],
)
async def test_a_head_too_large_is_431(server: tuple[Server, int], raw: bytes) -> None:
    _, port = server
    data = await exchange(port, raw)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_a_bad_request_is_400_and_closed(server: tuple[Server, int]) -> None:
    _, port = server
    data = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_draining_closes_after_the_next_response(server: tuple[Server, int]) -> None:
    srv, port = server
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"len=0"), 5)
    assert b"connection: close" not in first
    drain = asyncio.create_task(srv.drain(5.0))
    await until(lambda: srv.draining, "draining")
    with pytest.raises(OSError):  # no new connections
        await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 1)
    writer.write(b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n")  # the kept connection still answers
    second = await asyncio.wait_for(reader.read(), 5)
    assert b"GET /2" in second
    assert b"connection: close" in second
    await asyncio.wait_for(drain, 2)  # done as soon as the last connection ended
    assert not srv.connections
    writer.close()
    await writer.wait_closed()
