"""The queue-proxy as a proxy: pass-through, keep-alive, header rewriting, probes, 502s."""

from __future__ import annotations

import aiohttp
import pytest

from .qpharness import (
    KUBELET_PROBE_HEADERS,
    KUBELET_UA_HEADERS,
    StartApp,
    StartQueueProxy,
    StartStack,
    app_stats,
    closed_port,
    kubelet_probe,
    periodic_readiness_probe,
    poll_status,
)

pytestmark = pytest.mark.timeout(30)


async def test_plain_proxy(stack: StartStack, session: aiohttp.ClientSession) -> None:
    s = await stack()
    async with session.get(s.qp.url + "/") as resp:
        body = await resp.text()
        assert resp.status == 200, body
    assert body == "Hello from knpy sample app\nrevision: hello-00001\n"

    async with session.get(s.qp.url + "/status/418") as resp:
        assert resp.status == 418
    async with session.get(s.qp.url + "/status/204") as resp:
        assert resp.status == 204
        assert await resp.read() == b""

    async with session.post(s.qp.url + "/echo", data=b"x" * 1000) as resp:
        assert resp.status == 200
        assert await resp.read() == b"x" * 1000


async def test_keep_alive_reused_both_sides(stack: StartStack) -> None:
    """Sequential requests ride one client connection and one upstream connection."""
    s = await stack()
    created = 0

    async def on_create(*_: object) -> None:
        nonlocal created
        created += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    peers = set()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]
    ) as client:
        for _ in range(10):
            async with client.get(s.qp.url + "/headers") as resp:
                assert resp.status == 200
                assert resp.headers.get("Connection", "").lower() != "close"
                seen = await resp.json()
                peers.add(seen["peer"])
    assert created == 1, f"client side opened {created} connections for 10 sequential requests"
    assert len(peers) == 1, f"queue-proxy used upstream connections {sorted(peers)}"


@pytest.mark.parametrize(
    ("sent", "want_forwarded"),
    [
        pytest.param(
            {
                "X-Forwarded-For": "1.1.1.1, 2.2.2.2",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "a.com",
            },
            "for=1.1.1.1;host=a.com;proto=https, for=2.2.2.2",
            id="xff-two-nodes-proto-host",
        ),
        pytest.param({"X-Forwarded-For": "1.1.1.1"}, "for=1.1.1.1", id="xff-only"),
        pytest.param(
            {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "b.org"},
            "host=b.org;proto=http",
            id="no-xff",
        ),
        pytest.param(
            {"X-Forwarded-For": "2001:db8::1, 3.3.3.3"},
            'for="[2001:db8::1]", for=3.3.3.3',
            id="ipv6-quoted",
        ),
        pytest.param(
            {"Forwarded": "for=9.9.9.9", "X-Forwarded-For": "1.1.1.1"},
            "for=9.9.9.9",
            id="existing-forwarded-kept",
        ),
        pytest.param({}, None, id="nothing-to-shim"),
    ],
)
async def test_forwarded_shim(
    stack: StartStack,
    session: aiohttp.ClientSession,
    sent: dict[str, str],
    want_forwarded: str | None,
) -> None:
    s = await stack()
    async with session.get(s.qp.url + "/headers", headers=sent) as resp:
        assert resp.status == 200
        seen = await resp.json()
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers.get("forwarded") == want_forwarded, seen


async def test_revision_headers_stripped_host_restored(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    s = await stack()
    sent = {
        "Knative-Serving-Revision": "hello-00001",
        "Knative-Serving-Namespace": "default",
        "K-Original-Host": "hello.default.example.com",
        "X-Custom": "kept",
    }
    async with session.get(s.qp.url + "/headers?q=1", headers=sent) as resp:
        assert resp.status == 200
        seen = await resp.json()
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert "knative-serving-revision" not in headers, seen
    assert "knative-serving-namespace" not in headers, seen
    assert headers["host"] == "hello.default.example.com", seen
    assert headers["x-custom"] == "kept"
    assert seen["method"] == "GET"
    assert seen["path"] == "/headers?q=1"
    assert seen["version"] == "1.1"


async def test_host_passed_through_without_original_host(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    s = await stack()
    async with session.get(s.qp.url + "/headers", headers={"Host": "svc.example.com"}) as resp:
        seen = await resp.json()
    assert {k.lower(): v for k, v in seen["headers"].items()}["host"] == "svc.example.com"


async def test_network_probe_answered_by_queue_proxy(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    s = await stack()
    before = await app_stats(session, s.app.url)
    async with session.get(s.qp.url + "/", headers={"K-Network-Probe": "queue"}) as resp:
        body = await resp.text()
        assert resp.status == 200, body
    assert body == "queue"
    after = await app_stats(session, s.app.url)
    assert after["total"] == before["total"], "the network probe reached the app"


async def test_kubelet_probe_follows_app_readiness(
    start_app: StartApp, start_queue_proxy: StartQueueProxy, session: aiohttp.ClientSession
) -> None:
    """A periodic readiness probe: 503 before the app is ready, 200 after, 503 once it fails."""
    app = await start_app(READY_DELAY_MS="2500")
    qp = await start_queue_proxy(
        app.port, SERVING_READINESS_PROBE=periodic_readiness_probe(app.port)
    )

    status = await kubelet_probe(session, qp, timeout_s=5)
    assert status == 503, "kubelet probe passed before the app was ready"
    status = await kubelet_probe(session, qp, KUBELET_UA_HEADERS, timeout_s=5)
    assert status == 503, "kube-probe user agent passed before the app was ready"

    async def app_healthz() -> int:
        async with session.get(app.url + "/healthz") as resp:
            return resp.status

    assert (await poll_status(app_healthz, 200, within_s=5))[-1] == 200

    seen = await poll_status(lambda: kubelet_probe(session, qp, timeout_s=5), 200, 3)
    assert seen[-1] == 200, f"kubelet probe never passed once the app was ready: {seen}"
    assert await kubelet_probe(session, qp, KUBELET_UA_HEADERS) == 200

    async with session.post(app.url + "/healthz/fail") as resp:
        assert resp.status == 200
    seen = await poll_status(lambda: kubelet_probe(session, qp, timeout_s=5), 503, 3)
    assert seen[-1] == 503, f"kubelet probe kept passing after the app failed: {seen}"
    # Ordinary traffic still flows: readiness is for the kubelet, not a gate on requests.
    async with session.get(qp.url + "/") as resp:
        assert resp.status == 200


async def test_kubelet_probe_aggressive_waits_for_readiness(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    """periodSeconds 0: like Knative, one kubelet probe retries the app until it is ready."""
    s = await stack(app_env={"READY_DELAY_MS": "1500"})
    status = await kubelet_probe(session, s.qp, KUBELET_PROBE_HEADERS, timeout_s=12)
    assert status == 200, "aggressive probe gave up before the app became ready (~1.5 s)"


async def test_502_when_app_drops_connection(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    s = await stack()
    async with session.get(s.qp.url + "/drop") as resp:
        body = await resp.text()
        assert resp.status == 502, body
    async with session.get(s.qp.url + "/") as resp:
        assert resp.status == 200
    assert s.qp.child.alive()


async def test_502_when_app_down(
    start_queue_proxy: StartQueueProxy, session: aiohttp.ClientSession
) -> None:
    qp = await start_queue_proxy(closed_port())
    for _ in range(3):
        async with session.get(qp.url + "/") as resp:
            body = await resp.text()
            assert resp.status == 502, body
    assert qp.child.alive()
