"""The in-memory seams behave as the platform's will: level-based watches, decisions kept."""

from __future__ import annotations

import asyncio

from shared.seams import Endpoint, InMemoryCluster, Mode, RevisionKey, RevisionSpec, ScaleDecision

KEY = RevisionKey("default", "hello-00001")


async def test_watch_yields_current_then_each_change() -> None:
    cluster = InMemoryCluster()
    watch = cluster.watch_endpoints(KEY)
    assert await anext(watch) == ()
    pod = Endpoint("hello-00001-a", "127.0.0.1", 8012)
    cluster.set_endpoints(KEY, (pod,))
    assert await asyncio.wait_for(anext(watch), 1) == (pod,)
    assert cluster.endpoints(KEY) == (pod,)


async def test_missed_changes_converge_on_latest() -> None:
    cluster = InMemoryCluster()
    watch = cluster.watch_revisions()
    assert dict(await anext(watch)) == {}
    for cc in (1, 2, 3):
        cluster.put_revision(RevisionSpec(KEY, container_concurrency=cc))
    latest = await asyncio.wait_for(anext(watch), 1)
    assert latest[KEY].container_concurrency == 3
    assert cluster.get(KEY) == RevisionSpec(KEY, container_concurrency=3)


async def test_decisions_are_recorded_and_awaitable() -> None:
    cluster = InMemoryCluster()
    decision = ScaleDecision(KEY, desired_scale=2, mode=Mode.SERVE, activators=1)
    waiter = asyncio.create_task(cluster.next_decision(timeout_s=1))
    await asyncio.sleep(0)
    await cluster.apply(decision)
    assert await waiter == decision
    assert cluster.latest(KEY) == decision
    assert cluster.latest(RevisionKey("default", "other")) is None


def test_revision_key_str() -> None:
    assert str(KEY) == "default/hello-00001"
    assert Endpoint("p", "10.0.0.1", 8012).address == "10.0.0.1:8012"
