"""The ingress never waits on control work (issue 10): an 858 KB YAML apply once stopped all
ingress traffic for 14 s, because the API server parsed it on the ingress's event loop.

A steady client (one request at a time, 10 ms apart) measures the ingress's latency, idle and
while a ~0.8 MB YAML ConfigMap is applied over and over (the API server parses YAML bodies
itself, with PyYAML's pure-Python loader: ~2 s of CPU each). Idle and busy phases alternate, so
drift in the machine's load falls on both. Before the control process (controlplane/control.py)
the busy p99 was 70-75 ms over an idle ~17 ms, single requests waited 0.3 s, and the steady
client got half as many answers; now the two p99s are within a few ms.

This machine is shared: a neighbour's burst of a few seconds can land on one phase. So the
comparison is made up to ATTEMPTS times and passes on the first that holds. A slowdown caused
by the applies shows in every attempt; a neighbour's burst does not.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

import aiohttp
import pytest

from .harness import EXAMPLES, Serve

pytestmark = pytest.mark.timeout(90)

PHASE_S = 2.0
WARM_UP_S = 2.0
ROUNDS = 2
ATTEMPTS = 3
STEADY_GAP_S = 0.01
# The bound on what control work may add to the ingress's p99.
ADDED_P99_MS = 10.0
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def big_configmap(i: int) -> bytes:
    """~0.8 MB of valid YAML: one ConfigMap with 10,000 keys."""
    rows = "\n".join(f"  k{n:05d}: " + f"v{n:05d}-{i} " * 8 for n in range(10_000))
    head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big, namespace: default}\ndata:\n"
    return (head + rows + "\n").encode()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def test_a_big_apply_does_not_slow_the_ingress(serve: Callable[..., Serve]) -> None:
    s = serve(EXAMPLES / "hello" / "service.yaml")
    await s.answers("hello.default.localhost", "hello-00001")
    auth = s.auth()
    session = s.client()
    applied: list[tuple[int, float]] = []

    async def steady(until: asyncio.Event, latencies_ms: list[float]) -> None:
        while not until.is_set():
            began = time.perf_counter()
            status, _ = await s.request("hello.default.localhost")
            assert status == 200
            latencies_ms.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(STEADY_GAP_S)

    async def apply_loop(until: asyncio.Event) -> None:
        i = 0
        while not until.is_set():
            async with session.delete(f"{s.api}{CONFIGMAPS}/big", headers=auth) as resp:
                await resp.read()
            body = big_configmap(i)
            i += 1
            began = time.monotonic()
            headers = {**auth, "Content-Type": "application/yaml"}
            url = f"{s.api}{CONFIGMAPS}"
            async with session.post(url, data=io.BytesIO(body), headers=headers) as resp:
                await resp.read()
                applied.append((resp.status, time.monotonic() - began))

    # Warm-up, not counted: the first answers can still come through the activator, until the
    # revision's SKS turns to Serve mode.
    until = asyncio.Event()
    asyncio.get_running_loop().call_later(WARM_UP_S, until.set)
    await steady(until, [])
    async def compare() -> tuple[list[float], list[float]]:
        idle: list[float] = []
        busy: list[float] = []
        for _ in range(ROUNDS):
            for latencies, load in ((idle, False), (busy, True)):
                until = asyncio.Event()
                tasks = [asyncio.ensure_future(steady(until, latencies))]
                if load:
                    tasks.append(asyncio.ensure_future(apply_loop(until)))
                await asyncio.sleep(PHASE_S)
                until.set()
                await asyncio.gather(*tasks)
        return idle, busy

    attempts = []
    for _ in range(ATTEMPTS):
        idle, busy = await compare()
        attempts.append(
            f"idle p99 {p99(idle):.1f} ms ({len(idle)} requests), busy p99 {p99(busy):.1f} ms"
            f" ({len(busy)} requests, max {max(busy):.1f} ms)"
        )
        if p99(busy) - p99(idle) <= ADDED_P99_MS:
            break
    assert applied and all(status == 201 for status, _ in applied), applied
    # Bounded input: a body over kube-apiserver's 3 MiB is refused before it is parsed.
    headers = {**auth, "Content-Type": "application/yaml"}
    too_big = b"a: " + b"x" * (3 * 1024 * 1024) + b"\n"
    async with session.post(
        f"{s.api}{CONFIGMAPS}", data=io.BytesIO(too_big), headers=headers
    ) as resp:
        assert resp.status == 413, await resp.text()
    print(
        f"{len(applied)} applies of {len(big_configmap(0)) / 1e6:.2f} MB "
        f"({sum(t for _, t in applied) / len(applied):.1f} s each); ingress: {attempts}"
    )
    assert p99(busy) - p99(idle) <= ADDED_P99_MS, attempts


async def test_knpy_serve_stops_when_its_control_process_dies(
    serve: Callable[..., Serve],
) -> None:
    """Without its API the platform cannot change anything: knpy serve stops (exit 1) and
    leaves nothing behind, rather than serving on with a dead control plane."""
    import psutil

    s = serve()
    control = [
        p
        for p in psutil.Process(s.proc.pid).children()
        if "controlplane.control" in " ".join(p.cmdline())
    ]
    assert len(control) == 1
    tree = psutil.Process(s.proc.pid).children(recursive=True)
    control[0].kill()
    assert await asyncio.to_thread(s.proc.wait, 30) == 1
    _, alive = await asyncio.to_thread(psutil.wait_procs, tree, 5.0)
    assert not alive, [p.cmdline() for p in alive]
    assert "the control process (API server, controllers) exited" in s.log()
    with pytest.raises(aiohttp.ClientConnectionError):
        await s.request("hello.default.localhost")
