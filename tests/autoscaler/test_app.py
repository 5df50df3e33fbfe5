"""Two autoscaler processes (in-process) over one FakeCluster: buckets, forwarding, config.

Real stat servers on loopback and real WebSockets between the replicas; the cluster is the
in-memory one, and the test plays Knative's controller (PA, Deployment, Pods, SKS status).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.client import connect

from autoscaler.app import Autoscaler, ProcessConfig
from autoscaler.bucket import bucket_names, owner_bucket
from autoscaler.config import EngineConfig
from shared.kube.fake import FakeCluster
from shared.kube.lease import micro_time
from shared.kube.resources import CONFIGMAPS, METRICS, SERVERLESSSERVICES, Obj
from shared.stat_proto import StatData, encode_wire_stats
from tests.autoscaler.kubeharness import (
    KEY,
    NS,
    REV,
    FakePods,
    FakeProber,
    deployment,
    pa,
    pod,
    sks_status,
)

pytestmark = pytest.mark.timeout(30)

SYS = "knative-serving"
LOOPBACK = "127.0.0.1"


def configmap(name: str, data: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": SYS}, "data": data}  # fmt: skip


async def until(cond: Callable[[], bool], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not cond():
            await asyncio.sleep(0.01)


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    c = FakeCluster()
    c.put(configmap("config-leader-election", {"lease-duration": "2s", "renew-deadline": "1s",
                                               "retry-period": "50ms"}))  # fmt: skip
    c.put(configmap("config-autoscaler", {"stable-window": "6s"}))
    c.put(pa())
    c.put(deployment(1))
    c.put(pod(0))
    yield c


@pytest.fixture
async def replicas(cluster: FakeCluster) -> AsyncIterator[Callable[[str], Autoscaler]]:
    made: list[Autoscaler] = []

    def make(name: str) -> Autoscaler:
        cfg = ProcessConfig(
            pod_name=name,
            pod_ip=LOOPBACK,
            engine=EngineConfig(bind_host=LOOPBACK, stat_port=0, metrics_port=0),
        )
        a = Autoscaler(cfg, cluster, cluster, scrape_client=FakePods(), prober=FakeProber())
        made.append(a)
        return a

    yield make
    for a in made:
        await a.stop()


async def ready_sks(cluster: FakeCluster) -> None:
    """Play Knative's SKS reconciler once the autoscaler created the SKS."""
    await until(lambda: cluster.peek(SERVERLESSSERVICES, NS, REV) is not None)
    sks = cluster.peek(SERVERLESSSERVICES, NS, REV)
    assert sks is not None
    cluster.put(sks_status(sks, proxy_since=time.time()))


async def test_only_the_leader_decides_and_others_forward(
    cluster: FakeCluster, replicas: Callable[[str], Autoscaler]
) -> None:
    a, b = replicas("a"), replicas("b")
    await a.start()
    assert a.elector is not None
    await until(lambda: bool(a.elector and a.elector.leading))
    await b.start()
    await ready_sks(cluster)
    await until(lambda: KEY in a.engine.multiscaler)
    await asyncio.sleep(0.3)
    assert KEY not in b.engine.multiscaler  # b does not lead the bucket: it decides nothing
    # An activator's stat reaches b; b forwards it to a, which records it.
    stat = StatData("activator", 4.0, 0.0, 4.0, 0.0, 0.0, int(time.time()))
    async with connect(f"ws://{LOOPBACK}:{b.engine.stat_port}") as ws:
        await ws.send(encode_wire_stats([(NS, REV, stat)]))
        await until(lambda: a.engine.stat_server.messages_received >= 1)
    assert b.forwarder is not None and b.forwarder.forwarded == 1
    avg = a.engine.collector.stable_and_panic_concurrency(KEY, time.time() + 1)
    assert avg is not None and avg.stable > 0


