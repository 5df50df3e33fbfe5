"""Revision timeouts: total, response-start and idle; the proxy keeps serving afterwards."""

from __future__ import annotations

import time

import aiohttp
import pytest

from .qpharness import StartStack

pytestmark = pytest.mark.timeout(30)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, float, bytes]:
    start = time.monotonic()
    async with session.get(url) as resp:
        body = await resp.read()
        return resp.status, time.monotonic() - start, body


async def _still_serving(session: aiohttp.ClientSession, url: str) -> None:
    status, _, body = await _get(session, url + "/")
    assert status == 200, body
    status, _, _ = await _get(session, url + "/sleep?ms=50")
    assert status == 200


async def test_total_timeout(stack: StartStack, session: aiohttp.ClientSession) -> None:
    s = await stack(qp_env={"REVISION_TIMEOUT_SECONDS": "1"})
    status, elapsed, body = await _get(session, s.qp.url + "/sleep?ms=3000")
    assert status == 504, body
    assert 0.9 <= elapsed < 2.5, elapsed
    # Within the limit: served.
    status, _, _ = await _get(session, s.qp.url + "/sleep?ms=300")
    assert status == 200
    await _still_serving(session, s.qp.url)


async def test_total_timeout_counts_the_body(stack: StartStack) -> None:
    """Headers in time do not stop the clock: a body still streaming at 1 s is cut off."""
    s = await stack(qp_env={"REVISION_TIMEOUT_SECONDS": "1"})
    async with aiohttp.ClientSession() as client:
        start = time.monotonic()
        with pytest.raises(aiohttp.ClientPayloadError):
            async with client.get(s.qp.url + "/slowbody?chunks=10&interval_ms=300") as resp:
                assert resp.status == 200
                await resp.read()
        assert time.monotonic() - start < 2.5
        await _still_serving(client, s.qp.url)


async def test_response_start_timeout(stack: StartStack, session: aiohttp.ClientSession) -> None:
    s = await stack(
        qp_env={"REVISION_TIMEOUT_SECONDS": "30", "REVISION_RESPONSE_START_TIMEOUT_SECONDS": "1"}
    )
    status, elapsed, body = await _get(session, s.qp.url + "/slowstart?ms=3000")
    assert status == 504, body
    assert 0.9 <= elapsed < 2.5, elapsed
    # Headers in time, body slower than the start timeout: fine.
    status, _, body = await _get(session, s.qp.url + "/slowbody?chunks=4&interval_ms=500")
    assert status == 200
    assert body.count(b"chunk") == 4
    status, _, _ = await _get(session, s.qp.url + "/slowstart?ms=200")
    assert status == 200
    await _still_serving(session, s.qp.url)


async def test_idle_timeout_before_headers(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    s = await stack(qp_env={"REVISION_TIMEOUT_SECONDS": "30", "REVISION_IDLE_TIMEOUT_SECONDS": "1"})
    status, elapsed, body = await _get(session, s.qp.url + "/slowstart?ms=3000")
    assert status == 504, body
    assert 0.9 <= elapsed < 2.5, elapsed
    await _still_serving(session, s.qp.url)


async def test_idle_timeout_after_headers_aborts(stack: StartStack) -> None:
    """Headers sent, then silence for longer than the idle timeout: the connection is cut."""
    s = await stack(qp_env={"REVISION_TIMEOUT_SECONDS": "30", "REVISION_IDLE_TIMEOUT_SECONDS": "1"})
    async with aiohttp.ClientSession() as client:
        start = time.monotonic()
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async with client.get(s.qp.url + "/slowbody?chunks=3&interval_ms=2500") as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_any():
                    received += chunk
        elapsed = time.monotonic() - start
        assert received == b"chunk 0\n", received
        assert 0.9 <= elapsed < 2.4, elapsed
        # A body that keeps moving is not idle, however long it takes in total.
        status, _, body = await _get(client, s.qp.url + "/slowbody?chunks=6&interval_ms=400")
        assert status == 200
        assert body.count(b"chunk") == 6
        await _still_serving(client, s.qp.url)
