"""RevisionTable over a FakeCluster: what the informers' objects do to the active revisions.

The table follows Revisions, private Endpoints and public Endpoints; each case writes
Knative's objects into the in-memory API, lets the events arrive, and checks what the
revision's backends (its pods, ready or not) and throttler (this activator's share) hold.
Pods are 127.0.0.1 on low ports nothing listens on, so the probes the backends start are
refused at once and no pod becomes healthy: these tests are about what the cluster says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from activator.cluster import RevisionKey, RevisionSpec
from activator.revisions import ActiveRevision, RevisionTable
from shared.kube.fake import FakeCluster
from shared.kube.resources import ENDPOINTS, REVISIONS
from tests.activator.objects import (
    address,
    private_endpoints,
    public_endpoints,
    revision,
    subset,
)

pytestmark = pytest.mark.timeout(20)

NS = "default"
REV = "hello-00001"
KEY = RevisionKey(NS, REV)
ME = "127.0.0.1:8012"


def new_revision(spec: RevisionSpec) -> ActiveRevision:
    return ActiveRevision(
        spec,
        metrics=None,
        queue_depth=100,
        probe_timeout_s=0.05,
        probe_frequency_s=10.0,  # one probe round per change, then quiet
        max_idle_conns=1,
        on_connect_error=lambda pool, ex, err: False,
    )


@pytest.fixture
async def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
async def table(cluster: FakeCluster) -> AsyncIterator[RevisionTable]:
    t = RevisionTable(cluster, new_revision, own_address=ME)
    t.start()
    yield t
    await t.stop()


def pods(*specs: tuple[int, bool]) -> list[dict[str, Any]]:
    """One subset per pod (port = its queue-proxy port), ready or not."""
    return [
        subset(
            {"http": port},
            [address("127.0.0.1", f"pod-{port}")] if ready else [],
            [] if ready else [address("127.0.0.1", f"pod-{port}")],
        )
        for port, ready in specs
    ]


def dests(rev: ActiveRevision) -> dict[str, bool]:
    return {a: ep.ready for a, ep in rev.backends.dests.items()}


async def active(cluster: FakeCluster, table: RevisionTable) -> ActiveRevision:
    await cluster.settle()
    rev = table.lookup(NS.encode(), REV.encode())
    assert rev is not None
    return rev


async def test_unknown_revision_is_none(cluster: FakeCluster, table: RevisionTable) -> None:
    cluster.put(revision(NS, "other-00001"))
    await cluster.settle()
    assert table.lookup(NS.encode(), REV.encode()) is None


async def test_spec_from_the_cache_and_its_updates(
    cluster: FakeCluster, table: RevisionTable
) -> None:
    cluster.put(revision(NS, REV, cc=4, timeout_s=60))
    rev = await active(cluster, table)
    assert rev.throttler.container_concurrency == 4
    assert rev.timeout_s == 60.0
    cluster.put(revision(NS, REV, cc=4, timeout_s=60, extra_spec={"idleTimeoutSeconds": 9}))
    await cluster.settle()
    assert rev.idle_timeout_s == 9.0
    assert table.lookup(NS.encode(), REV.encode()) is rev


async def test_deleted_revision_is_forgotten(cluster: FakeCluster, table: RevisionTable) -> None:
    cluster.put(revision(NS, REV))
    rev = await active(cluster, table)
    await cluster.delete(REVISIONS, NS, REV)
    await cluster.settle()
    assert KEY not in table.by_key
    assert table.lookup(NS.encode(), REV.encode()) is None
    await table.stop()  # awaits the forgotten revision's close
    assert rev.backends._task is None


@pytest.mark.parametrize(
    ("steps", "want"),
    [
        pytest.param(
            [pods((1, True), (2, False))],
            {"127.0.0.1:1": True, "127.0.0.1:2": False},
            id="ready and not ready",
        ),
        pytest.param(
            [pods((1, False)), pods((1, True), (3, True))],
            {"127.0.0.1:1": True, "127.0.0.1:3": True},
            id="became ready, one more",
        ),
        pytest.param(
            [pods((1, True), (2, True)), pods((2, True))],
            {"127.0.0.1:2": True},
            id="a pod goes",
        ),
        pytest.param(
            [pods((1, True)), []],
            {},
            id="scaled to zero",
        ),
        pytest.param(
            [[subset({"http-autometric": 9090}, [address("127.0.0.1", "p")])]],
            {},
            id="no http port: no backends",
        ),
    ],
)
async def test_private_endpoints_to_backends(
    cluster: FakeCluster,
    table: RevisionTable,
    steps: list[list[dict[str, Any]]],
    want: dict[str, bool],
) -> None:
    cluster.put(revision(NS, REV))
    rev = await active(cluster, table)
    for subsets in steps:
        cluster.put(private_endpoints(NS, REV, subsets))
        await cluster.settle()
    assert dests(rev) == want


async def test_endpoints_before_the_first_request_are_read_from_the_cache(
    cluster: FakeCluster, table: RevisionTable
) -> None:
    cluster.put(revision(NS, REV, cc=1))
    cluster.put(private_endpoints(NS, REV, pods((1, True))))
    cluster.put(public_endpoints(NS, REV, ["127.0.0.1:8011", ME]))
    rev = await active(cluster, table)
    assert dests(rev) == {"127.0.0.1:1": True}
    assert (rev.throttler.activator_index, rev.throttler.num_activators) == (1, 2)


async def test_deleted_private_endpoints_leave_no_backends(
    cluster: FakeCluster, table: RevisionTable
) -> None:
    cluster.put(revision(NS, REV))
    cluster.put(private_endpoints(NS, REV, pods((1, True))))
    rev = await active(cluster, table)
    await cluster.delete(ENDPOINTS, NS, f"{REV}-private")
    await cluster.settle()
    assert dests(rev) == {}


async def test_other_revisions_endpoints_do_not_leak(
    cluster: FakeCluster, table: RevisionTable
) -> None:
    cluster.put(revision(NS, REV))
    rev = await active(cluster, table)
    cluster.put(private_endpoints(NS, "other-00001", pods((5, True))))
    cluster.put(private_endpoints("elsewhere", REV, pods((6, True))))
    await cluster.settle()
    assert dests(rev) == {}


@pytest.mark.parametrize(
    ("cc", "steps", "want"),
    [
        pytest.param(1, [], (-1, 0), id="no public endpoints: every pod"),
        pytest.param(
            1, [["127.0.0.1:8011", "127.0.0.1:8013"]], (-1, 0), id="not included: no share"
        ),
        pytest.param(1, [["127.0.0.1:8013", ME]], (0, 2), id="1st of 2"),
        pytest.param(1, [["127.0.0.1:8011", ME]], (1, 2), id="2nd of 2"),
        pytest.param(
            1, [["127.0.0.1:8013", "127.0.0.1:8011", ME]], (1, 3), id="2nd of 3 by ip:port"
        ),
        pytest.param(
            1,
            [["127.0.0.1:8011", ME], ["127.0.0.1:8011"]],
            (1, 2),
            id="dropped from the list: the last share stays (Knative)",
        ),
        pytest.param(
            1,
            [["127.0.0.1:8011", ME], ["127.0.0.1:8011", "127.0.0.1:8010", ME]],
            (2, 3),
            id="a third activator joins",
        ),
    ],
)
async def test_public_endpoints_to_share(
    cluster: FakeCluster,
    table: RevisionTable,
    cc: int,
    steps: list[list[str]],
    want: tuple[int, int],
) -> None:
    cluster.put(revision(NS, REV, cc=cc))
    rev = await active(cluster, table)
    for activators in steps:
        cluster.put(public_endpoints(NS, REV, activators))
        await cluster.settle()
    assert (rev.throttler.activator_index, rev.throttler.num_activators) == want


@pytest.mark.parametrize(
    ("cc", "activators", "assigned", "capacity"),
    [
        pytest.param(1, [ME, "127.0.0.1:8013"], ["127.0.0.1:1", "127.0.0.1:3"], 2, id="cc 1, 1/2"),
        pytest.param(1, ["127.0.0.1:8011", ME], ["127.0.0.1:4", "127.0.0.1:5"], 2, id="cc 1, 2/2"),
        pytest.param(
            2, ["127.0.0.1:8011", "127.0.0.1:8010", ME], ["127.0.0.1:4"], 2, id="cc 2, 3/3"
        ),
        pytest.param(
            0,
            ["127.0.0.1:8011", ME],
            ["127.0.0.1:1", "127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5"],
            2**31 - 1,
            id="cc 0: every activator uses every pod",
        ),
    ],
)
async def test_share_slices_the_healthy_pods(
    cluster: FakeCluster,
    table: RevisionTable,
    cc: int,
    activators: list[str],
    assigned: list[str],
    capacity: int,
) -> None:
    """Knative's assignSlice over the pods sorted by ip:port string; capacity cc x slice."""
    cluster.put(revision(NS, REV, cc=cc))
    cluster.put(public_endpoints(NS, REV, activators))
    rev = await active(cluster, table)
    rev.update_pods(frozenset(f"127.0.0.1:{p}" for p in (1, 3, 4, 5)))
    assert [t.address for t in rev.throttler.assigned_trackers] == assigned
    assert rev.throttler.capacity == capacity
