"""``python -m activator --workers 2`` keeps the capacity and queue limits exactly (issue 15).

The pods are small aiohttp servers in this test's loop that hold every request until the test
lets them go and count how many they hold at once, so the activator's own limits are what is
measured (no queue-proxy breaker behind it to hide an excess). The activator is the real
process with two workers on one SO_REUSEPORT port; the kernel, not the test, decides which
worker each connection reaches, so the test keeps opening connections until both workers are
full and then checks the totals, which do not depend on that spread.

What "exactly" means is Knative's throttler (pkg/activator/net/throttler.go), each worker being
an activator of the split (activator/workers.py, activator/split.py worker_share):

- assignSlice: with P >= A the sorted pods are cut into slices of P // A, and the P % A
  leftover pods at the tail go one each to the first activators; with P < A activator i
  takes pod i % P alone, so a pod can serve several activators.
- calculateCapacity: an activator lets cc x (its pods) requests through at once.
- The revision's queue depth is divided among the workers (activator/split.py worker_part),
  so the activator as a whole queues at most ACTIVATOR_QUEUE_DEPTH; the next request on a
  worker whose part is full is refused at once with a 503.

So once both workers are full, the pods hold exactly cc x (workers sharing the pod) each,
the activator holds sum(capacity) + depth, and every other request was a 503.

And the workers end with the parent when it is killed outright, rather than serving on as
orphans.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
import pytest
import yaml
from aiohttp import web

from shared.ports import free_port
from tests.activator import objects
from tests.queueproxy.integration.qpharness import LOOPBACK, wait_listening

from .harness import KEY, ROUTE, AutoscalerStandIn, free_port_pair, process_env

pytestmark = pytest.mark.timeout(30)

WORKERS = 2
# A request that is neither held nor refused within this long means a limit is wrong.
SETTLE_S = 5.0
# Connections opened before giving up on filling both workers; the kernel's hash spreads them
# about evenly, and the largest case needs 7 on one worker and 4 on the other.
MAX_REQUESTS = 200


@dataclass
class Pod:
    """A pod that answers the activator's probe and holds every request until released."""

    gate: asyncio.Event
    port: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    served: int = 0
    runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("K-Network-Probe") == "queue":
            return web.Response(text="queue")  # what a queue-proxy answers the activator
        if request.path == "/warm":
            return web.Response(text="warm")  # not held, not counted: see the test's warm-up
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            self.served += 1
            return web.Response(text="ok")
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, LOOPBACK, self.port).start()


@dataclass
class Worker:
    """One worker's view of the revision, from its own metrics port (activator/metrics.py)."""

    capacity: int
    assigned_pods: int
    active: int
    queued: int
    refused: int  # 503s it answered
    ok: int  # 200s it answered


