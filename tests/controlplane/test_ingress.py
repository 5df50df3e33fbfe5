"""The ingress: weighted picks, hosts from Routes, backends from public Endpoints, on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from controlplane.ingress import (
    COLD_STARTS_CONFIGMAP,
    ColdStarts,
    ColdStartWriter,
    Ingress,
    RevisionKey,
    Route,
    RoutingTable,
    Target,
    ready_addresses,
    route_hosts,
)
from shared.kube.fake import FakeCluster
from shared.kube.resources import CONFIGMAPS, ROUTES, Obj
from shared.proxy.server import ProxyServer

R1 = RevisionKey("default", "hello-00001")
R2 = RevisionKey("default", "hello-00002")
HELLO = "hello.default.localhost"


@pytest.mark.parametrize(
    ("draw", "want"),
    [
        pytest.param(0.0, R1, id="low end"),
        pytest.param(0.7999, R1, id="just under 80 %"),
        pytest.param(0.8, R2, id="80 % boundary"),
        pytest.param(0.9999, R2, id="high end"),
    ],
)
def test_route_pick(draw: float, want: RevisionKey) -> None:
    assert Route((Target(R1, 80), Target(R2, 20))).pick(draw) == want


def test_route_split_holds_over_many_draws() -> None:
    route = Route((Target(R1, 80), Target(R2, 20), Target(RevisionKey("default", "x"), 0)))
    rng = random.Random(7)
    counts = Counter(route.pick(rng.random()) for _ in range(10_000))
    assert abs(counts[R1] / 10_000 - 0.8) < 0.02
    assert set(counts) == {R1, R2}


def test_route_needs_a_live_target() -> None:
    with pytest.raises(ValueError):
        Route((Target(R1, 0),))


def test_cold_start_summary() -> None:
    cs = ColdStarts()
    assert cs.summary(R1) is None
    for s in (1.0, 3.0, 2.0):
        cs.observe(R1, s)
    assert cs.summary(R1) == {"count": 3.0, "last_s": 2.0, "p50_s": 2.0, "p99_s": 3.0}


def route(name: str, traffic: list[Obj], url: str = "") -> Obj:
    status: Obj = {"traffic": traffic}
    if url:
        status["url"] = url
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Route",
            "metadata": {"name": name, "namespace": "default"}, "status": status}  # fmt: skip


@pytest.mark.parametrize(
    ("routes", "hosts"),
    [
        pytest.param(
            [route("hello", [{"revisionName": "hello-00001", "percent": 80},
                             {"revisionName": "hello-00002", "percent": 20}],
                   "http://hello.default.localhost")],
            {HELLO: (Target(R1, 80), Target(R2, 20))}, id="split",
        ),
        pytest.param(
            [route("hello", [{"revisionName": "hello-00001", "percent": 100, "tag": "a",
                              "url": "http://a-hello.default.localhost"},
                             {"revisionName": "hello-00002", "percent": 0, "tag": "b"}])],
            {HELLO: (Target(R1, 100),), "a-hello.default.localhost": (Target(R1, 100),),
             "b-hello.default.localhost": (Target(R2, 100),)},
            id="tags-and-computed-hosts",
        ),
        pytest.param([route("hello", [])], {}, id="no-traffic-yet"),
    ],
)  # fmt: skip
def test_route_hosts(routes: list[Obj], hosts: dict[str, tuple[Target, ...]]) -> None:
    assert route_hosts(routes) == hosts


def endpoints(name: str, kind: str, ready: list[int], not_ready: tuple[int, ...] = ()) -> Obj:
    """A revision's public or private Endpoints with pods (or activators) at these ports."""
    subsets = [
        {"addresses": [{"ip": "127.0.0.1"}] if ready else [],
         "notReadyAddresses": [{"ip": "127.0.0.1"}] if not_ready else [],
         "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
        for port in [*ready, *not_ready]
    ]  # fmt: skip
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name if kind == "Public" else f"{name}-private",
                     "namespace": "default",
                     "labels": {"networking.internal.knative.dev/serviceType": kind,
                                "serving.knative.dev/revision": name}},
        "subsets": subsets,
    }  # fmt: skip


def test_ready_addresses_take_the_http_port_only() -> None:
    ep = endpoints("hello-00001", "Public", [4001, 4002])
    ep["subsets"][0]["ports"].append({"name": "https", "port": 443})
    assert ready_addresses(ep) == (("127.0.0.1", 4001), ("127.0.0.1", 4002))


@dataclass
class Upstream:
    """A raw HTTP server that answers with its name and records the heads it saw."""

    name: str
    heads: list[bytes] = field(default_factory=list)
    delay_s: float = 0.0  # before each answer: a cold start's wait, seen from the ingress
    port: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            self.heads.append(head)
            await asyncio.sleep(self.delay_s)
            body = self.name.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()
        writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()


@asynccontextmanager
async def ingress_with(
    cluster: FakeCluster,
) -> AsyncIterator[tuple[int, Ingress, Upstream, list[Upstream]]]:
    loop = asyncio.get_running_loop()
    activator = Upstream("activator")
    pods = [Upstream("pod-a"), Upstream("pod-b")]
    for up in (activator, *pods):
        await up.start()
    table = RoutingTable()
    table.follow(cluster)
    await cluster.start()
    ingress = Ingress(loop=loop, table=table, rng=random.Random(1))
    proxy = ProxyServer(ingress, initial_tag=None)
    server = await loop.create_server(proxy, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], ingress, activator, pods
    finally:
        proxy.abort_all()
        server.close()
        ingress.close()
        for up in (activator, *pods):
            up.close()
        await asyncio.sleep(0.01)


