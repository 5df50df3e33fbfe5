"""The queue-proxy's request policy as tables, as Knative tests its handler chain with httptest.

The handler runs on the real proxy core, wired to the in-memory network: each case feeds a
request as a client would and asserts what the app received (the rewritten head), what the
client got back (probe answers, the breaker's 503), and the stats. No sockets, no app process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from queueproxy.drain import Drainer
from queueproxy.handler import QueueHandler
from queueproxy.metrics import UserMetrics
from queueproxy.readiness import ReadinessProber
from shared.breaker import Breaker
from shared.proxy.exchange import Exchange
from shared.proxy.memory import MemoryNetwork, MemoryTransport
from shared.proxy.server import ProxyServer
from shared.proxy.upstream import UpstreamPool
from shared.request_stats import RequestStats

CLIENT = ("10.1.0.7", 51000)


class FakeProber(ReadinessProber):
    """The app's readiness as the test sets it (the real prober is tested on its own)."""

    def __init__(self) -> None:
        self.ready = True
        self.calls = 0

    async def probe(self) -> bool:
        self.calls += 1
        return self.ready


@dataclass
class Chain:
    handler: QueueHandler
    server: ProxyServer[int]
    net: MemoryNetwork
    stats: RequestStats
    drainer: Drainer
    prober: FakeProber
    breaker: Breaker[Exchange[int]] | None

    def client(self) -> MemoryTransport:
        return MemoryTransport(self.server(), peer=CLIENT).open()

    async def app(self, index: int = -1) -> MemoryTransport:
        for _ in range(3):
            await asyncio.sleep(0)
        return self.net.opened[index]


def chain(*, concurrency: int = 0, queue_depth: int = 1) -> Chain:
    loop = asyncio.get_running_loop()
    net = MemoryNetwork()
    pool: UpstreamPool[int] = UpstreamPool(loop, "127.0.0.1", 8080, connect=net.connect)
    stats = RequestStats(time.monotonic())
    drainer = Drainer(30.0, 300.0)
    prober = FakeProber()
    breaker: Breaker[Exchange[int]] | None = (
        Breaker(queue_depth, concurrency, concurrency) if concurrency else None
    )
    handler = QueueHandler(
        pool=pool,
        stats=stats,
        drainer=drainer,
        prober=prober,
        metrics=UserMetrics(
            namespace="ns",
            service="s",
            configuration="c",
            revision="r",
            pod="p",
            in_flight=lambda: stats.concurrency,
        ),
        breaker=breaker,
        timeout_s=300.0,
        response_start_timeout_s=10.0,
        idle_timeout_s=60.0,
    )
    server = ProxyServer(handler, initial_tag=0)
    return Chain(handler, server, net, stats, drainer, prober, breaker)


def request(*headers: bytes, path: bytes = b"/") -> bytes:
    return b"GET %b HTTP/1.1\r\n%b\r\n" % (path, b"".join(h + b"\r\n" for h in headers))


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -- probes -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "ready", "draining", "status", "body"),
    [
        pytest.param([b"K-Network-Probe: queue"], True, False, 200, b"queue", id="queue probe"),
        pytest.param([b"K-Network-Probe: queue"], False, False, 503, b"", id="queue, not ready"),
        pytest.param(
            [b"K-Network-Probe: queue"], True, True, 503, b"shutting down\n", id="queue, draining"
        ),
        pytest.param([b"K-Kubelet-Probe: 1"], True, False, 200, b"queue", id="kubelet header"),
        pytest.param([b"User-Agent: kube-probe/1.31"], True, False, 200, b"queue", id="kubelet UA"),
        pytest.param(
            [b"User-Agent: Knative-Activator-Probe"], False, False, 503, b"", id="activator UA"
        ),
        pytest.param(
            [b"User-Agent: Knative-Autoscaling-Probe"], True, False, 200, b"queue", id="autoscaler"
        ),
        pytest.param(
            [b"K-Network-Probe: probe", b"K-Network-Hash: abc"],
            True,
            False,
            200,
            b"",
            id="ingress prober: hash echoed",
        ),
        pytest.param(
            [b"K-Network-Probe: probe"],
            True,
            False,
            400,
            b'a probe request must contain a non-empty "K-Network-Hash" header\n',
            id="ingress prober without a hash",
        ),
        pytest.param(
            [b"K-Network-Probe: probe", b"K-Network-Hash: abc"],
            True,
            True,
            503,
            b"shutting down\n",
            id="ingress prober while draining",
        ),
        pytest.param(
            [b"K-Network-Probe: other"],
            True,
            False,
            400,
            b"unexpected probe header value: other\n",
            id="unknown probe value",
        ),
    ],
)
async def test_probes_are_answered_by_the_queue_proxy(
    headers: list[bytes], ready: bool, draining: bool, status: int, body: bytes
) -> None:
    c = chain()
    c.prober.ready = ready
    if draining:
        c.drainer.start(time.monotonic())
    client = c.client()
    client.feed(request(*headers))
    for _ in range(3):
        await asyncio.sleep(0)
    out = client.take()
    head, _, got = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), out
    assert got == body
    if b"K-Network-Hash: abc" in headers and status == 200:
        assert b"\r\nK-Network-Hash: abc" in head
    # Never the app, never the stats.
    assert c.net.opened == [] and c.stats.report(time.monotonic()).request_count == 0