def _sample(text: str, name: str, status: str | None = None) -> int:
    """The value of the test revision's series ``name`` (with this status code, if given)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") or f'kn_revision_name="{KEY.name}"' not in line:
            continue
        if status is not None and f'http_response_status_code="{status}"' not in line:
            continue
        return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def _scrape(client: aiohttp.ClientSession, port: int) -> Worker:
    async with client.get(f"http://{LOOPBACK}:{port}/metrics") as resp:
        text = await resp.text()
    count = "http_server_request_duration_seconds_count"
    return Worker(
        capacity=_sample(text, "knpy_activator_throttler_capacity"),
        assigned_pods=_sample(text, "knpy_activator_revision_assigned_pods"),
        active=_sample(text, "kn_revision_request_active"),
        queued=_sample(text, "kn_revision_request_queued"),
        refused=_sample(text, count, "503"),
        ok=_sample(text, count, "200"),
    )


@dataclass
class Load:
    """Requests sent through the activator, each on a connection of its own (so that each is
    a fresh draw of the kernel's SO_REUSEPORT spread)."""

    url: str
    client: aiohttp.ClientSession
    tasks: list[asyncio.Task[tuple[int, str, float]]] = field(default_factory=list)

    async def _one(self) -> tuple[int, str, float]:
        start = time.monotonic()
        async with self.client.get(self.url, headers=ROUTE) as resp:
            return resp.status, await resp.text(), time.monotonic() - start

    def send(self, n: int) -> None:
        self.tasks += [asyncio.ensure_future(self._one()) for _ in range(n)]

    def refused(self) -> list[tuple[int, str, float]]:
        done = [t.result() for t in self.tasks if t.done()]
        assert all(status == 503 for status, _, _ in done), done
        return done


async def _settled(load: Load, metrics: list[int], pods: list[Pod]) -> list[Worker]:
    """Wait until every request sent is either held by a worker or answered 503, and every
    request a worker admitted has reached its pod; the workers' state then."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        workers = [await _scrape(load.client, port) for port in metrics]
        held = sum(w.active + w.queued for w in workers)
        refused = len(load.refused())
        if (
            held + refused == len(load.tasks)
            and sum(w.refused for w in workers) == refused
            and sum(p.in_flight for p in pods) == sum(w.active for w in workers)
        ):
            return workers
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not settled after {SETTLE_S} s: {len(load.tasks)} sent, {refused} refused, "
                f"workers {workers}, pods in flight {[p.in_flight for p in pods]}"
            )
        await asyncio.sleep(0.02)


async def _start_workers(
    children: Any,
    tmp_path: Path,
    standin: AutoscalerStandIn,
    pods: list[Pod],
    cc: int,
    depth: int,
) -> tuple[Any, int, list[int]]:
    """``python -m activator --workers 2`` over a cluster file with ``pods``, listening;
    the child, its serving port and the workers' metrics ports."""
    path = tmp_path / "cluster.yaml"
    subsets = [
        objects.subset({"http": p.port}, [objects.address(LOOPBACK, f"pod-{p.port}")]) for p in pods
    ]
    docs = [
        objects.configmap("config-network", {}),
        objects.revision(KEY.namespace, KEY.name, cc=cc),
        objects.private_endpoints(KEY.namespace, KEY.name, subsets),
    ]
    path.write_text(yaml.safe_dump_all(docs))
    port, metrics = free_port(), free_port_pair()
    env = process_env(port, metrics, standin, "activator-workers")
    env["ACTIVATOR_QUEUE_DEPTH"] = str(depth)
    argv = [sys.executable, "-m", "activator", "--cluster-file", str(path)]
    child = children.spawn("activator", [*argv, "--workers", str(WORKERS)], env)
    metrics_ports = [metrics + w for w in range(WORKERS)]
    await wait_listening(
        child, {"serving": port, **{f"metrics {i}": p for i, p in enumerate(metrics_ports)}}
    )
    return child, port, metrics_ports


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=25)
    ) as client:
        yield client


