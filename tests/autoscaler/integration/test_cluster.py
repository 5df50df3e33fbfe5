"""``python -m autoscaler --kubeconfig`` against a real Kubernetes API server and queue-proxies.

The API server is knpy's (controlplane/kubeapi), with no controllers: the test plays Knative's
controller and the kubelet. It writes the ConfigMaps, the PodAutoscaler, the Deployment, the
Pods (with their real queue-proxy ports) and, once the autoscaler has created the SKS, its
status and the revision's public Endpoints (pointing at a stand-in activator that answers
Knative's probe). Knative's webhook (controlplane/webhook.py) admits every write, so what the
autoscaler writes passes Knative's validation. Everything it does is read back from the API:
the Deployment's ``spec.replicas``, the PA status, the SKS, the Metric, the Lease. Windows are
short (stable 6 s, grace 6 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import connect

from controlplane.kubeapi.server import KubeApiServer
from controlplane.webhook import admission_hooks
from shared.kube.client import KubeClient
from shared.kube.config import load_api_client
from shared.kube.kubeclient import ApiKubeClient
from shared.kube.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    ENDPOINTS,
    LEASES,
    METRICS,
    PODAUTOSCALERS,
    PODS,
    SERVERLESSSERVICES,
    Obj,
)
from shared.stat_proto import StatData, encode_wire_stats
from tests.autoscaler.kubeharness import (
    DEPLOYMENT,
    NS,
    REV,
    deployment,
    pa,
    pod,
    sks_status,
)
from tests.queueproxy.integration.conftest import _Children
from tests.queueproxy.integration.qpharness import (
    LOOPBACK,
    Child,
    Stack,
    StartStack,
    free_port,
    wait_listening,
)

pytestmark = pytest.mark.timeout(90)

SYS = "knative-serving"
BUCKET = "autoscaler-bucket-00-of-01"
SHORT = {"stable-window": "6s", "scale-to-zero-grace-period": "6s"}
# Short leases: a killed leader's bucket is free 3 s after its last renew.
LEASES_FAST = {"lease-duration": "3s", "renew-deadline": "2s", "retry-period": "500ms"}
SLEEP_MS = 100


def configmap(name: str, data: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": SYS}, "data": data}  # fmt: skip


@dataclass
class Cluster:
    """The API server, a client on it, and the autoscaler processes started against it."""

    server: KubeApiServer
    client: KubeClient
    children: _Children
    autoscalers: dict[str, tuple[Child, int]] = field(default_factory=dict)

    async def start_autoscaler(self, name: str) -> int:
        """A ``python -m autoscaler`` child; returns its stat port once it listens."""
        stat, metrics = free_port(), free_port()
        env = {
            "POD_NAME": name,
            "POD_IP": LOOPBACK,
            "SYSTEM_NAMESPACE": SYS,
            "AUTOSCALER_STAT_PORT": str(stat),
            "AUTOSCALER_METRICS_PORT": str(metrics),
            "AUTOSCALER_BIND_HOST": LOOPBACK,
            "AUTOSCALER_LOG_LEVEL": "INFO",
        }
        argv = [sys.executable, "-m", "autoscaler", "--kubeconfig",
                str(self.server.kubeconfig_path)]  # fmt: skip
        child = self.children.spawn(f"autoscaler-{name}", argv, env)
        await wait_listening(child, {"AUTOSCALER_STAT_PORT": stat})
        self.autoscalers[name] = (child, stat)
        return stat

    async def get(self, resource: object, ns: str, name: str) -> Obj:
        obj = await self.client.get(resource, ns, name)  # type: ignore[arg-type]
        assert obj is not None, f"{resource} {ns}/{name} missing"
        return obj

    async def replicas(self) -> int:
        d = await self.get(DEPLOYMENTS, NS, DEPLOYMENT)
        return int(d["spec"].get("replicas", 1))

    async def holder(self) -> str:
        lease = await self.client.get(LEASES, SYS, BUCKET)
        return "" if lease is None else str(lease["spec"].get("holderIdentity") or "")

    async def put_pod(self, obj: Obj) -> None:
        status = obj.pop("status")
        created = await self.client.create(PODS, NS, obj)
        created["status"] = status
        await self.client.replace_status(PODS, NS, obj["metadata"]["name"], created)

    async def play_sks_reconciler(self, activator_port: int) -> None:
        """Once the autoscaler made the SKS: its status, and activators in the public path."""
        sks = await until_value(lambda: self.client.get(SERVERLESSSERVICES, NS, REV), 15,
                                "the SKS")  # fmt: skip
        sks = sks_status(sks, proxy_since=time.time() - 60)
        await self.client.replace_status(SERVERLESSSERVICES, NS, REV, sks)
        await self.client.create(ENDPOINTS, NS, {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": REV, "namespace": NS},
            "subsets": [{"addresses": [{"ip": LOOPBACK}],
                         "ports": [{"name": "http", "port": activator_port}]}],
        })  # fmt: skip


async def until_value(get: Callable[[], Awaitable[Obj | None]], within_s: float, what: str) -> Obj:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = await get()
        if value is not None:
            return value
        await asyncio.sleep(0.1)
    pytest.fail(f"no {what} within {within_s} s")


async def until(
    check: Callable[[], Awaitable[bool]], within_s: float, what: str, c: Cluster | None = None
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    logs = "".join(child.stderr_tail() for child, _ in (c.autoscalers.values() if c else []))
    pytest.fail(f"not {what} within {within_s} s\n{logs}")


@pytest.fixture
async def cluster(tmp_path: Path, children: _Children) -> AsyncIterator[Cluster]:
    # Knative's webhook admits every write, the autoscaler's SKS, Metric and PA status too.
    server = KubeApiServer(tmp_path / "state", admission=admission_hooks())
    await server.start()
    api = await load_api_client({}, str(server.kubeconfig_path))
    c = Cluster(server, ApiKubeClient(api), children)
    try:
        yield c
    finally:
        children.kill_all()
        await api.close()
        await server.stop()


@pytest.fixture
async def activator() -> AsyncIterator[int]:
    """A stand-in for the activator in the revision's path: it answers Knative's probe."""

    async def healthz(request: web.Request) -> web.Response:
        if request.headers.get("K-Network-Probe") == "activator":
            return web.Response(text="activator")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    yield port
    await runner.cleanup()


async def seed(c: Cluster, config: dict[str, str], pods: list[Stack],
               annotations: dict[str, str] | None = None, replicas: int = 1) -> None:  # fmt: skip
    await c.client.create(CONFIGMAPS, SYS, configmap("config-autoscaler", config))
    await c.client.create(CONFIGMAPS, SYS, configmap("config-leader-election", LEASES_FAST))
    await c.client.create(DEPLOYMENTS, NS, deployment(replicas))
    for i, s in enumerate(pods):
        obj = pod(i, metrics_port=s.qp.metrics_port)
        obj["status"]["podIP"] = LOOPBACK
        await c.put_pod(obj)
    body = pa(annotations=annotations)
    body["metadata"].pop("uid")
    body["metadata"].pop("generation")
    await c.client.create(PODAUTOSCALERS, NS, body)


@contextlib.asynccontextmanager
async def load(pods: list[Stack], clients: int) -> AsyncIterator[list[BaseException]]:
    """``clients`` loops of GET /sleep?ms=100 on the pods; yields the errors seen."""
    errors: list[BaseException] = []
    urls = [f"{s.qp.url}/sleep?ms={SLEEP_MS}" for s in pods]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def client(url: str) -> None:
        while True:
            try:
                async with session.get(url) as resp:
                    await resp.read()
            except aiohttp.ClientError as err:
                errors.append(err)
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(client(urls[i % len(urls)])) for i in range(clients)]
    try:
        yield errors
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()


async def test_20_in_flight_at_cc10_scales_the_deployment_to_3(
    cluster: Cluster, stack: StartStack, activator: int
) -> None:
    """Knative's writes, read back from the API: /scale, PA status, SKS, Metric."""
    pods = [await stack(qp_env={"CONTAINER_CONCURRENCY": "10"})]
    await seed(cluster, SHORT, pods)
    await cluster.start_autoscaler("autoscaler-a")
    await cluster.play_sks_reconciler(activator)
    async with load(pods, 20) as errors:

        async def at_3() -> bool:
            return await cluster.replicas() == 3

        await until(at_3, 20, "Deployment at 3 replicas", cluster)

        async def status_3() -> bool:
            st = (await cluster.get(PODAUTOSCALERS, NS, REV)).get("status", {})
            return bool(st.get("desiredScale") == 3)

        await until(status_3, 5, "PA desiredScale 3", cluster)
        assert not errors
    status = (await cluster.get(PODAUTOSCALERS, NS, REV))["status"]
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds["Active"] == "True" and conds["SKSReady"] == "True"
    assert status["actualScale"] == 1  # the test's kubelet never started the other two
    assert (status["serviceName"], status["metricsServiceName"]) == (REV, f"{REV}-private")
    assert await cluster.holder() == f"autoscaler-a_{LOOPBACK}"
    metric = await cluster.get(METRICS, NS, REV)
    assert metric["spec"] == {"stableWindow": 6_000_000_000, "panicWindow": 1_000_000_000,
                              "scrapeTarget": f"{REV}-private"}  # fmt: skip
    sks = await cluster.get(SERVERLESSSERVICES, NS, REV)
    # One pod of 10 cannot hold TBC 211: the activators stay; ceil((10 + 211) / 100) = 3.
    assert (sks["spec"]["mode"], sks["spec"]["numActivators"]) == ("Proxy", 3)


