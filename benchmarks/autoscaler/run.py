"""Autoscaler benchmark: the cost of deciding for 10,000 revisions and of scraping 1,000 pods.

Two measurements, one process each time on uvloop, as ``python -m autoscaler`` runs:

decisions  10,000 revisions (the in-memory cluster as the platform), each with windows full
           of a minute of stats, decided by ``AutoscalerEngine.tick_all`` exactly as the 2-s
           loop does (collector averages, decider, KPA pass, metrics row, publish on change).
           Reported: CPU seconds per tick (target: under 1 s, i.e. half a core at one tick
           every 2 s) and per revision, and the cost of recording one Stat.
scrape     1,000 pods (250 revisions x 4 pods: every pod is in the sample) served by a stat
           server child process on 1,000 loopback ports (a raw asyncio server that answers
           every request with a fixed Stat), scraped every second by the real service over
           its aiohttp session with keep-alive. Reported: the autoscaler process's CPU as a
           share of one core (target: under 50 %), pod scrapes per second achieved, and the
           stat server's CPU for reference.

    .venv/bin/python benchmarks/autoscaler/run.py                   # both, ~40 s
    .venv/bin/python benchmarks/autoscaler/run.py --only decisions --revisions 10000
    .venv/bin/python benchmarks/autoscaler/run.py --only scrape --pods 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from autoscaler.config import EngineConfig  # noqa: E402
from autoscaler.configmap import AutoscalerConfig  # noqa: E402
from autoscaler.engine import AutoscalerEngine  # noqa: E402
from autoscaler.scraper import HttpScrapeClient  # noqa: E402
from shared.seams import Endpoint, RevisionKey, RevisionSpec  # noqa: E402
from shared.stat_proto import StatData, encode_stat  # noqa: E402

TICK_S = 2.0
STABLE_WINDOW_S = 60


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class NoPods:
    """Decisions only: the scrape client is never asked."""

    async def scrape(self, endpoint: Endpoint) -> StatData:
        raise AssertionError("not scraping in the decisions benchmark")


class Pods:
    """The revisions and their pods, standing where the Pod informer's index does."""

    def __init__(self, revisions: int, pods: int, ports: list[int] | None = None) -> None:
        started = time.time() - 3600
        self.specs: list[RevisionSpec] = []
        self._pods: dict[RevisionKey, tuple[Endpoint, ...]] = {}
        for r in range(revisions):
            key = RevisionKey(f"ns-{r % 50}", f"rev-{r:05d}")
            annotations = {"autoscaling.knative.dev/metric": "rps"} if r % 10 == 0 else {}
            self.specs.append(RevisionSpec(key, 10 * (1 + r % 3), annotations=annotations))
            self._pods[key] = tuple(
                Endpoint(
                    f"{key.name}-{i}",
                    "127.0.0.1",
                    8012,
                    ports[r * pods + i] if ports else 9090,
                    True,
                    started,
                )
                for i in range(pods)
            )

    def endpoints(self, key: RevisionKey) -> tuple[Endpoint, ...]:
        return self._pods.get(key, ())


async def bench_decisions(revisions: int, ticks: int) -> dict[str, Any]:
    clock = Clock(1_700_000_000.0)
    pods = Pods(revisions, pods=2)
    cfg = EngineConfig(autoscaler=AutoscalerConfig.from_configmap({}))
    decided: list[RevisionKey] = []
    svc = AutoscalerEngine(cfg, pods, clock, on_tick=decided.append, scrape_client=NoPods())
    for spec in pods.specs:
        svc.upsert(spec)
    keys = svc.multiscaler.revisions()
    rng = random.Random(1)
    base = {k: rng.uniform(0, 40) for k in keys}

    def record_second() -> None:
        for k in keys:
            load = base[k] * rng.uniform(0.9, 1.1)
            svc.collector.record(k, clock.now, StatData("s", load, 0.0, load * 5, 0.0))

    for _ in range(STABLE_WINDOW_S):  # a full stable window of data
        clock.now += 1
        record_second()
    t0 = time.process_time()
    record_second()
    record_us = (time.process_time() - t0) / len(keys) * 1e6
    cpu, wall = [], []
    for _ in range(ticks):
        for _ in range(int(TICK_S)):
            clock.now += 1
            record_second()
        c0, w0 = time.process_time(), time.perf_counter()
        await svc.tick_all(clock.now)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {
        "revisions": len(keys),
        "ticks": ticks,
        "cpu_s_per_tick_median": statistics.median(cpu),
        "cpu_s_per_tick_max": max(cpu),
        "wall_s_per_tick_median": statistics.median(wall),
        "us_per_decision": statistics.median(cpu) / len(keys) * 1e6,
        "core_share_at_2s_ticks": statistics.median(cpu) / TICK_S,
        "us_per_stat_recorded": record_us,
        "revisions_decided": len(decided),
    }


# -- the stat server child ------------------------------------------------------------------

