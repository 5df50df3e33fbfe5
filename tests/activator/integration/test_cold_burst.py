"""Scale from zero: a burst held while there is no pod, released as pods come, never too much.

The activator knows the revision's containerConcurrency (5) while the queue-proxies run with
CONTAINER_CONCURRENCY=0, so the app's own max_in_flight shows what the *activator* let through.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from shared.kube.fake import FakeCluster
from tests.queueproxy.integration.qpharness import StartStack, app_stats

from .harness import KEY, ROUTE, AutoscalerStandIn, StartActivator, put_revision, set_pods

pytestmark = pytest.mark.timeout(60)

BURST = 500
CC = 5
FIRST_POD_AFTER_S = 2.0
SECOND_POD_AFTER_S = 3.0
# Issue 4: the autoscaler hears of a cold revision within 50 ms of its first request.
COLD_STAT_WITHIN_S = 0.05
BURST_SCRIPT = Path(__file__).with_name("burst.py")


async def test_cold_burst(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    cluster: FakeCluster,
    standin: AutoscalerStandIn,
    stack: StartStack,
) -> None:
    pods = await asyncio.gather(stack(), stack())
    put_revision(cluster, cc=CC)
    act = await start_activator()
    await standin.wait_for(lambda: act.sink.connected)
    url = act.url + "/sleep?ms=50"

    start = time.monotonic()
    burst = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BURST_SCRIPT),
        url,
        str(BURST),
        *(f"{k}:{v}" for k, v in ROUTE.items()),
        stdout=asyncio.subprocess.PIPE,
    )

    async def pods_appear() -> None:
        # Published not ready: the activator's probe finds them before the platform would.
        await asyncio.sleep(FIRST_POD_AFTER_S - (time.monotonic() - start))
        set_pods(cluster, [(pods[0], False)])
        await asyncio.sleep(SECOND_POD_AFTER_S - (time.monotonic() - start))
        set_pods(cluster, [(p, False) for p in pods])

    appear = asyncio.ensure_future(pods_appear())
    out, _ = await burst.communicate()
    await appear
    result = json.loads(out)
    statuses, start = result["statuses"], result["started"]

    assert sorted(set(statuses)) == [200], {s: statuses.count(s) for s in set(statuses)}
    stat = standin.first_for(KEY, after=start)
    assert stat is not None, standin.received
    assert stat.at - start <= COLD_STAT_WITHIN_S, f"first stat after {stat.at - start:.3f} s"
    cold = next(st for _, n, st in stat.stats if n == KEY.name)
    assert cold.average_concurrent_requests == 1.0 and cold.request_count == 1.0
    seen = [await app_stats(client, p.app.url) for p in pods]
    assert all(s["max_in_flight"] <= CC for s in seen), seen
    assert sum(s["total"] for s in seen) == BURST, seen
    assert all(s["total"] > 0 for s in seen), f"the second pod got nothing: {seen}"
    # The periodic reports carried the held burst as demand.
    peak = max(
        st.average_concurrent_requests
        for rec in standin.received
        for (_, n, st) in rec.stats
        if n == KEY.name
    )
    assert peak > 100, f"demand never reported as high: {peak}"