async def test_idle_to_zero_then_the_activator_stat_wakes_it(
    cluster: Cluster, stack: StartStack, activator: int
) -> None:
    """Idle: Inactive after the stable window, zero after the probe and grace; then the
    activator's WireStatMessages over the WebSocket brings it back to 1 at once."""
    pods = [await stack(qp_env={"CONTAINER_CONCURRENCY": "10"})]
    await seed(cluster, SHORT, pods)
    stat_port = await cluster.start_autoscaler("autoscaler-a")
    await cluster.play_sks_reconciler(activator)

    async def at_zero() -> bool:
        return await cluster.replicas() == 0

    took = await until(at_zero, 40, "Deployment at 0 replicas", cluster)
    assert took >= 5  # a stable window at least
    status = (await cluster.get(PODAUTOSCALERS, NS, REV))["status"]
    active = next(c for c in status["conditions"] if c["type"] == "Active")
    assert (active["status"], active["reason"]) == ("False", "NoTraffic")
    await cluster.client.delete(PODS, NS, f"{REV}-deployment-0")  # the kubelet's part
    await asyncio.sleep(2.5)
    async with connect(f"ws://{LOOPBACK}:{stat_port}") as ws:
        stat = StatData("activator-0", 1.0, 0.0, 1.0, 0.0, 0.0, int(time.time()))
        sent = time.monotonic()
        await ws.send(encode_wire_stats([(NS, REV, stat)]))

        async def at_one() -> bool:
            return await cluster.replicas() == 1

        await until(at_one, 5, "woken to 1 replica", cluster)
    assert time.monotonic() - sent < 2.5  # a poke, not the next stable window


