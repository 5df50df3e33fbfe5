"""The activator's request policy as tables, as Knative tests its handler chain with httptest.

The handler runs on the real proxy core over the in-memory network, with the revision table
following an in-memory cluster: each case feeds a request as a client would and asserts what
the pod received (the rewritten head), what the client got back (probe answers, 404, the
throttler's 503, a timeout's 504) and the demand stats. Pods turn healthy through
``ActiveRevision.update_pods``, the call the probing backends make; no sockets, no processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from activator.cluster import RevisionSpec
from activator.handler import MAX_CONNECT_RETRIES, ActivatorHandler
from activator.reporter import ConcurrencyReporter
from activator.revisions import ActivatorRequest, ActiveRevision, RevisionTable
from shared.kube.fake import FakeCluster
from shared.kube.resources import REVISIONS
from shared.proxy.memory import MemoryNetwork, MemoryTransport
from shared.proxy.server import ProxyServer
from shared.stat_proto import decode_wire_stats
from tests.activator.objects import revision

pytestmark = pytest.mark.timeout(20)

NS, REV = "default", "hello-00001"
ROUTE = (b"Knative-Serving-Namespace: default", b"Knative-Serving-Revision: hello-00001")
CLIENT = ("10.1.0.7", 51000)
POD_A, POD_B = "10.0.0.1:8012", "10.0.0.2:8012"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class MemorySink:
    """The stat link to the autoscaler: what was sent, and its state as the test sets it."""

    payloads: list[bytes] = field(default_factory=list)
    problem: str | None = None

    def send(self, payload: bytes) -> None:
        self.payloads.append(payload)

    def status(self) -> str | None:
        return self.problem

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass
class Chain:
    handler: ActivatorHandler
    server: ProxyServer[ActivatorRequest | None]
    net: MemoryNetwork
    table: RevisionTable
    sink: MemorySink
    draining: bool = False

    def client(self) -> MemoryTransport:
        return MemoryTransport(self.server(), peer=CLIENT).open()

    def revision(self) -> ActiveRevision:
        rev = self.table.lookup(NS.encode(), REV.encode())
        assert rev is not None
        return rev

    async def pod(self, index: int = -1) -> MemoryTransport:
        await settle()
        return self.net.opened[index]


async def settle(turns: int = 3) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def make_chain(*, cc: int = 0, queue_depth: int = 100, timeout_s: int = 300) -> Chain:
    cluster = FakeCluster()
    cluster.put(revision(NS, REV, cc=cc, timeout_s=timeout_s), REVISIONS)
    net = MemoryNetwork()
    sink = MemorySink()
    handlers: list[ActivatorHandler] = []

    def new_revision(spec: RevisionSpec) -> ActiveRevision:
        return ActiveRevision(
            spec,
            metrics=None,
            queue_depth=queue_depth,
            probe_timeout_s=0.05,
            probe_frequency_s=10.0,
            max_idle_conns=10,
            on_connect_error=handlers[0].connect_failed,
            connect=net.connect,
        )

    table = RevisionTable(cluster, new_revision, own_address="10.0.9.9:8012")
    table.start()
    await cluster.settle()
    chain: Chain | None = None

    def health() -> str | None:
        assert chain is not None
        return "received SIGTERM from kubelet" if chain.draining else sink.status()

    handler = ActivatorHandler(table, ConcurrencyReporter("activator-0", sink), health=health)
    handlers.append(handler)
    chain = Chain(handler, ProxyServer(handler, initial_tag=None), net, table, sink)
    return chain


MakeChain = Callable[..., Awaitable[Chain]]


@pytest.fixture
async def chain() -> AsyncIterator[MakeChain]:
    """``await chain(cc=..., queue_depth=..., timeout_s=...)``; stopped after the test."""
    made: list[Chain] = []

    async def make(**kwargs: int) -> Chain:
        made.append(await make_chain(**kwargs))
        return made[-1]

    yield make
    for c in made:
        await c.table.stop()


async def queued_request(c: Chain) -> MemoryTransport:
    """A client whose request waits in the throttler (the revision has no pod yet)."""
    client = c.client()
    client.feed(request(*ROUTE))
    await settle()
    assert c.revision().throttler.queued == 1
    return client


def request(*headers: bytes, path: bytes = b"/") -> bytes:
    return b"GET %b HTTP/1.1\r\n%b\r\n" % (path, b"".join(h + b"\r\n" for h in headers))


def status_and_body(out: bytes) -> tuple[int, bytes]:
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# -- probes -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "unhealthy", "status", "body"),
    [
        pytest.param([b"K-Kubelet-Probe: queue"], None, 200, b"", id="kubelet header, healthy"),
        pytest.param([b"User-Agent: kube-probe/1.31"], None, 200, b"", id="kubelet user agent"),
        pytest.param(
            [b"K-Kubelet-Probe: queue"],
            "sink",
            500,
            b"not connected to the autoscaler\n",
            id="kubelet, autoscaler link down",
        ),
        pytest.param(
            [b"K-Kubelet-Probe: queue"],
            "drain",
            500,
            b"received SIGTERM from kubelet\n",
            id="kubelet, draining",
        ),
        pytest.param([b"K-Network-Probe: activator"], None, 200, b"activator", id="network probe"),
        pytest.param(
            [b"K-Network-Probe: probe", b"K-Network-Hash: abc"],
            None,
            200,
            b"",
            id="ingress prober: hash echoed",
        ),
        pytest.param(
            [b"K-Network-Probe: probe"],
            None,
            400,
            b'a probe request must contain a non-empty "K-Network-Hash" header\n',
            id="ingress prober without a hash",
        ),
        pytest.param(
            [b"K-Network-Probe: queue"],
            None,
            400,
            b"unexpected probe header value: queue\n",
            id="another component's probe",
        ),
    ],
)
async def test_probes_are_answered_by_the_activator(
    chain: MakeChain, headers: list[bytes], unhealthy: str | None, status: int, body: bytes
) -> None:
    c = await chain()
    if unhealthy == "sink":
        c.sink.problem = "not connected to the autoscaler"
    c.draining = unhealthy == "drain"
    client = c.client()
    client.feed(request(*headers, *ROUTE))  # routed or not, a probe is the activator's
    await settle()
    out = client.take()
    assert status_and_body(out) == (status, body), out
    if b"K-Network-Hash: abc" in headers:
        assert b"\r\nK-Network-Hash: abc\r\n" in out
    # Never a pod, never the demand stats.
    assert c.net.attempts == 0 and c.sink.payloads == []


# -- routing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        pytest.param(list(ROUTE), 200, b"ok", id="routing headers"),
        pytest.param(
            [b"Host: hello-00001.default.svc.cluster.local"], 200, b"ok", id="revision host"
        ),
        pytest.param(
            [b"Host: hello-00001.default.svc.cluster.local:80"], 200, b"ok", id="with a port"
        ),
        pytest.param(
            [b"Host: hello-00001.default.svc.other.domain"],
            404,
            b'Error getting active endpoint: revision.serving.knative.dev "" not found\n',
            id="another cluster domain",
        ),
        pytest.param(
            [b"Knative-Serving-Namespace: default", b"Knative-Serving-Revision: nope-00001"],
            404,
            b'Error getting active endpoint: revision.serving.knative.dev "nope-00001" '
            b"not found\n",
            id="unknown revision",
        ),
        pytest.param(
            # Either header missing: both come from the Host, as Knative's context handler.
            [b"Knative-Serving-Revision: hello-00001"],
            404,
            b'Error getting active endpoint: revision.serving.knative.dev "" not found\n',
            id="no namespace",
        ),
    ],
)
async def test_routing(chain: MakeChain, headers: list[bytes], status: int, body: bytes) -> None:
    c = await chain()
    c.revision().update_pods(frozenset({POD_A}))
    client = c.client()
    client.feed(request(*headers))
    if status == 200:
        pod = await c.pod()
        assert pod.take().startswith(b"GET / HTTP/1.1\r\n")
        pod.feed(OK)
    await settle()
    assert status_and_body(client.take()) == (status, body)


# -- header rewriting ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "present", "absent"),
    [
        pytest.param(
            [*ROUTE, b"Host: app.example.com"],
            [b"Host: 10.0.0.1:8012", b"K-Original-Host: app.example.com"],
            [b"Knative-Serving", b"\r\nHost: app.example.com"],
            id="routing headers dropped, Host moved to K-Original-Host",
        ),
        pytest.param(
            [*ROUTE, b"Host: r.example", b"K-Original-Host: first.example"],
            [b"K-Original-Host: first.example"],
            [b"r.example"],
            id="an earlier K-Original-Host wins",
        ),
        pytest.param(
            [*ROUTE, b"K-Proxy-Request: someone"],
            [b"K-Proxy-Request: activator"],
            [b"someone"],
            id="K-Proxy-Request set, not appended",
        ),
        pytest.param(
            [*ROUTE, b"X-Forwarded-For: 1.1.1.1", b"X-Forwarded-For: 2.2.2.2"],
            [b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.1.0.7"],
            [],
            id="client appended to X-Forwarded-For",
        ),
        pytest.param(
            [*ROUTE, b"Connection: keep-alive, X-Secret", b"X-Secret: s", b"Keep-Alive: 5"],
            [],
            [b"X-Secret", b"Keep-Alive", b"Connection"],
            id="hop-by-hop and Connection-listed headers dropped",
        ),
        pytest.param(
            [*ROUTE, b"traceparent: 00-abc-def-01", b"User-Agent: curl/8"],
            [b"traceparent: 00-abc-def-01", b"User-Agent: curl/8"],
            [],
            id="trace context and other headers passed on",
        ),
    ],
)
async def test_the_head_the_pod_receives(
    chain: MakeChain, headers: list[bytes], present: list[bytes], absent: list[bytes]
) -> None:
    c = await chain()
    c.revision().update_pods(frozenset({POD_A}))
    client = c.client()
    client.feed(request(*headers, path=b"/p?q=1"))
    pod = await c.pod()
    head = pod.take()
    assert head.startswith(b"GET /p?q=1 HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n")
    for line in present:
        assert b"\r\n" + line + b"\r\n" in head, (line, head)
    for text in absent:
        assert text not in head, (text, head)
    pod.feed(OK)
    assert client.take() == OK


# -- the throttler's answers --------------------------------------------------------------
async def test_throttler_admits_queues_then_rejects(chain: MakeChain) -> None:
    c = await chain(cc=1, queue_depth=1)
    rev = c.revision()
    rev.update_pods(frozenset({POD_A}))
    first, second, third = c.client(), c.client(), c.client()
    first.feed(request(*ROUTE, path=b"/1"))
    second.feed(request(*ROUTE, path=b"/2"))
    third.feed(request(*ROUTE, path=b"/3"))
    pod = await c.pod()
    assert pod.take().startswith(b"GET /1 ")
    # The second waits (a GET read whole: its connection is read on, so that its client's
    # leaving would end it); the third finds the queue full.
    assert second.reading and second.take() == b""
    assert status_and_body(third.take()) == (503, b"pending request queue full\n")
    assert (rev.throttler.active, rev.throttler.queued) == (1, 1)
    pod.feed(OK)  # the first ends: its slot goes to the second, on the same connection
    assert first.take() == OK
    await settle()
    assert second.reading and pod.take().startswith(b"GET /2 ")
    pod.feed(OK)
    assert second.take() == OK
    assert rev.throttler.in_flight == 0 and len(c.net.opened) == 1


async def test_a_cold_request_waits_for_a_pod_and_is_reported_at_once(
    chain: MakeChain,
) -> None:
    c = await chain(cc=0)
    client = c.client()
    client.feed(request(*ROUTE))
    await settle()
    rev = c.revision()
    assert rev.throttler.queued == 1 and c.net.attempts == 0
    # Knative's cold-start stat: one request, sent before any period ends.
    [payload] = c.sink.payloads
    [(namespace, name, stat)] = decode_wire_stats(payload)
    assert (namespace, name, stat.request_count) == (NS, REV, 1.0)
    rev.update_pods(frozenset({POD_A}))  # the backends' probe found the pod
    pod = await c.pod()
    assert pod.take().startswith(b"GET / HTTP/1.1\r\n")
    pod.feed(OK)
    assert client.take() == OK and rev.throttler.in_flight == 0


async def test_a_queued_request_whose_client_leaves_frees_its_place(
    chain: MakeChain,
) -> None:
    c = await chain(cc=1)
    client = await queued_request(c)
    rev = c.revision()
    client.peer_close()
    await settle()
    assert rev.throttler.in_flight == 0 and not c.server.live


async def test_a_queued_request_times_out_with_504(chain: MakeChain) -> None:
    c = await chain(cc=1, timeout_s=1)
    client = await queued_request(c)
    rev = c.revision()
    c.server.sweep(time.monotonic() + 1.5)  # the proxy's timeout sweep, past the deadline
    await settle()
    status, _ = status_and_body(client.take())
    assert status == 504 and rev.throttler.in_flight == 0


@pytest.mark.parametrize(
    ("refused", "answered"),
    [
        pytest.param({POD_A}, True, id="refused by one pod: the other answers"),
        pytest.param({POD_A, POD_B}, False, id="refused by every pod: waits for a pod"),
    ],
)
async def test_a_pod_that_refuses_is_dropped_and_the_request_retried(
    chain: MakeChain, refused: set[str], answered: bool
) -> None:
    c = await chain(cc=1)  # first_available: POD_A, then POD_B
    for address in refused:
        host, _, port = address.rpartition(":")
        c.net.refuse.add((host, int(port)))
    rev = c.revision()
    rev.update_pods(frozenset({POD_A, POD_B}))
    client = c.client()
    client.feed(request(*ROUTE))
    for _ in range(MAX_CONNECT_RETRIES + 2):
        await settle()
    # Each refusing pod is tried once, then left out until the backends see it healthy again.
    assert c.net.attempts == 2
    assert {t.address for t in rev.throttler.pod_trackers} == {POD_A, POD_B} - refused
    if answered:
        pod = c.net.opened[-1]
        assert pod.peer == ("10.0.0.2", 8012) and pod.take().startswith(b"GET / ")
        pod.feed(OK)
        assert client.take() == OK and rev.throttler.in_flight == 0
    else:
        # No pod left: as in Knative, the request waits for capacity (a cold start again).
        assert client.take() == b"" and rev.throttler.queued == 1
        c.net.refuse.clear()
        rev.update_pods(frozenset({POD_B}))
        pod = await c.pod()
        pod.take()
        pod.feed(OK)
        assert client.take() == OK and rev.throttler.in_flight == 0
