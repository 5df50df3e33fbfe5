"""A pod killed under load: what was in it fails as 502, the rest go to the other pods."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from shared.kube.fake import FakeCluster
from tests.queueproxy.integration.qpharness import StartStack

from .harness import KEY, StartActivator, get_status, put_revision, set_pods, until

pytestmark = pytest.mark.timeout(40)

CC = 2
PODS = 3
QUEUED = 12


async def test_pod_killed_under_load(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    cluster: FakeCluster,
    stack: StartStack,
) -> None:
    pods = list(await asyncio.gather(*(stack() for _ in range(PODS))))
    put_revision(cluster, cc=CC)
    set_pods(cluster, [(p, True) for p in pods])
    act = await start_activator()
    rev = act.activator.revision(*ROUTE_KEY)
    assert rev is not None
    await until(lambda: len(rev.backends.healthy) == PODS, 5, "every pod to be probed")

    # Fill every slot with long requests, and queue more behind them.
    url = act.url + "/sleep?ms=1000"
    in_pods = [asyncio.ensure_future(get_status(client, url)) for _ in range(CC * PODS)]
    await until(lambda: rev.throttler.active == CC * PODS, 5, "every slot to be taken")
    queued = [asyncio.ensure_future(get_status(client, url)) for _ in range(QUEUED)]
    await until(lambda: rev.throttler.queued == QUEUED, 5, "the queue to fill")

    # first_available packs the first pod (by address) first: kill its queue-proxy. The
    # platform has not noticed yet, so the endpoints still list it.
    victim = min(pods, key=lambda p: f"127.0.0.1:{p.qp.serving_port}")
    victim.qp.child.kill()

    statuses = await asyncio.gather(*in_pods, *queued)
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert counts == {502: CC, 200: CC * (PODS - 1) + QUEUED}, counts
    assert f"127.0.0.1:{victim.qp.serving_port}" not in rev.backends.healthy
    assert rev.throttler.active == 0 and rev.throttler.queued == 0


ROUTE_KEY = (KEY.namespace, KEY.name)
