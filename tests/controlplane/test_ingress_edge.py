"""The ingress as the door from outside (issue 10, "The edge"), on loopback with real sockets.

What the hops behind it trust must not come from a client: Knative's internal headers, a probe's
user agent, the forwarding headers (``trusted-hops-count`` in ``config-kourier`` says whose to
keep), ``Connection`` naming Host or the body's length, two Host headers, a malformed chunk; and
the listener's limits follow ``config-kourier``. Cold starts count only requests that waited at
zero pods for one to answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from controlplane.ingress import (
    EDGE_CONFIGMAP,
    HEADER_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    EdgeConfig,
    Ingress,
    RoutingTable,
)
from shared.kube.fake import FakeCluster
from shared.kube.resources import Obj
from shared.proxy.server import ProxyServer

from .test_ingress import HELLO, R1, Upstream, endpoints, hello_route


@asynccontextmanager
async def edge(
    cluster: FakeCluster, *, pods_ready: bool = True
) -> AsyncIterator[tuple[int, Ingress, Upstream]]:
    """The ingress served as ``knpy serve`` serves it (limits, ticking sweep), in front of one
    pod (public Endpoints in Serve mode) that records the heads it gets."""
    loop = asyncio.get_running_loop()
    pod = Upstream("pod")
    await pod.start()
    table = RoutingTable()
    table.follow(cluster)
    await cluster.start()
    hello_route(cluster)
    if pods_ready:
        cluster.put(endpoints("hello-00001", "Private", [pod.port]))
        cluster.put(endpoints("hello-00001", "Public", [pod.port]))
    cluster.flush()
    ingress = Ingress(loop=loop, table=table, rng=random.Random(1))
    proxy = ProxyServer(ingress, initial_tag=None, limits=ingress.limits)
    proxy.start(loop)
    server = await loop.create_server(proxy, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], ingress, pod
    finally:
        proxy.stop()
        proxy.abort_all()
        server.close()
        ingress.close()
        pod.close()
        await asyncio.sleep(0.01)


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the ingress answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()


def request(*headers: bytes, host: bytes = HELLO.encode()) -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return b"GET /x HTTP/1.1\r\nHost: %b\r\n%bConnection: close\r\n\r\n" % (host, lines)


def kourier(data: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": EDGE_CONFIGMAP, "namespace": "knative-serving"},
            "data": data}  # fmt: skip


def header_lines(head: bytes) -> list[bytes]:
    return head.split(b"\r\n")[1:-2]


_INTERNAL = (
    b"K-Proxy-Request: activator",
    b"K-Network-Probe: queue",
    b"K-Network-Hash: 0123",
    b"K-Network-Other: 1",
    b"K-Kubelet-Probe: yes",
    b"K-Original-Host: admin.internal",
    b"Knative-Serving-Revision: other-00009",
    b"Knative-Serving-Namespace: kube-system",
    b"knative-serving-tag: canary",
)


async def test_internal_headers_from_outside_never_reach_the_next_hop() -> None:
    async with edge(FakeCluster()) as (port, _, pod):
        answer = await exchange(port, request(*_INTERNAL))
    assert answer.endswith(b"pod"), answer
    names = {line.split(b":")[0].lower() for line in header_lines(pod.heads[-1])}
    assert not {n for n in names if n.startswith((b"k-", b"knative-serving-"))} - {
        b"knative-serving-revision",
        b"knative-serving-namespace",
    }
    head = pod.heads[-1]
    # The ingress names the revision itself, once.
    assert head.count(b"Knative-Serving-Revision: ") == 1
    assert b"Knative-Serving-Revision: hello-00001\r\n" in head
    assert b"Knative-Serving-Namespace: default\r\n" in head


@pytest.mark.parametrize(
    ("agent", "forwarded"),
    [
        pytest.param(b"kube-probe/1.30", b"external (kube-probe/1.30)", id="kubelet"),
        pytest.param(
            b"Knative-Activator-Probe", b"external (Knative-Activator-Probe)", id="activator"
        ),
        pytest.param(
            b"Knative-Autoscaling-Probe/x", b"external (Knative-Autoscaling-Probe/x)", id="kpa"
        ),
        pytest.param(b"curl/8.5.0", b"curl/8.5.0", id="anyone else: untouched"),
        pytest.param(b"my kube-probe/1", b"my kube-probe/1", id="not a prefix: untouched"),
    ],
)
async def test_a_probe_user_agent_from_outside_is_demoted(agent: bytes, forwarded: bytes) -> None:
    async with edge(FakeCluster()) as (port, _, pod):
        await exchange(port, request(b"User-Agent: " + agent))
    assert b"\r\nUser-Agent: " + forwarded + b"\r\n" in pod.heads[-1]


_SPOOFED_FORWARDING = (
    b"Forwarded: for=10.9.9.9;proto=https;host=bank.example",
    b"X-Forwarded-For: 10.9.9.9",
    b"X-Forwarded-Proto: https",
    b"X-Forwarded-Host: bank.example",
    b"X-Forwarded-Port: 443",
    b"X-Real-IP: 10.9.9.9",
)


async def test_forwarding_headers_from_outside_are_replaced_by_the_ingress_own() -> None:
    async with edge(FakeCluster()) as (port, _, pod):
        await exchange(port, request(*_SPOOFED_FORWARDING))
    lines = header_lines(pod.heads[-1])
    assert not [line for line in lines if b"10.9.9.9" in line or b"bank.example" in line]
    assert not [line for line in lines if line.lower().startswith((b"forwarded", b"x-real-ip"))]
    assert b"X-Forwarded-For: 127.0.0.1" in lines
    assert b"X-Forwarded-Proto: http" in lines
    assert b"X-Forwarded-Host: " + HELLO.encode() in lines
    assert sum(line.lower().startswith(b"x-forwarded-") for line in lines) == 3


async def test_trusted_hops_keep_the_proxy_in_front_headers_and_extend_its_chain() -> None:
    cluster = FakeCluster()
    async with edge(cluster) as (port, ingress, pod):
        cluster.put(kourier({"trusted-hops-count": "1"}))
        cluster.flush()
        assert ingress.table.edge.trusted_hops == 1
        await exchange(port, request(*_SPOOFED_FORWARDING))
        trusted = header_lines(pod.heads[-1])
        await exchange(port, request())  # a trusted proxy that set none: the ingress sets them
        bare = header_lines(pod.heads[-1])
    for line in _SPOOFED_FORWARDING[2:]:
        assert line in trusted, line
    assert _SPOOFED_FORWARDING[0] in trusted
    assert b"X-Forwarded-For: 10.9.9.9, 127.0.0.1" in trusted
    assert b"X-Forwarded-For: 127.0.0.1" in bare and b"X-Forwarded-Proto: http" in bare
    assert b"X-Forwarded-Host: " + HELLO.encode() in bare


async def test_edge_config_follows_config_kourier_and_keeps_the_last_good_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster()
    async with edge(cluster) as (_, ingress, _):
        limits = ingress.limits
        assert (limits.header_timeout_s, limits.idle_timeout_s) == (
            HEADER_TIMEOUT_S,
            IDLE_TIMEOUT_S,
        )
        cluster.put(kourier({"trusted-hops-count": "2", "request-headers-timeout": "1500ms",
                             "idle-timeout": "0s", "max-connections": "50"}))  # fmt: skip
        cluster.flush()
        assert ingress.table.edge == EdgeConfig(2, 1.5, 0.0, 50)
        assert ingress.limits is limits and limits.max_connections == 50
        with caplog.at_level(logging.ERROR, logger="knpy.ingress"):
            cluster.put(kourier({"trusted-hops-count": "-1", "idle-timeout": "soon"}))
            cluster.flush()
        assert "trusted-hops-count" in caplog.text
        assert ingress.table.edge == EdgeConfig(2, 1.5, 0.0, 50)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({"trusted-hops-count": "one"}, "trusted-hops-count", id="hops not a number"),
        pytest.param({"request-headers-timeout": "10"}, "request-headers-timeout", id="no unit"),
        pytest.param({"idle-timeout": "-1s"}, "idle-timeout", id="negative"),
        pytest.param({"max-connections": "1e3"}, "max-connections", id="cap not whole"),
    ],
)
def test_edge_config_names_the_bad_key(data: dict[str, str], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        EdgeConfig.from_data(data)


async def test_connection_cannot_remove_host_or_the_body_length() -> None:
    """``Connection: Host`` used to delete the Host line (the app saw none), and
    ``Connection: Content-Length`` sent the body with no length: the next hop read the body as
    a request of its own (smuggling)."""
    async with edge(FakeCluster()) as (port, _, pod):
        answer = await exchange(
            port,
            b"POST /x HTTP/1.1\r\nHost: hello.default.localhost\r\nContent-Length: 34\r\n"
            b"Connection: close, Host, Content-Length\r\n\r\n"
            b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        await asyncio.sleep(0.05)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"pod"), answer
    assert len(pod.heads) == 1, pod.heads
    assert b"\r\nHost: hello.default.localhost\r\n" in pod.heads[0]
    assert b"\r\nContent-Length: 34\r\n" in pod.heads[0]


async def test_two_host_headers_are_400_and_go_nowhere() -> None:
    async with edge(FakeCluster()) as (port, _, pod):
        answer = await exchange(
            port, request(host=b"hello.default.localhost\r\nHost: admin.default.localhost")
        )
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert not pod.heads


async def test_a_malformed_chunk_size_is_400() -> None:
    async with edge(FakeCluster()) as (port, _, _):
        answer = await exchange(
            port,
            b"POST /x HTTP/1.1\r\nHost: hello.default.localhost\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZZ\r\n",
        )
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert b"chunk size" in answer


async def test_header_timeout_from_config_kourier_closes_a_slow_client() -> None:
    cluster = FakeCluster()
    async with edge(cluster) as (port, _, _):
        cluster.put(kourier({"request-headers-timeout": "300ms"}))
        cluster.flush()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: hello")
        answer = await asyncio.wait_for(reader.read(-1), 2)  # 0.3 s + a sweep (0.5 s)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        # A client that sends its head at once is served as before.
        assert (await exchange(port, request())).endswith(b"pod")


class _Refuses:
    """The activator when no pod came (or the pod crashed): 503 for every request."""

    def __init__(self) -> None:
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_a_request_at_zero_pods_that_no_pod_answered_is_no_cold_start() -> None:
    cluster = FakeCluster()
    activator = _Refuses()
    await activator.start()
    try:
        async with edge(cluster, pods_ready=False) as (port, ingress, _):
            cluster.put(endpoints("hello-00001", "Private", []))
            cluster.put(endpoints("hello-00001", "Public", [activator.port]))
            cluster.flush()
            answer = await exchange(port, request())
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert ingress.cold_starts.summary(R1) is None
    finally:
        assert activator.server is not None
        activator.server.close()


async def test_a_pod_that_crashed_is_no_cold_start() -> None:
    """A crashed pod is still the revision's (not ready, in notReadyAddresses) while its
    container restarts: requests meanwhile wait on it, not on a cold start."""
    cluster = FakeCluster()
    async with edge(cluster) as (port, ingress, pod):
        cluster.put(endpoints("hello-00001", "Private", [], (pod.port,)))
        cluster.flush()
        assert (await exchange(port, request())).endswith(b"pod")
        assert ingress.cold_starts.summary(R1) is None