async def test_killed_leader_is_replaced_within_the_lease_and_never_doubles(
    cluster: Cluster, stack: StartStack, activator: int
) -> None:
    pods = [await stack(qp_env={"CONTAINER_CONCURRENCY": "10"})]
    await seed(cluster, SHORT, pods)
    await cluster.start_autoscaler("autoscaler-a")

    async def a_leads() -> bool:
        return await cluster.holder() == f"autoscaler-a_{LOOPBACK}"

    await until(a_leads, 10, "a leading", cluster)
    await cluster.start_autoscaler("autoscaler-b")
    await cluster.play_sks_reconciler(activator)
    async with load(pods, 20) as errors:

        async def at_3() -> bool:
            return await cluster.replicas() == 3

        await until(at_3, 20, "Deployment at 3 replicas", cluster)
        cluster.autoscalers["autoscaler-a"][0].kill()  # kill -9

        async def b_leads() -> bool:
            return await cluster.holder() == f"autoscaler-b_{LOOPBACK}"

        # The lease runs out 3 s after b last saw a renew it; b tries every 0.5-1.1 s
        # (client-go's jitter): at most 3 + 2 x 1.1 s after the kill.
        took = await until(b_leads, 8, "b leading", cluster)
        assert took <= 3.0 + 2 * 1.1 + 0.5, took
        seen: list[int] = []
        watched = time.monotonic()
        while time.monotonic() - watched < 6:  # b decides from its own, fresh windows
            seen.append(await cluster.replicas())
            await asyncio.sleep(0.1)
        assert max(seen) == 3, seen  # never doubled
        assert seen[-1] == 3
        # b is the one deciding now: a forged write is put back within a tick (level-based).
        forged = [{"op": "add", "path": "/spec/replicas", "value": 5}]
        await cluster.client.patch(DEPLOYMENTS, NS, DEPLOYMENT, forged, "json", subresource="scale")
        await until(at_3, 5, "b putting the replicas back to 3", cluster)
        assert not errors
    lease = await cluster.get(LEASES, SYS, BUCKET)
    assert lease["spec"]["leaseTransitions"] >= 1
