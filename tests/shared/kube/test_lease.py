"""Leader election with two electors on one Lease: one leader at a time, fast handover."""

from __future__ import annotations

import asyncio
import builtins
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.kube.client import ApiError, PatchType
from shared.kube.fake import FakeCluster
from shared.kube.lease import LeaderElectionConfig, LeaderElector, micro_time
from shared.kube.resources import LEASES, Obj, Resource

NS = "knative-serving"
LEASE = "autoscaler-bucket-00-of-01"
FAST = LeaderElectionConfig(lease_duration_s=2, renew_deadline_s=1.5, retry_period_s=0.25)
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Partitionable:
    """A KubeClient over a FakeCluster that can be cut off (every call 503)."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise ApiError(503, "ServiceUnavailable", "partitioned")

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        self._check()
        return await self.cluster.get(resource, namespace, name)

    async def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> Obj:
        self._check()
        return await self.cluster.list(resource, namespace, label_selector)

    async def create(self, resource: Resource, namespace: str, body: Obj) -> Obj:
        self._check()
        return await self.cluster.create(resource, namespace, body)

    async def replace(self, resource: Resource, namespace: str, name: str, body: Obj) -> Obj:
        self._check()
        return await self.cluster.replace(resource, namespace, name, body)

    async def replace_status(self, resource: Resource, namespace: str, name: str, body: Obj) -> Obj:
        self._check()
        return await self.cluster.replace_status(resource, namespace, name, body)

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Obj | builtins.list[Obj],
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> Obj:
        self._check()
        return await self.cluster.patch(resource, namespace, name, patch, patch_type, subresource)

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        self._check()
        await self.cluster.delete(resource, namespace, name)


class Pair:
    """Two electors for one lease and a monitor that fails on two leaders at once."""

    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.clients = [Partitionable(self.cluster), Partitionable(self.cluster)]
        self.log: list[tuple[float, str, str]] = []
        self.electors = [
            LeaderElector(
                c,
                NS,
                LEASE,
                f"autoscaler-{i}_10.0.0.{i}",
                FAST,
                on_started_leading=self._cb(i, "started"),
                on_stopped_leading=self._cb(i, "stopped"),
            )
            for i, c in enumerate(self.clients)
        ]
        self.overlaps = 0

    def _cb(self, i: int, what: str) -> Any:
        return lambda: self.log.append((time.monotonic(), str(i), what))

    def leaders(self) -> list[int]:
        return [i for i, e in enumerate(self.electors) if e.is_leader]

    async def monitor(self) -> None:
        while True:
            if len(self.leaders()) > 1:
                self.overlaps += 1
            await asyncio.sleep(0.005)

    async def wait_leader(self, timeout_s: float = 5, not_: int | None = None) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leaders = [i for i in self.leaders() if i != not_]
            if leaders:
                return leaders[0]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no leader after {timeout_s}s: {self.log}")

    def spec(self) -> dict[str, Any]:
        lease = self.cluster.peek(LEASES, NS, LEASE)
        assert lease is not None
        spec: dict[str, Any] = lease["spec"]
        return spec


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    mon = asyncio.get_running_loop().create_task(p.monitor())
    for e in p.electors:
        e.start()
    try:
        yield p
    finally:
        for e in p.electors:
            await e.stop()
        mon.cancel()
        await asyncio.wait([mon])
        assert p.overlaps == 0, f"two leaders at once: {p.log}"


async def test_one_leader_and_lease_fields(pair: Pair) -> None:
    leader = await pair.wait_leader()
    await asyncio.sleep(1.0)  # a few renewals
    assert pair.leaders() == [leader]
    spec = pair.spec()
    assert spec["holderIdentity"] == f"autoscaler-{leader}_10.0.0.{leader}"
    assert spec["leaseDurationSeconds"] == 2
    assert MICRO.match(spec["acquireTime"]) and MICRO.match(spec["renewTime"])
    assert spec["renewTime"] > spec["acquireTime"]
    assert spec["leaseTransitions"] == 0
    assert pair.electors[1 - leader].holder == spec["holderIdentity"]


async def test_release_hands_over_at_once(pair: Pair) -> None:
    first = await pair.wait_leader()
    t0 = time.monotonic()
    await pair.electors[first].stop()  # ReleaseOnCancel
    released = pair.spec()
    assert released["holderIdentity"] == "" and released["leaseDurationSeconds"] == 1
    second = await pair.wait_leader(not_=first)
    took = time.monotonic() - t0
    # The next retry (0.25 s, up to +120 % jitter), not the 2 s lease.
    assert took < 1.5, took  # well under the 2 s lease
    assert pair.spec()["holderIdentity"].startswith(f"autoscaler-{second}_")
    assert pair.spec()["leaseTransitions"] == 1
    assert [(who, what) for _, who, what in pair.log] == [
        (str(first), "started"),
        (str(first), "stopped"),
        (str(second), "started"),
    ]


async def test_crashed_leader_replaced_after_lease_duration(pair: Pair) -> None:
    first = await pair.wait_leader()
    t0 = time.monotonic()
    await pair.electors[first].stop(release=False)  # dies without releasing
    second = await pair.wait_leader(timeout_s=6, not_=first)
    took = time.monotonic() - t0
    assert second != first
    # Not before the lease (2 s, timed from the last renewal seen), within one retry after it.
    assert 1.4 <= took <= 2 + 0.25 * 2.2 + 1.5, took


async def test_partitioned_leader_steps_down_before_takeover(pair: Pair) -> None:
    first = await pair.wait_leader()
    t0 = time.monotonic()
    pair.clients[first].cut = True
    second = await pair.wait_leader(timeout_s=6, not_=first)
    stopped = [t for t, who, what in pair.log if who == str(first) and what == "stopped"]
    started = [t for t, who, what in pair.log if who == str(second) and what == "started"]
    assert stopped and started and stopped[0] < started[-1]
    assert stopped[0] - t0 <= 1.5 + 0.25 + 0.75  # the renew deadline, give or take load
    pair.clients[first].cut = False
    await asyncio.sleep(1.0)
    assert pair.leaders() == [second]  # the old leader comes back as a follower


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"lease_duration_s": 40, "renew_deadline_s": 40}, "leaseDuration", id="lease<=renew"
        ),
        pytest.param(
            {"renew_deadline_s": 12, "retry_period_s": 10}, "renewDeadline", id="renew<=retry*1.2"
        ),
        pytest.param({"retry_period_s": -1}, "retryPeriod", id="retry<=0"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeaderElectionConfig(**kwargs)


def test_defaults_and_micro_time() -> None:
    c = LeaderElectionConfig()
    assert (c.lease_duration_s, c.renew_deadline_s, c.retry_period_s) == (60, 40.0, 10.0)
    assert micro_time(1_800_000_000.25) == "2027-01-15T08:00:00.250000Z"
    with pytest.raises(ValueError):
        LeaderElector(FakeCluster(), NS, LEASE, "")


async def test_malformed_lease_and_raising_callback_do_not_kill_the_elector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster()
    cluster.put(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NS},
            "spec": {"holderIdentity": "", "leaseTransitions": "many"},
        }
    )

    def boom() -> None:
        raise RuntimeError("callback bug")

    e = LeaderElector(cluster, NS, LEASE, "a_1", FAST, on_started_leading=boom)
    e.start()
    try:
        await asyncio.sleep(0.3)
        assert not e.is_leader  # the malformed lease is not taken blindly
        assert "malformed lease" in caplog.text
        lease = cluster.peek(LEASES, NS, LEASE)
        assert lease is not None
        lease["spec"]["leaseTransitions"] = 3
        cluster.put(lease)
        deadline = time.monotonic() + 3
        while not e.is_leader and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert e.is_leader and "callback bug" in caplog.text
        await asyncio.sleep(0.6)  # keeps renewing after the failed callback
        lease = cluster.peek(LEASES, NS, LEASE)
        assert lease is not None
        spec = lease["spec"]
        assert spec["holderIdentity"] == "a_1" and spec["leaseTransitions"] == 4
        assert e.is_leader
    finally:
        await e.stop()
