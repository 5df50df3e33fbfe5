"""The activator's Python cost per request, without sockets: the figure optimisations move.

Why: as ``benchmarks/queueproxy/hotpath.py`` for the queue-proxy, the activator's wall-clock
and CPU figures move by more between runs on the shared machine than a change to its request
path does. This drives the real chain (``ServerConnection`` -> ``ActivatorHandler`` -> the
revision's throttler, load balancer and stats -> ``UpstreamConnection`` -> back) over the
in-memory transports of ``shared.proxy.memory``: one kept-alive client connection, one pod
with one kept-alive connection, the request routed by the Knative-Serving-* headers (as the
ingress sends it in proxy mode), fed as one read, the pod's response as one read. The event loop
and the kernel are left out. The best of ``--repeat`` rounds is reported, in microseconds per
request; run it under ``valgrind --tool=callgrind`` for instruction counts.

Every feature is on as in a cluster: the throttler (``--cc N`` gives the revision
containerConcurrency N; 0 is unlimited), the concurrency reporter's stats, the timeouts.

Run: .venv/bin/python benchmarks/activator/hotpath.py [--cc 0] [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
from benchmarks import native  # noqa: E402  (imports no knpy module)

native.put_first(sys.argv[1:])  # --native: the KNPY_NATIVE=1 build, before knpy is imported

from activator.cluster import RevisionSpec  # noqa: E402
from activator.handler import ActivatorHandler  # noqa: E402
from activator.reporter import ConcurrencyReporter  # noqa: E402
from activator.revisions import ActivatorRequest, ActiveRevision, RevisionTable  # noqa: E402
from benchmarks import harness  # noqa: E402
from shared.kube.fake import FakeCluster  # noqa: E402
from shared.kube.resources import REVISIONS  # noqa: E402
from shared.proxy.memory import MemoryNetwork  # noqa: E402
from shared.proxy.server import ProxyServer  # noqa: E402

NAMESPACE, NAME, POD = "default", "hello-00001", "10.0.0.1:8012"
# k6's request as the ingress forwards it to the activator in proxy mode.
REQUEST = (
    b"GET / HTTP/1.1\r\nHost: hello.default.example.com\r\nUser-Agent: Grafana k6/0.54.0\r\n"
    b"Accept-Encoding: gzip\r\nKnative-Serving-Namespace: default\r\n"
    b"Knative-Serving-Revision: hello-00001\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, World!\n"
)


class _Sink:
    """The stat link to the autoscaler, connected and dropping what it is sent."""

    def send(self, payload: bytes) -> None:
        pass

    def status(self) -> str | None:
        return None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


def _revision(cc: int) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "namespace": NAMESPACE,
            "name": NAME,
            "labels": {
                "serving.knative.dev/configuration": "hello",
                "serving.knative.dev/service": "hello",
            },
            "annotations": {},
        },
        "spec": {"containers": [{"image": "hello"}], "containerConcurrency": cc},
    }


async def run(cc: int, requests: int, repeat: int) -> float:
    cluster = FakeCluster()
    cluster.put(_revision(cc), REVISIONS)
    net = MemoryNetwork()
    handlers: list[ActivatorHandler] = []

    def new_revision(spec: RevisionSpec) -> ActiveRevision:
        return ActiveRevision(
            spec,
            metrics=None,
            queue_depth=100,
            probe_timeout_s=0.05,
            probe_frequency_s=3600.0,
            max_idle_conns=10,
            on_connect_error=handlers[0].connect_failed,
            connect=net.connect,
        )

    table = RevisionTable(cluster, new_revision, own_address="10.0.9.9:8012")
    table.start()
    await cluster.settle()
    handler = ActivatorHandler(
        table, ConcurrencyReporter("activator-0", _Sink()), health=lambda: None
    )
    handlers.append(handler)
    rev = table.lookup(NAMESPACE.encode(), NAME.encode())
    assert rev is not None
    rev.update_pods(frozenset({POD}))
    server: ProxyServer[ActivatorRequest | None] = ProxyServer(handler, initial_tag=None)
    try:
        return await harness.pass_through_ns(server, net, REQUEST, RESPONSE, requests, repeat)
    finally:
        await table.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--native", action="store_true", help="the KNPY_NATIVE=1 build (setup.py)")
    p.add_argument("--cc", type=int, default=0, help="containerConcurrency (0: unlimited)")
    p.add_argument("--requests", type=int, default=20000, help="requests per round")
    p.add_argument("--repeat", type=int, default=7, help="rounds; the best is reported")
    args = p.parse_args()
    ns = asyncio.run(run(args.cc, args.requests, args.repeat))
    print(f"{ns / 1000:.2f} µs per request (CC={args.cc}, best of {args.repeat} x {args.requests})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
