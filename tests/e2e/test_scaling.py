"""Scaling end to end: to zero when idle, a burst through the activator, a rolling change.

The autoscaler's windows are shortened through Knative's own ``config-autoscaler`` ConfigMap,
applied with the service (stable window 6 s, grace 2 s), so an idle revision is at zero pods
about 6 s + 2 s after its last request instead of Knative's 60 s + 30 s.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import pytest

from .harness import FAST_AUTOSCALER, Serve, hello_yaml, slow_mode

HELLO = "hello.default.localhost"
MAX_SCALE = 3
BURST = 100
# Each burst request holds its pod for this long, so 100 of them at containerConcurrency 10
# need 10 pod-slots of 0.5 s: long enough that the autoscaler sees the load (its panic window
# is 1 s here) and wants 100 / (10 * 0.7) = 15 pods, which max-scale caps at 3.
BURST_PATH = "/sleep?ms=500"


async def _actual(s: Serve, revision: str) -> int:
    return int((await s.revision(revision))["status"]["actualReplicas"])


@pytest.mark.timeout(120)
async def test_idle_to_zero_then_100_concurrent_through_the_activator(
    serve: Callable[..., Serve],
) -> None:
    s = serve()
    annotations = f"autoscaling.knative.dev/max-scale: '{MAX_SCALE}'"
    await s.apply(FAST_AUTOSCALER + "---" + hello_yaml(annotations=annotations, cc=10))
    await s.answers(HELLO, "hello-00001")
    await s.until(lambda: _at_zero(s, "hello-00001"), "the idle revision to reach zero pods")
    assert (await s.revision("hello-00001"))["status"]["mode"] == "Proxy"  # the SKS mode

    # The burst, with a watcher of the pod count beside it: knpy get (actual and desired)
    # and the seams' endpoints (every pod, not yet ready ones too).
    done = asyncio.Event()
    peaks = {"actual": 0, "desired": 0, "pods": 0}

    async def watch() -> None:
        while not done.is_set():
            status = (await s.revision("hello-00001"))["status"]
            peaks["actual"] = max(peaks["actual"], status["actualReplicas"])
            peaks["desired"] = max(peaks["desired"], status["desiredReplicas"])
            peaks["pods"] = max(peaks["pods"], len(await s.pods("hello-00001")))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    try:
        result = await s.load(HELLO, clients=BURST, requests=BURST, path=BURST_PATH)
    finally:
        elapsed_s = time.monotonic() - started
        await asyncio.sleep(2.0)  # the decisions that follow the burst count too
        done.set()
        await watcher

    assert result.failures == [], result.failures[:5]
    assert result.statuses == {200: BURST}
    assert peaks["pods"] <= MAX_SCALE and peaks["desired"] <= MAX_SCALE, peaks
    assert peaks["actual"] <= MAX_SCALE, peaks
    # It did scale up past one pod (bounded), rather than pushing 100 through one.
    assert peaks["desired"] >= 2, peaks
    assert elapsed_s < 30, elapsed_s
    cold = (await s.revision("hello-00001"))["status"]["coldStarts"]
    assert cold["count"] >= 1 and cold["p50_s"] > 0, cold


async def _at_zero(s: Serve, revision: str) -> bool:
    return await _actual(s, revision) == 0 and await s.pods(revision) == []


# Short form: one rolling change under 8 clients; full form: three in a row under 32.
ROLLS = 3 if slow_mode() else 1
LOAD_CLIENTS = 32 if slow_mode() else 8


@pytest.mark.slow
@pytest.mark.timeout(60 + 40 * ROLLS)
async def test_rolling_change_under_steady_load_loses_no_request(
    serve: Callable[..., Serve],
) -> None:
    s = serve()
    await s.apply(FAST_AUTOSCALER + "---" + hello_yaml())
    await s.answers(HELLO, "hello-00001")
    stop = asyncio.Event()
    load = asyncio.create_task(s.load(HELLO, clients=LOAD_CLIENTS, until=stop))
    try:
        for n in range(2, 2 + ROLLS):
            old, new = f"hello-{n - 1:05d}", f"hello-{n:05d}"
            await asyncio.sleep(1.0)
            await s.apply(hello_yaml(env=str(n)))
            await s.answers(HELLO, new)
            # The old revision, now without traffic, goes to zero: its pods drain under load.
            await s.until(functools.partial(_at_zero, s, old), f"{old} to drain to zero", 40)
    finally:
        stop.set()
        result = await load
    assert result.failures == [], (len(result.failures), result.failures[:5])
    last = f"hello-{1 + ROLLS:05d}"
    assert result.revisions[last] > 0, result.revisions
    assert set(result.revisions) == {f"hello-{n:05d}" for n in range(1, 2 + ROLLS)}
    assert await _actual(s, last) >= 1
