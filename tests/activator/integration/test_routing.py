"""Routing, probes, health, the rewritten request and pass-through, through real pods."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from shared.kube.fake import FakeCluster
from tests.activator import objects
from tests.queueproxy.integration.qpharness import StartStack

from .harness import KEY, ROUTE, AutoscalerStandIn, StartActivator, put_revision, set_pods

pytestmark = pytest.mark.timeout(30)


async def test_unknown_revision_is_404(
    start_activator: StartActivator, client: aiohttp.ClientSession
) -> None:
    act = await start_activator()
    headers = {"Knative-Serving-Namespace": "default", "Knative-Serving-Revision": "nope"}
    async with client.get(act.url + "/", headers=headers) as resp:
        assert resp.status == 404
        assert 'revision.serving.knative.dev "nope" not found' in await resp.text()
    async with client.get(act.url + "/") as resp:  # no routing at all
        assert resp.status == 404


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        pytest.param({"K-Network-Probe": "activator"}, 200, "activator", id="network-probe"),
        pytest.param({"K-Network-Probe": "queue"}, 400, "unexpected probe", id="wrong-probe"),
        pytest.param({"K-Kubelet-Probe": "x"}, 200, "", id="kubelet-healthy"),
        pytest.param({"User-Agent": "kube-probe/1.30"}, 200, "", id="kubelet-agent"),
    ],
)
async def test_probes_answered_by_the_activator(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    standin: AutoscalerStandIn,
    headers: dict[str, str],
    status: int,
    body: str,
) -> None:
    act = await start_activator()
    await standin.wait_for(lambda: act.sink.connected)
    async with client.get(act.url + "/", headers=headers) as resp:
        assert resp.status == status
        assert body in await resp.text()


async def test_health_fails_on_sigterm_and_without_autoscaler(
    start_activator: StartActivator, client: aiohttp.ClientSession, standin: AutoscalerStandIn
) -> None:
    act = await start_activator()
    await standin.wait_for(lambda: act.sink.connected)
    async with client.get(act.metrics_url + "/healthz") as resp:
        assert resp.status == 200
    await standin.stop()
    await standin.wait_for(lambda: not act.sink.connected)
    async with client.get(act.url + "/", headers={"K-Kubelet-Probe": "1"}) as resp:
        assert resp.status == 500
        assert "not connected to the autoscaler" in await resp.text()
    act.activator.begin_drain()
    async with client.get(act.url + "/", headers={"K-Kubelet-Probe": "1"}) as resp:
        assert resp.status == 500
        assert "received SIGTERM from kubelet" in await resp.text()


async def test_request_rewritten_as_knative(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    cluster: FakeCluster,
    stack: StartStack,
) -> None:
    """Routing headers dropped, K-Proxy-Request set, Host restored by the queue-proxy."""
    s = await stack()
    put_revision(cluster, cc=0)
    set_pods(cluster, [(s, True)])
    act = await start_activator()
    usual = {**ROUTE, "Host": "hello.default.example.com", "K-Proxy-Request": "forged"}
    # Header names are case-insensitive: the activator remembers each spelling it meets.
    odd = {name.upper() if i % 2 else name.lower(): v for i, (name, v) in enumerate(usual.items())}
    for headers in (usual, odd, usual):
        async with client.get(act.url + "/headers", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            seen = await resp.json()
        got = {k.lower(): v for k, v in seen["headers"].items()}
        assert got["k-proxy-request"] == "activator"
        assert got["host"] == "hello.default.example.com"
        assert "knative-serving-revision" not in got
        assert "knative-serving-namespace" not in got
        assert got["x-forwarded-for"].startswith("127.0.0.1")


async def test_routing_by_cluster_local_host(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    cluster: FakeCluster,
    stack: StartStack,
) -> None:
    s = await stack()
    put_revision(cluster, cc=0)
    set_pods(cluster, [(s, True)])
    act = await start_activator()
    host = f"{KEY.name}.{KEY.namespace}.svc.cluster.local"
    async with client.get(act.url + "/", headers={"Host": host}) as resp:
        assert resp.status == 200
        assert "revision: hello-00001" in await resp.text()


async def test_bodies_stream_and_websockets_pass(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    cluster: FakeCluster,
    stack: StartStack,
) -> None:
    s = await stack()
    put_revision(cluster, cc=1)
    set_pods(cluster, [(s, True)])
    act = await start_activator()
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with client.post(act.url + "/echo", data=payload, headers=ROUTE) as resp:
        assert resp.status == 200
        assert await resp.read() == payload
    async with client.ws_connect(act.url + "/ws", headers=ROUTE) as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "hello"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive(timeout=5)).data == b"\x00\x01"


async def test_metrics_per_revision(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    cluster: FakeCluster,
    stack: StartStack,
) -> None:
    s = await stack()
    put_revision(cluster, cc=2)
    set_pods(cluster, [(s, True)])
    act = await start_activator()
    for _ in range(3):
        async with client.get(act.url + "/", headers=ROUTE) as resp:
            assert resp.status == 200
    async with client.get(act.metrics_url + "/metrics") as resp:
        text = await resp.text()
    labels = 'k8s_namespace_name="default",kn_revision_name="hello-00001"'
    count = "http_server_request_duration_seconds_count"
    assert f'{count}{{http_response_status_code="200",{labels}}} 3.0' in text
    assert f"knpy_activator_throttler_capacity{{{labels}}} 2.0" in text
    assert f"knpy_activator_revision_pods{{{labels}}} 1.0" in text
    assert f"kn_revision_request_queued{{{labels}}} 0.0" in text
    assert f"kn_revision_request_concurrency{{{labels}}} 0.0" in text


async def test_request_log_follows_config_observability(
    start_activator: StartActivator,
    client: aiohttp.ClientSession,
    cluster: FakeCluster,
    stack: StartStack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Knative's activator logs each revision request with config-observability's template,
    and follows its changes (cmd/activator/request_log.go)."""
    s = await stack()
    put_revision(cluster, cc=0)
    set_pods(cluster, [(s, True)])
    template = (
        "{{.Request.Method}} {{.Revision.Namespace}}/{{.Revision.Name}} "
        "{{.Revision.Service}} {{.Response.Code}}"
    )
    act = await start_activator()

    async def lines_after(request: str) -> list[str]:
        capsys.readouterr()
        async with client.get(act.url + request, headers=ROUTE) as resp:
            await resp.read()
        await asyncio.sleep(0.05)
        return [line for line in capsys.readouterr().out.splitlines() if line]

    assert await lines_after("/") == []  # no config-observability: off
    cluster.put(
        objects.configmap(
            "config-observability",
            {"logging.enable-request-log": "true", "logging.request-log-template": template},
        )
    )
    await cluster.settle()
    assert await lines_after("/") == ["GET default/hello-00001 hello 200"]
    async with client.get(act.url + "/", headers={"K-Network-Probe": "activator"}) as resp:
        assert resp.status == 200
    assert await lines_after("/nope-404") == ["GET default/hello-00001 hello 404"]
    cluster.put(objects.configmap("config-observability", {"logging.enable-request-log": "false"}))
    await cluster.settle()
    assert await lines_after("/") == []