STAT_BODY = encode_stat(StatData("pod", 3.0, 0.5, 12.0, 1.0, 3600.0, 1_700_000_000))
STAT_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\n"
    + f"Content-Length: {len(STAT_BODY)}\r\n\r\n".encode()
    + STAT_BODY
)


class _StatProtocol(asyncio.Protocol):
    """Answers each request head (up to the blank line) with the fixed Stat; keep-alive."""

    served = 0
    connections = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _StatProtocol.connections += 1
        self.transport: Any = transport  # uvloop's TCPTransport is no asyncio.Transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            _StatProtocol.served += 1
            self.transport.write(STAT_RESPONSE)


async def serve_stats(count: int) -> None:
    """Listen on ``count`` free loopback ports; print them as JSON; serve until stdin closes.

    Then print the requests served and the connections accepted, as JSON.
    """
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(_StatProtocol, "127.0.0.1", 0, backlog=64) for _ in range(count)
    ]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps(ports), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    print(json.dumps([_StatProtocol.served, _StatProtocol.connections]), flush=True)


# -- the scrape benchmark -------------------------------------------------------------------


class CountingClient:
    """The service's HTTP scrape client, counting the pods it asked."""

    def __init__(self, inner: HttpScrapeClient) -> None:
        self.inner = inner
        self.scrapes = 0

    async def scrape(self, endpoint: Endpoint) -> StatData:
        self.scrapes += 1
        return await self.inner.scrape(endpoint)


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_scrape(pods: int, per_revision: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-stats", str(pods)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert server.stdout is not None
        ports: list[int] = json.loads(server.stdout.readline())
        revisions = pods // per_revision
        cluster = Pods(revisions, per_revision, ports)
        cfg = EngineConfig(bind_host="127.0.0.1", stat_port=0, metrics_port=0)
        connector = aiohttp.TCPConnector(limit=cfg.max_scrapes_in_flight, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = CountingClient(HttpScrapeClient(session, cfg.max_scrapes_in_flight))
            svc = AutoscalerEngine(cfg, cluster, scrape_client=client)
            for spec in cluster.specs:
                svc.upsert(spec)
            async with svc:
                await asyncio.sleep(3)  # warm-up: connections opened, windows started
                scrapes0, cpu0, srv0 = client.scrapes, time.process_time(), _cpu_s(server.pid)
                w0 = time.perf_counter()
                await asyncio.sleep(seconds)
                wall = time.perf_counter() - w0
                scrapes = client.scrapes - scrapes0
                cpu = time.process_time() - cpu0
                srv = _cpu_s(server.pid) - srv0
                failed = svc.metrics.scrape_failed.value
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=10)
    assert server.stdout is not None
    served, connections = json.loads(server.stdout.readline() or "[0, 0]")
    return {
        "pods": revisions * per_revision,
        "revisions": revisions,
        "seconds": round(wall, 2),
        "pod_scrapes_per_s": scrapes / wall,
        "autoscaler_core_share": cpu / wall,
        "us_cpu_per_pod_scrape": cpu / max(scrapes, 1) * 1e6,
        "stat_server_core_share": srv / wall,
        "failed_revision_scrapes": failed,
        "server_requests_total": served,
        "server_connections_total": connections,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["decisions", "scrape"], help="one measurement")
    parser.add_argument("--revisions", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--pods", type=int, default=1_000)
    parser.add_argument("--pods-per-revision", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve-stats", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.serve_stats:
        uvloop.run(serve_stats(args.serve_stats))
        return 0
    results: dict[str, Any] = {}
    if args.only in (None, "decisions"):
        d = results["decisions"] = uvloop.run(bench_decisions(args.revisions, args.ticks))
        print(
            f"decisions: {d['revisions']} revisions, one tick = "
            f"{d['cpu_s_per_tick_median']:.3f} s CPU (max {d['cpu_s_per_tick_max']:.3f}), "
            f"{d['wall_s_per_tick_median']:.3f} s wall; {d['us_per_decision']:.1f} µs/revision; "
            f"{d['core_share_at_2s_ticks']:.0%} of a core at one tick per 2 s "
            f"(target < 50 %); recording a Stat {d['us_per_stat_recorded']:.1f} µs"
        )
    if args.only in (None, "scrape"):
        s = results["scrape"] = uvloop.run(
            bench_scrape(args.pods, args.pods_per_revision, args.seconds)
        )
        print(
            f"scrape: {s['pods']} pods in {s['revisions']} revisions, "
            f"{s['pod_scrapes_per_s']:.0f} pod scrapes/s, autoscaler "
            f"{s['autoscaler_core_share']:.0%} of a core (target < 50 %), "
            f"{s['us_cpu_per_pod_scrape']:.0f} µs CPU per pod scrape; stat server "
            f"{s['stat_server_core_share']:.0%}; {s['server_connections_total']} connections for "
            f"{s['server_requests_total']} requests; "
            f"failed revision scrapes {s['failed_revision_scrapes']:.0f}"
        )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
