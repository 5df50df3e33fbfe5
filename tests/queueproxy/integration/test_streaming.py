"""Bodies stream through the queue-proxy both ways: big, chunked, 100-continue, SSE, websocket."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import psutil
import pytest
from websockets.asyncio.client import connect as ws_connect

from .qpharness import LOOPBACK, StartStack, parse_raw, read_until_close, slow_mode

MIB = 1024 * 1024
# Full size with KNPY_SLOW=1; by default a short form that still dwarfs any socket buffer.
BIG_BYTES = 256 * MIB if slow_mode() else 32 * MIB
# A proxy that streams holds a few buffers per connection; one that buffers a 256-MiB body
# whole shows it here at once. 100 MiB leaves room for the interpreter and its libraries.
RSS_LIMIT_BYTES = 100 * MIB
RSS_SAMPLE_INTERVAL_S = 0.02
CHUNK_BYTES = 1 * MIB


@contextlib.asynccontextmanager
async def rss_watch(pid: int) -> AsyncIterator[list[int]]:
    """Samples the RSS of pid while the block runs; yields the list the samples go into."""
    proc = psutil.Process(pid)
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.append(proc.memory_info().rss)
            await asyncio.sleep(RSS_SAMPLE_INTERVAL_S)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        samples.append(proc.memory_info().rss)


def pattern_sha256(n: int) -> str:
    """The sha256 of the sample app's /bytes pattern (0x00..0xff repeated) of n bytes."""
    block = bytes(range(256)) * (CHUNK_BYTES // 256)
    digest = hashlib.sha256()
    full, rest = divmod(n, len(block))
    for _ in range(full):
        digest.update(block)
    digest.update(block[:rest])
    return digest.hexdigest()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_big_upload_streams(stack: StartStack) -> None:
    s = await stack()
    seed = os.urandom(CHUNK_BYTES)
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for i in range(BIG_BYTES // CHUNK_BYTES):
            chunk = i.to_bytes(8, "big") + seed[8:]
            digest.update(chunk)
            yield chunk

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=110)) as client,
        rss_watch(s.qp.child.pid) as rss,
        client.post(
            s.qp.url + "/consume",
            data=body(),
            headers={"Content-Length": str(BIG_BYTES)},
        ) as resp,
    ):
        text = await resp.text()
        assert resp.status == 200, text
        seen = await resp.json()
    assert seen == {"bytes": BIG_BYTES, "sha256": digest.hexdigest()}
    assert max(rss) < RSS_LIMIT_BYTES, f"queue-proxy RSS peaked at {max(rss) / MIB:.0f} MiB"


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_big_download_streams(stack: StartStack) -> None:
    s = await stack()
    digest = hashlib.sha256()
    size = 0
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=110)) as client,
        rss_watch(s.qp.child.pid) as rss,
        client.get(s.qp.url + f"/bytes?n={BIG_BYTES}") as resp,
    ):
        assert resp.status == 200
        assert resp.headers.get("Content-Length") == str(BIG_BYTES)
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    assert size == BIG_BYTES
    assert digest.hexdigest() == pattern_sha256(BIG_BYTES)
    assert max(rss) < RSS_LIMIT_BYTES, f"queue-proxy RSS peaked at {max(rss) / MIB:.0f} MiB"


async def test_download_with_odd_chunks(stack: StartStack, session: aiohttp.ClientSession) -> None:
    s = await stack()
    n = 3 * MIB + 17
    async with session.get(s.qp.url + f"/bytes?n={n}&chunk=1000") as resp:
        assert resp.status == 200
        body = await resp.read()
    assert len(body) == n
    assert hashlib.sha256(body).hexdigest() == pattern_sha256(n)


