"""Malformed or oversized requests get 400/431, the connection closes, the proxy lives on."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from .qpharness import LOOPBACK, StartStack, app_stats, raw_exchange

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("payload", "want"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="request-line-one-word"),
        pytest.param(b"GET / HTXP/1.1\r\nHost: x\r\n\r\n", 400, id="request-line-bad-protocol"),
        pytest.param(b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="request-line-nul"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n", 400, id="header-no-colon"
        ),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400, id="header-space"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, id="content-length"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
            431,
            id="header-64KiB",
        ),
    ],
)
async def test_bad_input_rejected(
    stack: StartStack, session: aiohttp.ClientSession, payload: bytes, want: int
) -> None:
    s = await stack()
    resp = await raw_exchange(s.qp.serving_port, payload, timeout_s=3)
    assert resp.status == want, resp.head
    assert resp.closed, "the queue-proxy kept a connection open after a bad request"
    assert s.qp.child.alive(), s.qp.child.describe()
    async with session.get(s.qp.url + "/") as ok:
        assert ok.status == 200
    assert (await app_stats(session, s.app.url))["total"] == 1, "a bad request reached the app"


async def test_many_bad_connections_no_crash(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    """Garbage, half requests and abrupt closes in a row do not take the proxy down."""
    s = await stack()
    for payload in (b"\x16\x03\x01\x02\x00\x01\x00", b"GET / HTTP/1.1\r\nHo", b"\r\n\r\n" * 100):
        _, writer = await asyncio.open_connection(LOOPBACK, s.qp.serving_port)
        writer.write(payload)
        await writer.drain()
        writer.transport.abort()
    await asyncio.sleep(0.2)
    assert s.qp.child.alive(), s.qp.child.describe()
    async with session.get(s.qp.url + "/") as resp:
        assert resp.status == 200
