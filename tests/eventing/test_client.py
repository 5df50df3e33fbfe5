"""The dispatcher's HTTP client against raw servers on loopback: keep-alive reuse, a stale idle
connection retried once, answers framed every way, the body limit, timeouts, *.localhost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from eventing.broker.client import HttpClient, RequestFailed
from shared.ports import free_port

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient()
    yield c
    await c.close()


async def start(serve: Serve) -> tuple[asyncio.Server, int, list[int]]:
    """A server; the list counts its connections."""
    conns: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            await serve(reader, writer)
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, port, conns


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def keep_alive(answer: bytes) -> Serve:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(answer)
            await writer.drain()

    return serve


async def test_keep_alive_reuses_one_connection(client: HttpClient) -> None:
    server, port, conns = await start(keep_alive(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    async with server:
        for _ in range(5):
            answer = await client.post(f"http://127.0.0.1:{port}/p", [(b"x-a", b"1")], b"hi",
                                       timeout_s=5, max_body=100)
            assert (answer.status, answer.body) == (200, b"ok")
        assert len(conns) == 1


@pytest.mark.parametrize(
    ("raw", "status", "body"),
    [
        pytest.param(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", 202, b"", id="empty"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                     200, b"abc", id="chunked"),
        pytest.param(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nuntil the end", 500,
                     b"until the end", id="close-delimited"),
    ],
)
async def test_answer_framing(client: HttpClient, raw: bytes, status: int, body: bytes) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()

    server, port, _ = await start(serve)
    async with server:
        answer = await client.post(f"http://127.0.0.1:{port}/", [], b"", timeout_s=5,
                                   max_body=100)
        assert (answer.status, answer.body) == (status, body)


async def test_stale_idle_connection_is_retried_once(client: HttpClient) -> None:
    """The server answers and closes each connection without saying so: the next request
    on the pooled connection fails before any answer, and goes again on a new one."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    server, port, conns = await start(serve)
    async with server:
        for _ in range(3):
            answer = await client.post(f"http://127.0.0.1:{port}/", [], b"x", timeout_s=5,
                                       max_body=10)
            assert answer.status == 200
        assert len(conns) == 3


async def test_body_cut_at_the_limit(client: HttpClient) -> None:
    server, port, _ = await start(
        keep_alive(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
    )
    async with server:
        answer = await client.post(f"http://127.0.0.1:{port}/", [], b"", timeout_s=5, max_body=4)
        assert answer.body == b"0123"


async def test_timeout_and_refused(client: HttpClient) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server, port, _ = await start(hang)
    async with server:
        with pytest.raises(RequestFailed, match=r"no answer within 0\.2 s"):
            await client.post(f"http://127.0.0.1:{port}/", [], b"", timeout_s=0.2, max_body=1)
    with pytest.raises(RequestFailed, match="cannot connect"):
        await client.post(f"http://127.0.0.1:{free_port()}/", [], b"", timeout_s=2, max_body=1)
    with pytest.raises(RequestFailed, match="not an http"):
        await client.post("ftp://x/", [], b"", timeout_s=1, max_body=1)


async def test_localhost_names_dial_loopback(client: HttpClient) -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    server, port, _ = await start(serve)
    async with server:
        answer = await client.post(f"http://hello.default.localhost:{port}/x?q=1", [], b"b",
                                   timeout_s=5, max_body=1)
        assert answer.status == 204
    assert seen[0].startswith(b"POST /x?q=1 HTTP/1.1\r\nHost: hello.default.localhost:%d\r\n"
                              % port)


async def test_requests_per_host_are_bounded() -> None:
    """Ten requests at once with room for three: never more than three connections, each
    request answered."""
    open_now: list[int] = []
    peak = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal peak
        open_now.append(1)
        peak = max(peak, len(open_now))
        try:
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                await asyncio.sleep(0.05)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        finally:
            open_now.pop()

    server, port, conns = await start(serve)
    client = HttpClient(max_per_host=3)
    try:
        async with server:
            answers = await asyncio.gather(*(
                client.post(f"http://127.0.0.1:{port}/", [], b"", timeout_s=5, max_body=1)
                for _ in range(10)
            ))
            assert [a.status for a in answers] == [200] * 10
            assert len(conns) == 3
            assert peak == 3
    finally:
        await client.close()
