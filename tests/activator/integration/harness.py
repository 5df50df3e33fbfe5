"""The activator integration harness: an autoscaler stand-in and in-process activators.

The activator runs in the test's event loop as a library object over a ``FakeCluster`` (the
in-memory Kubernetes API of shared/kube/fake.py) in which the test writes Knative's objects:
the Revision, its private Endpoints (the pods) and its public Endpoints (the activators);
the pods (sample app + queue-proxy) are real processes started by the
queue-proxy harness (tests/queueproxy/integration/qpharness.py), and the autoscaler stand-in
is a real WebSocket server on loopback that speaks Knative's stat protocol: binary
WireStatMessages frames, one per activator report.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from activator.app import Activator
from activator.cluster import RevisionKey
from activator.config import ActivatorConfig
from activator.statsink import WebSocketStatSink
from shared.kube.fake import FakeCluster
from shared.ports import free_port
from shared.stat_proto import WireStat, decode_wire_stats
from tests.activator import objects
from tests.queueproxy.integration.qpharness import LOOPBACK, Stack

KEY = RevisionKey("default", "hello-00001")
ROUTE = {"Knative-Serving-Namespace": KEY.namespace, "Knative-Serving-Revision": KEY.name}


async def get_status(client: aiohttp.ClientSession, url: str) -> int:
    """GET the test revision through the activator; the status, the body read."""
    async with client.get(url, headers=ROUTE) as resp:
        await resp.read()
        return resp.status


@dataclass
class Received:
    at: float  # time.monotonic() when the frame arrived
    stats: list[WireStat]


@dataclass
class AutoscalerStandIn:
    """Knative's autoscaler stat server, reduced to recording what arrives."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    _runner: web.AppRunner | None = None
    _sockets: set[web.WebSocketResponse] = field(default_factory=set)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._ws)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, self.port or free_port())
        await site.start()
        self.port = site._port

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self._sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.received.append(Received(time.monotonic(), decode_wire_stats(msg.data)))
                    self._arrived.set()
        finally:
            self._sockets.discard(ws)
        return ws

    def first_for(self, key: RevisionKey, after: float = 0.0) -> Received | None:
        for rec in self.received:
            if rec.at >= after and any(
                (ns, name) == (key.namespace, key.name) for ns, name, _ in rec.stats
            ):
                return rec
        return None

    async def wait_for(self, pred: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not pred():
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), 0.1)


def free_port_pair() -> int:
    """A free port whose next one is free too: worker i serves its metrics on port + i.

    Outside a KNPY_PORT_RANGE (a serial run) free ports are the kernel's ephemeral ones, and
    port + 1 may be an outgoing connection's (the bind then failed with EADDRINUSE).
    """
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port + 1))
            except OSError:
                continue
            return port
    raise OSError("no two adjacent free ports")


def process_env(port: int, metrics: int, standin: AutoscalerStandIn, pod: str) -> dict[str, str]:
    """``python -m activator``'s environment on loopback: serving and metrics ports, the
    stand-in autoscaler, no drain wait."""
    return {
        "POD_NAME": pod,
        "POD_IP": LOOPBACK,
        "ACTIVATOR_BIND_HOST": LOOPBACK,
        "ACTIVATOR_SERVING_PORT": str(port),
        "ACTIVATOR_METRICS_PORT": str(metrics),
        "ACTIVATOR_AUTOSCALER_URL": standin.url,
        "ACTIVATOR_DRAIN_TIMEOUT_SECONDS": "0",
    }


def set_pods(
    cluster: FakeCluster | None,
    pods: list[tuple[Stack, bool]],
    key: RevisionKey = KEY,
) -> dict[str, object]:
    """Write the revision's private Endpoints: each pod a subset of its own (on one host every
    queue-proxy has its own port), ready or not; returns the object (written if a cluster)."""
    subsets = [
        objects.subset(
            {"http": s.qp.serving_port, "http-autometric": s.qp.metrics_port},
            [objects.address(LOOPBACK, f"{key.name}-{s.qp.serving_port}")] if ready else [],
            [] if ready else [objects.address(LOOPBACK, f"{key.name}-{s.qp.serving_port}")],
        )
        for s, ready in pods
    ]
    obj = objects.private_endpoints(key.namespace, key.name, subsets)
    if cluster is not None:
        cluster.put(obj)
    return obj


def set_activators(cluster: FakeCluster, addresses: list[str], key: RevisionKey = KEY) -> None:
    """Write the revision's public Endpoints, as the SKS controller does in Proxy mode."""
    cluster.put(objects.public_endpoints(key.namespace, key.name, addresses))


def activator_config(autoscaler_url: str, **overrides: object) -> ActivatorConfig:
    serving_port = overrides.pop("serving_port", 0) or free_port()
    values: dict[str, object] = {
        "pod_name": f"activator-{serving_port}",
        "pod_ip": LOOPBACK,
        "bind_host": LOOPBACK,
        "serving_port": serving_port,
        "metrics_port": free_port(),
        "autoscaler_url": autoscaler_url,
        "drain_timeout_s": 0.2,
        **overrides,
    }
    return ActivatorConfig(**values)  # type: ignore[arg-type]


@dataclass
class RunningActivator:
    activator: Activator
    sink: WebSocketStatSink

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.activator.serving_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.activator.metrics_port}"


StartActivator = Callable[..., Awaitable[RunningActivator]]


@contextlib.asynccontextmanager
async def activators(
    cluster: FakeCluster, standin: AutoscalerStandIn
) -> AsyncIterator[StartActivator]:
    """A factory of in-process activators over ``cluster``, all stopped at exit."""
    started: list[RunningActivator] = []

    async def start(**overrides: object) -> RunningActivator:
        cfg = activator_config(standin.url, **overrides)
        sink = WebSocketStatSink(cfg.autoscaler_url, reconnect_max_s=0.5)
        act = Activator(cfg, cluster, sink)
        await act.start()
        running = RunningActivator(act, sink)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            await running.activator.stop()


def put_revision(
    cluster: FakeCluster, cc: int, timeout_s: int = 30, key: RevisionKey = KEY
) -> None:
    cluster.put(objects.revision(key.namespace, key.name, cc=cc, timeout_s=timeout_s))


async def until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)
