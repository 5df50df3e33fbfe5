"""The activator's drain on SIGTERM, end to end: a real ``python -m activator --kubeconfig``
process against knpy's Kubernetes API server.

Knative's activator main, on SIGTERM: the kubelet probe fails at once ("received SIGTERM from
kubelet") so that the endpoints drop it, but requests keep being served for the drain timeout
(the time that non-readiness takes to reach every load balancer), the requests in flight
finish, and then the process exits. Here the drain timeout is 2 s instead of 45 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.activator import objects
from tests.queueproxy.integration.qpharness import LOOPBACK, StartStack, raw_exchange

from .harness import KEY, ROUTE, AutoscalerStandIn, set_pods
from .kube import KubeApi, kube_api, spawn_activator

pytestmark = pytest.mark.timeout(40)

DRAIN_S = 2.0  # room for the checks below on a busy machine
IN_FLIGHT_MS = 3500  # longer than the drain: still running when the listener closes
EXIT_WITHIN_S = 10.0  # drain + the in-flight request's rest + start-up slack
KUBELET_PROBE = b"GET / HTTP/1.1\r\nHost: a\r\nK-Kubelet-Probe: activator\r\n\r\n"


@pytest.fixture
async def kube(tmp_path: Path) -> Any:
    async with kube_api(tmp_path / "kube") as api:
        yield api


async def test_sigterm_fails_health_serves_in_flight_and_arriving_then_exits(
    children: Any,
    kube: KubeApi,
    stack: StartStack,
    standin: AutoscalerStandIn,
    client: aiohttp.ClientSession,
) -> None:
    pod = await stack()
    await kube.apply(objects.revision(KEY.namespace, KEY.name, cc=0))
    await kube.apply(set_pods(None, [(pod, True)]))
    act = await spawn_activator(
        children, kube, standin.url, ACTIVATOR_DRAIN_TIMEOUT_SECONDS=str(DRAIN_S)
    )
    child, port, metrics = act.child, act.port, act.metrics_port
    url = f"http://{LOOPBACK}:{port}"
    health_url = f"http://{LOOPBACK}:{metrics}/healthz"
    await standin.wait_for(lambda: standin.connections == 1)
    async with asyncio.timeout(5):  # ready: the link to the autoscaler is up
        while (await raw_exchange(port, KUBELET_PROBE)).status != 200:
            await asyncio.sleep(0.02)
    async with client.get(url + "/", headers=ROUTE) as resp:
        assert resp.status == 200

    in_flight = asyncio.ensure_future(client.get(f"{url}/sleep?ms={IN_FLIGHT_MS}", headers=ROUTE))
    await asyncio.sleep(0.2)  # it reached the pod
    child.terminate()
    sigterm_at = time.monotonic()

    # Health fails at once, on the serving port's kubelet probe and on /healthz.
    async with asyncio.timeout(0.5):
        while (probe := await raw_exchange(port, KUBELET_PROBE)).status != 500:
            await asyncio.sleep(0.01)
    assert b"received SIGTERM from kubelet" in probe.body
    async with client.get(health_url) as resp:
        assert resp.status == 500
        assert "received SIGTERM from kubelet" in await resp.text()

    # Requests arriving during the drain are served, on new and on kept-alive connections.
    async with aiohttp.ClientSession() as fresh, fresh.get(url + "/", headers=ROUTE) as resp:
        assert resp.status == 200
    async with client.get(url + "/", headers=ROUTE) as resp:
        assert resp.status == 200
    assert time.monotonic() - sigterm_at < DRAIN_S, "the drain checks took too long"

    # The request in flight since before SIGTERM finishes, after the listener closed.
    async with asyncio.timeout(IN_FLIGHT_MS / 1000 + 2):
        resp = await in_flight
    assert resp.status == 200
    resp.release()
    assert time.monotonic() - sigterm_at >= DRAIN_S
    with pytest.raises(OSError):  # drained: no more connections
        await asyncio.open_connection(LOOPBACK, port)

    code = await child.wait_exit(EXIT_WITHIN_S)
    assert code == 0, child.describe()
    assert "received SIGTERM from kubelet; serving for 2 s more" in child.stderr()