async def test_stopped_leader_hands_over(
    cluster: FakeCluster, replicas: Callable[[str], Autoscaler]
) -> None:
    a, b = replicas("a"), replicas("b")
    await a.start()
    await until(lambda: bool(a.elector and a.elector.leading))
    await b.start()
    await ready_sks(cluster)
    await until(lambda: KEY in a.engine.multiscaler)
    await a.stop()  # releases the lease
    started = time.monotonic()
    await until(lambda: KEY in b.engine.multiscaler, within_s=5)
    assert time.monotonic() - started < 1.0  # released: no lease expiry to wait for


async def test_config_autoscaler_change_resyncs_every_pa(
    cluster: FakeCluster, replicas: Callable[[str], Autoscaler]
) -> None:
    a = replicas("a")
    await a.start()
    await ready_sks(cluster)
    await until(lambda: cluster.peek(METRICS, NS, REV) is not None)
    metric = cluster.peek(METRICS, NS, REV)
    assert metric is not None and metric["spec"]["stableWindow"] == 6_000_000_000
    cm = cluster.peek(CONFIGMAPS, SYS, "config-autoscaler")
    assert cm is not None
    cm["data"] = {"stable-window": "12s"}
    cluster.put(cm)

    def window() -> int:
        m = cluster.peek(METRICS, NS, REV)
        return 0 if m is None else int(m["spec"]["stableWindow"])

    await until(lambda: window() == 12_000_000_000)


async def test_a_failed_start_stops_what_it_started(cluster: FakeCluster) -> None:
    """A taken stat port: start raises, and the session and informers are released."""
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        cfg = ProcessConfig(
            pod_name="a",
            pod_ip=LOOPBACK,
            engine=EngineConfig(
                bind_host=LOOPBACK, stat_port=taken.getsockname()[1], metrics_port=0
            ),
        )
        a = Autoscaler(cfg, cluster, cluster, scrape_client=FakePods(), prober=FakeProber())
        with pytest.raises(OSError):
            await a.start()
    assert a._session is None
    assert a.elector is None  # never elected: no lease taken


def lease(bucket: str, holder: str) -> Obj:
    now = micro_time(time.time())
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": bucket, "namespace": SYS},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 2, "acquireTime": now,
                 "renewTime": now, "leaseTransitions": 0},
    }  # fmt: skip


async def test_two_buckets_split_the_revisions_and_forward_across(
    cluster: FakeCluster, replicas: Callable[[str], Autoscaler]
) -> None:
    """buckets 2: a holds bucket 00, b bucket 01, which hello-00001 hashes to (ChooseSubset).
    Only b decides it; a stat that reaches a is forwarded to b."""
    assert owner_bucket(KEY, bucket_names(2)) == "autoscaler-bucket-01-of-02"
    cm = cluster.peek(CONFIGMAPS, SYS, "config-leader-election")
    assert cm is not None
    cm["data"]["buckets"] = "2"
    cluster.put(cm)
    cluster.put(lease("autoscaler-bucket-00-of-02", f"a_{LOOPBACK}"))
    cluster.put(lease("autoscaler-bucket-01-of-02", f"b_{LOOPBACK}"))
    a, b = replicas("a"), replicas("b")
    await a.start()
    await b.start()
    await until(lambda: bool(a.elector and b.elector and a.elector.leading and b.elector.leading))
    assert a.elector is not None and b.elector is not None
    assert (a.elector.leading, b.elector.leading) == (
        {"autoscaler-bucket-00-of-02"}, {"autoscaler-bucket-01-of-02"})  # fmt: skip
    await ready_sks(cluster)
    await until(lambda: KEY in b.engine.multiscaler)
    assert KEY not in a.engine.multiscaler
    stat = StatData("activator", 4.0, 0.0, 4.0, 0.0, 0.0, int(time.time()))
    async with connect(f"ws://{LOOPBACK}:{a.engine.stat_port}") as ws:
        await ws.send(encode_wire_stats([(NS, REV, stat)]))
        await until(lambda: b.engine.stat_server.messages_received >= 1)
    assert a.forwarder is not None and a.forwarder.forwarded == 1