@pytest.mark.timeout(30)
async def test_chunked_request_body(stack: StartStack, session: aiohttp.ClientSession) -> None:
    s = await stack()
    parts = [bytes([i]) * (1000 * (i + 1)) for i in range(20)]

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part
            await asyncio.sleep(0.005)

    async with session.post(s.qp.url + "/echo", data=body()) as resp:
        assert resp.status == 200
        assert await resp.read() == b"".join(parts)

    async with session.post(s.qp.url + "/consume", data=body()) as resp:
        assert resp.status == 200
        seen = await resp.json()
    whole = b"".join(parts)
    assert seen == {"bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


@pytest.mark.timeout(30)
async def test_chunked_request_raw(stack: StartStack) -> None:
    """Chunk extensions and a trailer, as a client may send them, reach the app de-chunked."""
    s = await stack()
    reader, writer = await asyncio.open_connection(LOOPBACK, s.qp.serving_port)
    try:
        writer.write(
            b"POST /consume HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
            b"5\r\nhello\r\n"
            b"6;ext=1\r\n world\r\n"
            b"0\r\nX-Trailer: t\r\n\r\n"
        )
        await writer.drain()
        data, closed = await read_until_close(reader, 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    resp = parse_raw(data, closed)
    assert resp.status == 200, data
    assert hashlib.sha256(b"hello world").hexdigest().encode() in resp.body, data


@pytest.mark.timeout(30)
async def test_expect_100_continue(stack: StartStack) -> None:
    s = await stack()
    body = b"hello, continue"
    reader, writer = await asyncio.open_connection(LOOPBACK, s.qp.serving_port)
    try:
        writer.write(
            b"POST /consume HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {len(body)}\r\n".encode()
            + b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        writer.write(body)
        await writer.drain()
        data, closed = await read_until_close(reader, 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    resp = parse_raw(data, closed)
    assert resp.status == 200, data
    assert hashlib.sha256(body).hexdigest().encode() in resp.body, data
    assert f'"bytes": {len(body)}'.encode() in resp.body, data


@pytest.mark.timeout(30)
async def test_sse_events_arrive_one_by_one(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    """5 events 300 ms apart arrive 300 ms apart, not all at once when the stream ends."""
    s = await stack()
    arrivals: list[float] = []
    async with session.get(s.qp.url + "/sse?n=5&interval_ms=300") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        start = time.monotonic()
        async for line in resp.content:
            if line.startswith(b"data:"):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 5, arrivals
    assert arrivals[0] < 0.2, arrivals
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.2 for gap in gaps), f"events bunched up: arrivals {arrivals}"


@pytest.mark.timeout(30)
async def test_slow_body_chunks_flushed(stack: StartStack, session: aiohttp.ClientSession) -> None:
    s = await stack()
    arrivals: list[float] = []
    async with session.get(s.qp.url + "/slowbody?chunks=4&interval_ms=300") as resp:
        start = time.monotonic()
        async for line in resp.content:
            if line.startswith(b"chunk"):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 4
    assert arrivals[0] < 0.2 and arrivals[-1] >= 0.8, arrivals


@pytest.mark.timeout(30)
async def test_websocket_round_trip(stack: StartStack) -> None:
    s = await stack()
    big = os.urandom(MIB)
    async with ws_connect(f"ws://{LOOPBACK}:{s.qp.serving_port}/ws", max_size=2 * MIB) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
        await ws.send(b"\x00\x01\x02binary")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01\x02binary"
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 5) == big
        for i in range(20):
            await ws.send(f"message {i}")
        for i in range(20):
            assert await asyncio.wait_for(ws.recv(), 5) == f"message {i}"
    # The proxy serves ordinary requests after the upgraded connection is done.
    async with aiohttp.ClientSession() as client, client.get(s.qp.url + "/") as resp:
        assert resp.status == 200


@pytest.mark.timeout(30)
async def test_websocket_via_aiohttp(stack: StartStack, session: aiohttp.ClientSession) -> None:
    s = await stack()
    async with session.ws_connect(s.qp.url + "/ws") as ws:
        await ws.send_str("text via aiohttp")
        assert (await ws.receive(timeout=5)).data == "text via aiohttp"
        await ws.send_bytes(b"bytes via aiohttp")
        assert (await ws.receive(timeout=5)).data == b"bytes via aiohttp"