def hello_route(cluster: FakeCluster) -> None:
    cluster.put(route("hello", [{"revisionName": "hello-00001", "percent": 100}]), ROUTES)


async def _get(port: int, host: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: %b\r\nConnection: close\r\n\r\n" % host.encode())
    data = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


async def test_unknown_host_is_404_naming_it() -> None:
    async with ingress_with(FakeCluster()) as (port, _, _, _):
        status, body = await _get(port, "nope.default.localhost")
    assert status == 404
    assert b"nope.default.localhost" in body


async def test_public_endpoints_decide_pods_or_activator() -> None:
    """Serve mode: the public Endpoints list the pods; Proxy mode: the activator."""
    cluster = FakeCluster()
    async with ingress_with(cluster) as (port, _, activator, pods):
        hello_route(cluster)
        cluster.put(endpoints("hello-00001", "Private", [p.port for p in pods], [1]))
        cluster.put(endpoints("hello-00001", "Public", [p.port for p in pods]))
        cluster.flush()
        bodies = [(await _get(port, "hello.default.localhost:8080"))[1] for _ in range(4)]
        assert sorted(bodies) == [b"pod-a", b"pod-a", b"pod-b", b"pod-b"]
        for h in (h for p in pods for h in p.heads):
            assert b"Knative-Serving-Revision: hello-00001" in h
            assert b"X-Forwarded-For: 127.0.0.1" in h

        cluster.put(endpoints("hello-00001", "Public", [activator.port]))
        cluster.flush()
        status, body = await _get(port, "HELLO.default.localhost")
        assert (status, body) == (200, b"activator")
        head = activator.heads[-1]
        assert b"Knative-Serving-Revision: hello-00001" in head
        assert b"Knative-Serving-Namespace: default" in head
        assert b"Host: HELLO.default.localhost" in head


async def test_request_at_zero_is_one_cold_start_per_burst() -> None:
    """The requests that arrive while the first waits share its cold start: one is counted."""
    cluster = FakeCluster()
    async with ingress_with(cluster) as (port, ingress, activator, _):
        activator.delay_s = 0.2
        hello_route(cluster)
        cluster.put(endpoints("hello-00001", "Private", []))
        cluster.put(endpoints("hello-00001", "Public", [activator.port]))
        cluster.flush()
        answers = await asyncio.gather(*(_get(port, HELLO) for _ in range(5)))
        assert [status for status, _ in answers] == [200] * 5
        summary = ingress.cold_starts.summary(R1)
        assert summary is not None and summary["count"] == 1.0
        assert 0.2 <= summary["last_s"] < 1
        # Once it finished, the next request at zero is the next cold start.
        await _get(port, HELLO)
        summary = ingress.cold_starts.summary(R1)
        assert summary is not None and summary["count"] == 2.0
        # The figures land in knpy's ConfigMap for knpy get (not on the Revision: its
        # annotations go into the pods' template).
        writer = ColdStartWriter(cluster, ingress.cold_starts)
        writer.start()
        try:
            for _ in range(40):
                await asyncio.sleep(0.05)
                cm = cluster.peek(CONFIGMAPS, "knative-serving", COLD_STARTS_CONFIGMAP) or {}
                if "default.hello-00001" in cm.get("data", {}):
                    break
        finally:
            await writer.stop()
        assert '"count": 2' in cm["data"]["default.hello-00001"]


async def test_no_endpoints_yet_and_refusing_backend_are_retried() -> None:
    """A revision without endpoints yet, then one whose backend is not listening yet: the
    request waits and is sent once an address answers, instead of a 502."""
    cluster = FakeCluster()
    late = Upstream("late")
    with socket.socket() as s:  # a free port, listened on only later
        s.bind(("127.0.0.1", 0))
        late_port = s.getsockname()[1]
    async with ingress_with(cluster) as (port, _, _, _):
        hello_route(cluster)
        cluster.flush()

        async def publish_then_listen() -> None:
            await asyncio.sleep(0.25)
            cluster.put(endpoints("hello-00001", "Public", [late_port]))
            cluster.flush()
            await asyncio.sleep(0.25)
            late.server = await asyncio.start_server(late._serve, "127.0.0.1", late_port)

        starter = asyncio.create_task(publish_then_listen())
        try:
            status, body = await _get(port, HELLO)
            await starter
            assert (status, body) == (200, b"late")
        finally:
            late.close()


async def test_client_cannot_name_the_revision_and_hop_by_hop_is_dropped() -> None:
    cluster = FakeCluster()
    async with ingress_with(cluster) as (port, _, activator, _):
        hello_route(cluster)
        cluster.put(endpoints("hello-00001", "Public", [activator.port]))
        cluster.flush()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: hello.default.localhost\r\n"
            b"Knative-Serving-Revision: other-00009\r\nKNATIVE-SERVING-DEFAULT-ROUTE: x\r\n"
            b"Proxy-Authorization: secret\r\nX-Keep: yes\r\nConnection: close, X-Keep\r\n\r\n"
        )
        assert (await asyncio.wait_for(reader.read(-1), 5)).endswith(b"activator")
        writer.close()
    head = activator.heads[-1]
    assert head.count(b"Knative-Serving-Revision") == 1
    assert b"Knative-Serving-Revision: hello-00001" in head
    for gone in (b"KNATIVE-SERVING-DEFAULT-ROUTE", b"Proxy-Authorization", b"X-Keep"):
        assert gone not in head, gone
    assert b"X-Forwarded-Proto: http" in head
