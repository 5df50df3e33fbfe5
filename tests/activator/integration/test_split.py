"""Two activators split a revision's pods by its public Endpoints: 5 pods at containerConcurrency 1
are 3 and 2."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from shared.kube.fake import FakeCluster
from shared.ports import free_port
from tests.queueproxy.integration.qpharness import StartStack, app_stats

from .harness import (
    KEY,
    StartActivator,
    get_status,
    put_revision,
    set_activators,
    set_pods,
    until,
)

pytestmark = pytest.mark.timeout(40)

PODS = 5


async def test_capacity_split_across_two_activators(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    cluster: FakeCluster,
    stack: StartStack,
) -> None:
    pods = list(await asyncio.gather(*(stack() for _ in range(PODS))))
    put_revision(cluster, cc=1)
    set_pods(cluster, [(p, True) for p in pods])
    ports = sorted((free_port(), free_port()))  # the activators' order: by port on one host
    set_activators(cluster, [f"127.0.0.1:{p}" for p in ports])
    first = await start_activator(serving_port=ports[0])
    second = await start_activator(serving_port=ports[1])
    revs = []
    for act in (first, second):
        rev = act.activator.revision(*ROUTE_KEY)
        assert rev is not None
        revs.append(rev)
    await until(lambda: [r.throttler.capacity for r in revs] == [3, 2], 5, "capacities of 3 and 2")
    assigned = [{t.address for t in r.throttler.assigned_trackers} for r in revs]
    assert not assigned[0] & assigned[1], "a pod is in both activators' slices"
    assert len(assigned[0] | assigned[1]) == PODS

    # Both loaded at once: no pod ever sees more than its containerConcurrency of 1.
    statuses = await asyncio.gather(
        *(
            get_status(client, act.url + "/sleep?ms=200")
            for act in (first, second)
            for _ in range(10)
        )
    )
    assert statuses == [200] * 20
    seen = [await app_stats(client, p.app.url) for p in pods]
    assert all(s["max_in_flight"] <= 1 for s in seen), seen


ROUTE_KEY = (KEY.namespace, KEY.name)
