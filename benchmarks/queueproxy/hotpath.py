"""The queue-proxy's Python cost per request, without sockets: the figure optimisations move.

Why: on the shared 2-core machine a wrk run moves by 10-30 % between runs of the same code,
so a 3 % change to the request path is invisible there. This drives the real chain
(``ServerConnection`` -> ``QueueHandler`` -> ``UpstreamPool``/``UpstreamConnection`` -> back)
over the in-memory transports of ``shared.proxy.memory``: one kept-alive client connection and
one kept-alive app connection, the request fed as one read, the app's response as one read.
What is left out is the event loop and the kernel (uvloop's reads and writes, epoll, TCP),
which no Python change touches. The best of ``--repeat`` rounds is reported (a preempted
round is only slower), in nanoseconds per request; run it under ``chrt -r 10`` and with
``valgrind --tool=callgrind`` for instruction counts.

Every feature is on, as the queue-proxy runs in a pod: stats, drain tracking, the user
metrics, the three timeouts; ``--cc N`` adds the breaker.

Run: .venv/bin/python benchmarks/queueproxy/hotpath.py [--cc 0] [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
from benchmarks import native  # noqa: E402  (imports no knpy module)

native.put_first(sys.argv[1:])  # --native: the KNPY_NATIVE=1 build, before knpy is imported

from benchmarks import harness  # noqa: E402
from queueproxy.drain import Drainer  # noqa: E402
from queueproxy.handler import QueueHandler  # noqa: E402
from queueproxy.metrics import UserMetrics  # noqa: E402
from shared.breaker import Breaker  # noqa: E402
from shared.proxy.exchange import Exchange  # noqa: E402
from shared.proxy.memory import MemoryNetwork  # noqa: E402
from shared.proxy.server import ProxyServer  # noqa: E402
from shared.proxy.upstream import UpstreamPool  # noqa: E402
from shared.request_stats import RequestStats  # noqa: E402

# wrk's request, and k6's (which adds a user agent and an encoding).
REQUESTS = {
    "wrk": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "k6": (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Grafana k6/0.54.0\r\n"
        b"Accept-Encoding: gzip\r\n\r\n"
    ),
}
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, World!\n"
)


class _Prober:
    async def probe(self) -> bool:
        return True


async def run(cc: int, requests: int, repeat: int, request: bytes) -> float:
    loop = asyncio.get_running_loop()
    net = MemoryNetwork()
    pool: UpstreamPool[int] = UpstreamPool(loop, "127.0.0.1", 8080, connect=net.connect)
    breaker: Breaker[Exchange[int]] | None = Breaker(10 * cc, cc, cc) if cc else None
    stats = RequestStats(time.monotonic())
    metrics = UserMetrics(
        namespace="n",
        service="s",
        configuration="c",
        revision="r",
        pod="p",
        in_flight=lambda: stats.concurrency,
    )
    handler = QueueHandler(
        pool=pool,
        stats=stats,
        drainer=Drainer(30.0, 300.0),
        prober=_Prober(),  # type: ignore[arg-type]
        metrics=metrics,
        breaker=breaker,
        timeout_s=300.0,
        response_start_timeout_s=10.0,
        idle_timeout_s=60.0,
    )
    server = ProxyServer(handler, initial_tag=0)
    return await harness.pass_through_ns(server, net, request, RESPONSE, requests, repeat)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--native", action="store_true", help="the KNPY_NATIVE=1 build (setup.py)")
    p.add_argument("--cc", type=int, default=0, help="containerConcurrency (0: no breaker)")
    p.add_argument("--requests", type=int, default=20000, help="requests per round")
    p.add_argument("--repeat", type=int, default=7, help="rounds; the best is reported")
    p.add_argument("--client", choices=sorted(REQUESTS), default="wrk")
    args = p.parse_args()
    ns = asyncio.run(run(args.cc, args.requests, args.repeat, REQUESTS[args.client]))
    print(f"{ns / 1000:.2f} µs per request (CC={args.cc}, {args.client}'s request, best of "
          f"{args.repeat} x {args.requests})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
