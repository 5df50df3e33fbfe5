"""The ingress: weighted picks, host names, and routing by mode on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from controlplane.ingress import ColdStarts, Ingress, Route, Target
from shared.proxy.server import ProxyServer
from shared.seams import Endpoint, InMemoryCluster, Mode, RevisionKey

R1 = RevisionKey("default", "hello-00001")
R2 = RevisionKey("default", "hello-00002")


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
    cluster: InMemoryCluster, modes: dict[RevisionKey, Mode]
) -> AsyncIterator[tuple[int, Ingress, Upstream, list[Upstream]]]:
    loop = asyncio.get_running_loop()
    activator = Upstream("activator")
    pods = [Upstream("pod-a"), Upstream("pod-b")]
    for up in (activator, *pods):
        await up.start()
    ingress = Ingress(
        loop=loop,
        endpoints=cluster,
        mode_of=lambda key: modes.get(key, Mode.PROXY),
        activator=("127.0.0.1", activator.port),
        rng=random.Random(1),
    )
    proxy = ProxyServer(ingress)
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


async def _get(port: int, host: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: %b\r\nConnection: close\r\n\r\n" % host.encode())
    data = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


async def test_unknown_host_is_404_naming_it() -> None:
    async with ingress_with(InMemoryCluster(), {}) as (port, _, _, _):
        status, body = await _get(port, "nope.default.localhost")
    assert status == 404
    assert b"nope.default.localhost" in body


async def test_serve_mode_round_robins_ready_pods_and_proxy_mode_uses_activator() -> None:
    cluster = InMemoryCluster()
    modes = {R1: Mode.SERVE}
    async with ingress_with(cluster, modes) as (port, ingress, activator, pods):
        ready = [Endpoint(f"p{i}", "127.0.0.1", up.port) for i, up in enumerate(pods)]
        cluster.set_endpoints(R1, (*ready, Endpoint("unready", "127.0.0.1", 1, ready=False)))
        ingress.set_routes({"hello.default.localhost": (Target(R1, 100),)})
        bodies = [(await _get(port, "hello.default.localhost:8080"))[1] for _ in range(4)]
        assert sorted(bodies) == [b"pod-a", b"pod-a", b"pod-b", b"pod-b"]
        assert all(b"Knative-Serving-Revision" not in h for p in pods for h in p.heads)
        assert all(b"X-Forwarded-For: 127.0.0.1" in h for p in pods for h in p.heads)

        modes[R1] = Mode.PROXY
        status, body = await _get(port, "HELLO.default.localhost")
        assert (status, body) == (200, b"activator")
        head = activator.heads[-1]
        assert b"Knative-Serving-Revision: hello-00001" in head
        assert b"Knative-Serving-Namespace: default" in head
        assert b"Host: HELLO.default.localhost" in head


async def test_request_at_zero_goes_to_activator_and_is_a_cold_start() -> None:
    cluster = InMemoryCluster()
    async with ingress_with(cluster, {R1: Mode.SERVE}) as (port, ingress, _, _):
        ingress.set_routes({"hello.default.localhost": (Target(R1, 100),)})
        status, body = await _get(port, "hello.default.localhost")
        assert (status, body) == (200, b"activator")
        summary = ingress.cold_starts.summary(R1)
        assert summary is not None and summary["count"] == 1.0
        assert 0 < summary["last_s"] < 1


async def test_a_burst_at_zero_is_one_cold_start() -> None:
    """The requests that arrive while the first waits share its cold start: one is counted."""
    cluster = InMemoryCluster()
    async with ingress_with(cluster, {R1: Mode.SERVE}) as (port, ingress, activator, _):
        activator.delay_s = 0.2
        ingress.set_routes({"hello.default.localhost": (Target(R1, 100),)})
        answers = await asyncio.gather(*(_get(port, "hello.default.localhost") for _ in range(5)))
        assert [status for status, _ in answers] == [200] * 5
        summary = ingress.cold_starts.summary(R1)
        assert summary is not None and summary["count"] == 1.0
        # Once it finished, the next request at zero is the next cold start.
        await _get(port, "hello.default.localhost")
        summary = ingress.cold_starts.summary(R1)
        assert summary is not None and summary["count"] == 2.0


async def test_activator_not_listening_yet_is_retried() -> None:
    """A request that found no activator waits for it (a restart) instead of a 502."""
    loop = asyncio.get_running_loop()
    late = Upstream("activator")
    with socket.socket() as s:  # a free port, listened on only later
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = InMemoryCluster()
    ingress = Ingress(
        loop=loop, endpoints=cluster, mode_of=lambda key: Mode.PROXY, activator=("127.0.0.1", port)
    )
    ingress.set_routes({"hello.default.localhost": (Target(R1, 100),)})
    proxy = ProxyServer(ingress)
    server = await loop.create_server(proxy, "127.0.0.1", 0)

    async def start_late() -> None:
        await asyncio.sleep(0.35)
        late.server = await asyncio.start_server(late._serve, "127.0.0.1", port)

    try:
        starter = asyncio.create_task(start_late())
        status, body = await _get(server.sockets[0].getsockname()[1], "hello.default.localhost")
        await starter
        assert (status, body) == (200, b"activator")
    finally:
        proxy.abort_all()
        server.close()
        ingress.close()
        late.close()
        await asyncio.sleep(0.01)


async def test_pod_refusing_hands_over_to_the_activator() -> None:
    cluster = InMemoryCluster()
    async with ingress_with(cluster, {R1: Mode.SERVE}) as (port, ingress, activator, _):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            gone = s.getsockname()[1]
        cluster.set_endpoints(R1, (Endpoint("gone", "127.0.0.1", gone),))
        ingress.set_routes({"hello.default.localhost": (Target(R1, 100),)})
        status, body = await _get(port, "hello.default.localhost")
        assert (status, body) == (200, b"activator")
        assert b"Knative-Serving-Revision: hello-00001" in activator.heads[-1]


async def test_client_cannot_name_the_revision_and_hop_by_hop_is_dropped() -> None:
    cluster = InMemoryCluster()
    async with ingress_with(cluster, {R1: Mode.PROXY}) as (port, ingress, activator, _):
        ingress.set_routes({"hello.default.localhost": (Target(R1, 100),)})
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