# -- header rewriting ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "present", "absent"),
    [
        pytest.param(
            [b"Host: a.example", b"Knative-Serving-Revision: r", b"Knative-Serving-Namespace: n"],
            [b"Host: a.example", b"X-Forwarded-For: 10.1.0.7"],
            [b"Knative-Serving"],
            id="routing headers dropped",
        ),
        pytest.param(
            [b"Host: r.ns.svc", b"K-Original-Host: app.example.com"],
            [b"Host: app.example.com"],
            [b"r.ns.svc", b"K-Original-Host"],
            id="Host restored from K-Original-Host",
        ),
        pytest.param(
            [b"X-Forwarded-For: 1.1.1.1", b"X-Forwarded-Proto: https", b"X-Forwarded-Host: a.com"],
            [
                b"X-Forwarded-For: 1.1.1.1, 10.1.0.7",
                b"Forwarded: for=1.1.1.1;host=a.com;proto=https",
                b"X-Forwarded-Proto: https",
            ],
            [],
            id="Forwarded built from X-Forwarded-*",
        ),
        pytest.param(
            [b"X-Forwarded-For: 1.1.1.1", b"Forwarded: for=9.9.9.9"],
            [b"Forwarded: for=9.9.9.9"],
            [b"Forwarded: for=1.1.1.1"],
            id="Forwarded kept when present",
        ),
        pytest.param(
            [b"X-Forwarded-For: 1.1.1.1", b"X-Forwarded-For: 2.2.2.2"],
            [b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.1.0.7"],
            [],
            id="several X-Forwarded-For lines joined",
        ),
        pytest.param(
            [b"Connection: keep-alive, X-Secret", b"X-Secret: s", b"Keep-Alive: 5", b"TE: gzip"],
            [],
            [b"X-Secret", b"Keep-Alive", b"TE:", b"Connection"],
            id="hop-by-hop and Connection-listed headers dropped",
        ),
        pytest.param(
            [b"traceparent: 00-abc-def-01", b"tracestate: k=v", b"User-Agent: curl/8"],
            [b"traceparent: 00-abc-def-01", b"tracestate: k=v", b"User-Agent: curl/8"],
            [],
            id="trace context and other headers passed on",
        ),
        pytest.param(
            [b"K-Proxy-Request: activator"],
            [b"K-Proxy-Request: activator"],
            [],
            id="from activator",
        ),
    ],
)
async def test_the_head_the_app_receives(
    headers: list[bytes], present: list[bytes], absent: list[bytes]
) -> None:
    c = chain()
    client = c.client()
    client.feed(request(*headers, path=b"/p?q=1"))
    app = await c.app()
    head = app.take()
    assert head.startswith(b"GET /p?q=1 HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n")
    for line in present:
        assert b"\r\n" + line + b"\r\n" in head, (line, head)
    for text in absent:
        assert text not in head, (text, head)
    app.feed(OK)
    assert client.take() == OK


@pytest.mark.parametrize(
    ("headers", "proxied"),
    [
        pytest.param([], 0.0, id="direct"),
        pytest.param([b"K-Proxy-Request: activator"], 1.0, id="through the activator"),
    ],
)
async def test_requests_count_in_the_stats_with_their_timeouts(
    headers: list[bytes], proxied: float
) -> None:
    c = chain()
    client = c.client()
    before = time.monotonic()
    client.feed(request(*headers))
    app = await c.app()
    ex = next(iter(c.server.live))
    assert before + 300.0 <= ex.deadline <= time.monotonic() + 300.0
    assert ex.start_deadline - ex.started_at == pytest.approx(10.0)
    assert ex.idle_timeout == 60.0
    app.feed(OK)
    report = c.stats.report(time.monotonic())
    assert report.request_count == 1.0 and report.proxied_request_count == proxied


# -- the breaker --------------------------------------------------------------------------
async def test_breaker_admits_queues_then_rejects() -> None:
    c = chain(concurrency=1, queue_depth=1)
    assert c.breaker is not None
    first, second, third = c.client(), c.client(), c.client()
    first.feed(request(path=b"/1"))
    second.feed(request(path=b"/2"))
    third.feed(request(path=b"/3"))
    app = await c.app()
    assert app.take().startswith(b"GET /1 ")
    # The second waits (a GET read whole: its connection is read on, so that its client's
    # leaving would end it); the third finds every pending slot taken.
    assert second.reading and second.take() == b""
    out = third.take()
    assert out.startswith(b"HTTP/1.1 503 ") and out.endswith(b"pending request queue full\n")
    assert c.breaker.in_flight == 2
    app.feed(OK)  # the first ends: its slot goes to the second, on the same connection
    assert first.take() == OK
    assert second.reading and app.take().startswith(b"GET /2 ")
    app.feed(OK)
    assert second.take() == OK and c.breaker.in_flight == 0 and len(c.net.opened) == 1


async def test_a_queued_request_whose_client_leaves_frees_its_slot() -> None:
    c = chain(concurrency=1, queue_depth=1)
    assert c.breaker is not None
    first, second = c.client(), c.client()
    first.feed(request(path=b"/1"))
    second.feed(request(path=b"/2"))
    app = await c.app()
    assert c.breaker.in_flight == 2
    second.peer_close()
    for _ in range(3):
        await asyncio.sleep(0)
    assert c.breaker.in_flight == 1 and c.breaker.queued == 0
    app.feed(OK)
    assert first.take() == OK and c.breaker.in_flight == 0
    assert repr(c.handler).startswith("<QueueHandler pool=<UpstreamPool 127.0.0.1:8080")
