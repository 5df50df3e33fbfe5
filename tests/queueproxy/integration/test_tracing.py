"""OpenTelemetry through the real queue-proxy: spans for the proxy and the breaker wait, and the
W3C trace context handed to the app under the caller's trace."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import pytest

from .qpharness import StartStack

pytestmark = pytest.mark.timeout(30)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def _spans(stdout: Callable[[], str], want: int) -> list[str]:
    deadline = time.monotonic() + 5
    while True:
        names = [
            line.split('"name": ')[1].strip().strip('",')
            for line in stdout().splitlines()
            if '"name": "kn.queueproxy' in line
        ]
        if len(names) >= want or time.monotonic() > deadline:
            return names
        await asyncio.sleep(0.1)


async def test_spans_and_context_reach_the_app(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    cfg = {"tracing": {"protocol": "stdout", "samplingRate": 1}}
    s = await stack(qp_env={"OBSERVABILITY_CONFIG": json.dumps(cfg), "CONTAINER_CONCURRENCY": "1"})
    async with session.get(s.qp.url + "/headers", headers={"traceparent": PARENT}) as resp:
        assert resp.status == 200
        seen = (await resp.json())["headers"]
    traceparent = seen.get("traceparent") or seen.get("Traceparent")
    assert traceparent is not None, seen
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert span_id != "00f067aa0ba902b7", "the app's parent must be the queue-proxy's span"

    # Two requests at containerConcurrency 1: the second waits in the breaker.
    await asyncio.gather(
        *(session.get(s.qp.url + "/sleep?ms=300") for _ in range(2))
    )
    names = await _spans(s.qp.child.stdout, 4)
    assert names.count("kn.queueproxy.proxy") >= 3, names
    assert "kn.queueproxy.wait" in names, names


async def test_no_spans_when_tracing_off(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    s = await stack()
    async with session.get(s.qp.url + "/headers", headers={"traceparent": PARENT}) as resp:
        seen = (await resp.json())["headers"]
    # Passed through untouched.
    assert (seen.get("traceparent") or seen.get("Traceparent")) == PARENT
    await asyncio.sleep(0.3)
    assert "kn.queueproxy" not in s.qp.child.stdout()
