"""Queue overflow (503 at once), the revision timeout (504), and serving on after both."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from activator.cluster import RevisionKey
from shared.kube.fake import FakeCluster
from tests.queueproxy.integration.qpharness import StartStack

from .harness import KEY, ROUTE, StartActivator, put_revision, set_pods, until

pytestmark = pytest.mark.timeout(30)

QUEUE_DEPTH = 5
SLOW = RevisionKey("default", "slow-00001")
SLOW_ROUTE = {"Knative-Serving-Namespace": SLOW.namespace, "Knative-Serving-Revision": SLOW.name}
SLOW_TIMEOUT_S = 1


async def _timed(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, float, str]:
    start = time.monotonic()
    async with client.get(url, headers=headers) as resp:
        body = await resp.text()
        return resp.status, time.monotonic() - start, body


async def test_overflow_503_timeout_504_then_serving(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    cluster: FakeCluster,
    stack: StartStack,
) -> None:
    s = await stack()
    put_revision(cluster, cc=1)
    put_revision(cluster, cc=1, timeout_s=SLOW_TIMEOUT_S, key=SLOW)
    set_pods(cluster, [(s, True)])
    set_pods(cluster, [(s, True)], key=SLOW)
    act = await start_activator(queue_depth=QUEUE_DEPTH)

    # Overflow: one request holds the only slot, QUEUE_DEPTH wait, the rest are refused at once.
    holder = asyncio.ensure_future(_timed(client, act.url + "/sleep?ms=1500", ROUTE))
    await until(
        lambda: (r := act.activator.revision(*ROUTE_KEY)) is not None and r.throttler.active == 1,
        5,
        "the first request to hold the slot",
    )
    waiting = [
        asyncio.ensure_future(_timed(client, act.url + "/sleep?ms=10", ROUTE))
        for _ in range(QUEUE_DEPTH)
    ]
    rev = act.activator.revision(*ROUTE_KEY)
    assert rev is not None
    await until(lambda: rev.throttler.queued == QUEUE_DEPTH, 5, "the queue to fill")
    refused = await asyncio.gather(
        *(_timed(client, act.url + "/sleep?ms=10", ROUTE) for _ in range(3))
    )
    for status, elapsed, body in refused:
        assert status == 503 and "pending request queue full" in body
        assert elapsed < 0.5, f"a refusal took {elapsed:.3f} s: it waited"
    results = await asyncio.gather(holder, *waiting)
    assert [status for status, _, _ in results] == [200] * (1 + QUEUE_DEPTH)

    # Timeout: the slot is held past the revision timeout; the holder and those queued behind
    # it get 504 at their own deadline.
    timed = await asyncio.gather(
        *(_timed(client, act.url + "/sleep?ms=3000", SLOW_ROUTE) for _ in range(3))
    )
    for status, elapsed, _ in timed:
        assert status == 504
        assert SLOW_TIMEOUT_S - 0.05 <= elapsed <= SLOW_TIMEOUT_S + 0.6, elapsed

    # Still serving, and nothing leaked: all slots back, nothing queued.
    status, _, body = await _timed(client, act.url + "/", ROUTE)
    assert status == 200 and "Hello" in body
    slow = act.activator.revision(*SLOW_KEY)
    assert slow is not None
    await until(
        lambda: slow.throttler.active == 0 and slow.throttler.queued == 0,
        5,
        "the slow revision's slots to come back",
    )
    assert rev.throttler.active == 0 and rev.throttler.queued == 0


ROUTE_KEY = (KEY.namespace, KEY.name)
SLOW_KEY = (SLOW.namespace, SLOW.name)
