"""Bucket leader election on Leases, the leader's stat endpoint, config-leader-election."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from autoscaler.bucket import (
    SERVICE_NAME_LABEL,
    BucketElector,
    LeaderElectionConfig,
    bucket_name,
    bucket_names,
    owner_bucket,
    slice_address,
)
from shared.envconfig import ConfigError
from shared.kube.fake import FakeCluster
from shared.kube.resources import ENDPOINTSLICES, LEASES, SERVICES
from shared.seams import RevisionKey
from tests.autoscaler.kubeharness import Clock

pytestmark = pytest.mark.timeout(20)

SYS = "knative-serving"
BUCKET = "autoscaler-bucket-00-of-01"
FAST = LeaderElectionConfig(buckets=1, lease_duration_s=15, renew_deadline_s=10,
                            retry_period_s=0.01)  # fmt: skip


@pytest.mark.parametrize(
    ("data", "want"),
    [
        pytest.param({}, LeaderElectionConfig(1, 60.0, 40.0, 10.0), id="defaults"),
        pytest.param({"buckets": "3", "lease-duration": "15s", "renew-deadline": "10s",
                      "retry-period": "2s"}, LeaderElectionConfig(3, 15.0, 10.0, 2.0),
                     id="all-keys"),
        pytest.param({"lease-duration": "1500ms", "renew-deadline": "1s", "retry-period": "200ms"},
                     LeaderElectionConfig(1, 1.5, 1.0, 0.2), id="go-durations"),
    ],
)  # fmt: skip
def test_config_from_configmap(data: dict[str, str], want: LeaderElectionConfig) -> None:
    assert LeaderElectionConfig.from_configmap(data) == want


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({"buckets": "11"}, "buckets", id="too-many-buckets"),
        pytest.param({"buckets": "0"}, "buckets", id="zero-buckets"),
        pytest.param({"buckets": "x"}, "buckets", id="not-a-number"),
        pytest.param({"lease-duration": "15"}, "lease-duration", id="no-unit"),
        pytest.param({"lease-duration": "10s"}, "renewDeadline", id="lease-not-above-renew"),
    ],
)
def test_config_refuses(data: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        LeaderElectionConfig.from_configmap(data)


def test_bucket_names() -> None:
    assert bucket_name(0, 1) == BUCKET
    assert bucket_names(3) == [
        "autoscaler-bucket-00-of-03",
        "autoscaler-bucket-01-of-03",
        "autoscaler-bucket-02-of-03",
    ]
    assert owner_bucket(RevisionKey("default", "hello-00001"), [BUCKET]) == BUCKET


Make = Callable[..., BucketElector]
Electors = tuple[FakeCluster, Clock, Make, list[tuple[str, str, bool]]]


@pytest.fixture
async def electors() -> AsyncIterator[Electors]:
    clock = Clock()
    cluster = FakeCluster(now=clock)
    changes: list[tuple[str, str, bool]] = []
    made: list[BucketElector] = []

    def make(name: str, port: int, cfg: LeaderElectionConfig = FAST) -> BucketElector:
        e = BucketElector(
            cluster, cfg, namespace=SYS, identity=f"{name}_127.0.0.1", address="127.0.0.1",
            stat_port=port, clock=clock,
            on_change=lambda bucket, leading: changes.append((name, bucket, leading)),
        )  # fmt: skip
        made.append(e)
        return e

    yield cluster, clock, make, changes
    for e in made:
        await e.stop()


async def until(cond: Callable[[], bool], within_s: float = 5.0) -> None:
    async with asyncio.timeout(within_s):
        while not cond():
            await asyncio.sleep(0.005)


async def kill(e: BucketElector) -> None:
    """kill -9: the loops stop, nothing is released."""
    await e.stop(release=False)


async def test_first_elector_leads_and_publishes_its_stat_endpoint(electors: Electors) -> None:
    cluster, _clock, make, changes = electors
    a = make("a", 18080)
    await a.start()
    await until(lambda: BUCKET in a.leading)
    await until(lambda: cluster.peek(ENDPOINTSLICES, SYS, BUCKET) is not None)
    lease = cluster.peek(LEASES, SYS, BUCKET)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "a_127.0.0.1"
    assert lease["spec"]["leaseDurationSeconds"] == 15
    eps = cluster.peek(ENDPOINTSLICES, SYS, BUCKET)
    assert eps is not None
    assert eps["metadata"]["labels"] == {SERVICE_NAME_LABEL: BUCKET}
    assert slice_address(eps) == "127.0.0.1:18080"
    svc = cluster.peek(SERVICES, SYS, BUCKET)
    assert svc is not None and "selector" not in svc["spec"]
    assert changes == [("a", BUCKET, True)]
    assert a.owns(RevisionKey("default", "hello-00001"))


@pytest.mark.parametrize(
    ("how", "takeover_after_s"),
    [
        # kill -9: the lease expires lease-duration after b saw its last renew.
        pytest.param("kill", 15, id="killed-lease-expires"),
        # A clean stop releases the lease: the other takes it at its next try.
        pytest.param("stop", 0, id="stopped-lease-released"),
    ],
)
async def test_takeover(electors: Electors, how: str, takeover_after_s: float) -> None:
    cluster, clock, make, changes = electors
    a, b = make("a", 18080), make("b", 18081)
    await a.start()
    await until(lambda: BUCKET in a.leading)
    await b.start()
    await asyncio.sleep(0.1)  # b tries ~10 times while a renews: a keeps it
    assert BUCKET not in b.leading
    if how == "kill":
        await kill(a)
    else:
        await a.stop()
    if takeover_after_s:
        # client-go times expiry from when it last saw the Lease change (its own clock, not
        # the renewTime): let b see a's last renew before the clock moves.
        await asyncio.sleep(0.1)
        clock.now += takeover_after_s - 1
        await asyncio.sleep(0.1)
        assert BUCKET not in b.leading  # not before the lease expired
        clock.now += 1.5
    await until(lambda: BUCKET in b.leading)
    await until(
        lambda: slice_address(cluster.peek(ENDPOINTSLICES, SYS, BUCKET)) == "127.0.0.1:18081"
    )
    lease = cluster.peek(LEASES, SYS, BUCKET)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "b_127.0.0.1"
    assert lease["spec"]["leaseTransitions"] == 1
    assert ("b", BUCKET, True) in changes


async def test_leader_that_cannot_renew_steps_down(electors: Electors) -> None:
    """Another holder took the lease (our renews fail): step down, stop deciding."""
    cluster, _clock, make, changes = electors
    a = make("a", 18080)
    await a.start()
    await until(lambda: BUCKET in a.leading)
    lease = cluster.peek(LEASES, SYS, BUCKET)
    assert lease is not None
    lease["spec"]["holderIdentity"] = "z_10.0.0.9"
    cluster.put(lease)
    await until(lambda: BUCKET not in a.leading)
    assert changes[-1] == ("a", BUCKET, False)