@pytest.mark.parametrize(
    ("num_pods", "cc", "depth", "capacities", "assigned", "queue_parts", "sharers"),
    [
        # 3 pods, 2 workers: slices of 1, the leftover (the last pod) to worker 0. Each pod
        # is one worker's alone, so none ever holds more than cc.
        pytest.param(3, 2, 5, (4, 2), (2, 1), (3, 2), (1, 1, 1), id="3 pods cc 2: 2 and 1 pods"),
        # 1 pod, 2 workers: each takes pod 0 % 1 with capacity cc, as two Knative activators
        # would share it; in a cluster its queue-proxy's breaker holds cc, here nothing does.
        pytest.param(1, 1, 3, (1, 1), (1, 1), (2, 1), (2,), id="1 pod cc 1: shared"),
    ],
)
async def test_two_workers_hold_capacity_and_queue_depth_exactly(
    children: Any,
    tmp_path: Path,
    standin: AutoscalerStandIn,
    session: aiohttp.ClientSession,
    num_pods: int,
    cc: int,
    depth: int,
    capacities: tuple[int, int],
    assigned: tuple[int, int],
    queue_parts: tuple[int, int],
    sharers: tuple[int, ...],
) -> None:
    gate = asyncio.Event()
    pods = [Pod(gate) for _ in range(num_pods)]
    for pod in pods:
        await pod.start()
    try:
        child, port, metrics_ports = await _start_workers(
            children, tmp_path, standin, pods, cc, depth
        )

        # A worker sets a revision up on its first request for it, so requests that the pods
        # answer at once go through until both workers have probed their pods.
        deadline = time.monotonic() + 2 * SETTLE_S
        while (workers := [await _scrape(session, p) for p in metrics_ports]) and tuple(
            w.capacity for w in workers
        ) != capacities:
            assert time.monotonic() < deadline, f"capacities {workers}, want {capacities}"
            async with session.get(f"http://{LOOPBACK}:{port}/warm", headers=ROUTE) as resp:
                assert resp.status == 200, await resp.text()
        # The split is Knative's.
        assert tuple(w.assigned_pods for w in workers) == assigned
        warm = [w.ok for w in workers]

        # Overload: open connections until both workers hold all they may.
        load = Load(f"http://{LOOPBACK}:{port}/", session)
        while True:
            load.send(1)
            workers = await _settled(load, metrics_ports, pods)
            for w, cap, part in zip(workers, capacities, queue_parts, strict=True):
                assert w.active <= cap and w.queued <= part, f"past a limit: {workers}"
            assert all(p.in_flight <= cc * n for p, n in zip(pods, sharers, strict=True))
            full = [
                w.active == cap and w.queued == part
                for w, cap, part in zip(workers, capacities, queue_parts, strict=True)
            ]
            if all(full):
                break
            assert len(load.tasks) < MAX_REQUESTS, f"both workers never full: {workers}"
        # Now everything more is refused at once, whichever worker it reaches.
        load.send(5)
        workers = await _settled(load, metrics_ports, pods)

        limit = sum(capacities) + depth
        assert sum(queue_parts) == depth
        assert [p.in_flight for p in pods] == [cc * n for n in sharers]
        refused = load.refused()
        assert len(refused) == len(load.tasks) - limit
        for _, body, elapsed in refused:
            assert "pending request queue full" in body
            assert elapsed < 2.0, f"a refusal took {elapsed:.2f} s: it waited"

        # Released: every held request is answered 200, and the queued ones reached the pods
        # as slots freed without ever going past the limit.
        gate.set()
        async with asyncio.timeout(SETTLE_S):
            results = await asyncio.gather(*load.tasks)
        statuses = [status for status, _, _ in results]
        assert statuses.count(200) == limit
        assert statuses.count(503) == len(results) - limit
        assert sum(p.served for p in pods) == limit
        assert [p.max_in_flight for p in pods] == [cc * n for n in sharers]
        after = [await _scrape(session, p) for p in metrics_ports]
        assert [w.ok - before for w, before in zip(after, warm, strict=True)] == [
            cap + part for cap, part in zip(capacities, queue_parts, strict=True)
        ]
        assert all(w.active == 0 and w.queued == 0 for w in after), after

        child.terminate()
        assert await child.wait_exit(20) == 0, child.describe()
    finally:
        gate.set()
        for pod in pods:
            if pod.runner is not None:
                await pod.runner.cleanup()


async def test_workers_end_with_a_killed_parent(
    children: Any, tmp_path: Path, standin: AutoscalerStandIn, session: aiohttp.ClientSession
) -> None:
    """SIGKILL to the parent: the kernel SIGTERMs the workers (PR_SET_PDEATHSIG), they drain
    (0 s here) and exit, and the port stops answering. Before, they served on, orphaned."""
    pod = Pod(asyncio.Event())
    await pod.start()
    workers: list[psutil.Process] = []
    try:
        child, port, _ = await _start_workers(children, tmp_path, standin, [pod], 1, 10)
        workers = psutil.Process(child.pid).children()
        assert len(workers) == WORKERS, workers
        child.kill()
        deadline = time.monotonic() + SETTLE_S
        while alive := [w for w in workers if _running(w)]:
            assert time.monotonic() < deadline, f"workers outlived their parent: {alive}"
            await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"http://{LOOPBACK}:{port}/warm", headers=ROUTE):
                pass
    finally:
        for worker in workers:  # not left behind when the test fails
            if _running(worker):
                worker.kill()
        if pod.runner is not None:
            await pod.runner.cleanup()


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow, or absent in a container)."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
