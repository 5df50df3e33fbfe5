"""CONTAINER_CONCURRENCY: the breaker bounds what reaches the app and sheds beyond its queue."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from .qpharness import StartStack, app_stats

pytestmark = pytest.mark.timeout(30)


async def _timed_get(session: aiohttp.ClientSession, url: str) -> tuple[int, float, bytes]:
    start = time.monotonic()
    async with session.get(url) as resp:
        body = await resp.read()
        return resp.status, time.monotonic() - start, body


async def test_concurrency_bound(stack: StartStack) -> None:
    """CC=5, 50 concurrent 200-ms requests: all served, never more than 5 at the app.

    50 requests fit the breaker (5 in flight + a queue of 10 x 5 = 50), so none is shed; at 5
    at a time they take at least 50 / 5 x 0.2 s = 2 s.
    """
    s = await stack(qp_env={"CONTAINER_CONCURRENCY": "5"})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        start = time.monotonic()
        results = await asyncio.gather(
            *(_timed_get(client, s.qp.url + "/sleep?ms=200") for _ in range(50))
        )
        elapsed = time.monotonic() - start
        stats = await app_stats(client, s.app.url)
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 50, statuses
    assert stats["max_in_flight"] <= 5, stats
    assert stats["max_in_flight"] == 5, f"the breaker never let 5 through at once: {stats}"
    assert stats["total"] == 50, stats
    assert elapsed >= 1.9, f"50 x 200 ms at CC=5 finished in {elapsed:.2f} s"


async def test_overflow_sheds_beyond_queue_depth(stack: StartStack) -> None:
    """CC=1 holds 1 in flight + 10 queued; of 30 concurrent slow requests 19 get 503 at once.

    Each accepted request sleeps 400 ms, so the 11 accepted take ~4.4 s in turn, while the
    19 shed ones must come back well before the first accepted one finishes.
    """
    s = await stack(qp_env={"CONTAINER_CONCURRENCY": "1"})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        results = await asyncio.gather(
            *(_timed_get(client, s.qp.url + "/sleep?ms=400") for _ in range(30))
        )
        stats = await app_stats(client, s.app.url)
    ok = [r for r in results if r[0] == 200]
    shed = [r for r in results if r[0] == 503]
    assert len(ok) == 11, sorted(r[0] for r in results)
    assert len(shed) == 19, sorted(r[0] for r in results)
    assert max(latency for _, latency, _ in shed) < 0.4, [round(r[1], 3) for r in shed]
    for _, _, body in shed:
        assert 0 < len(body) <= 200, body
    assert stats["max_in_flight"] == 1, stats
    assert stats["total"] == 11, stats
    # Capacity comes back once the queue has drained.
    async with aiohttp.ClientSession() as client:
        status, _, _ = await _timed_get(client, s.qp.url + "/")
    assert status == 200
