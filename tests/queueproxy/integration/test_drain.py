"""SIGTERM under load: probes fail at once, no request is lost, the process exits when quiet."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from .qpharness import StartStack, kubelet_probe

pytestmark = pytest.mark.timeout(30)

CLIENTS = 8
DRAIN_PERIOD_S = 1.0
# After the last request: the drain period, then shutdown; generous for a loaded CI box.
EXIT_BOUND_S = DRAIN_PERIOD_S + 4.0


async def _client(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[int | str]:
    """Loop /sleep?ms=50 until stop; every outcome is a status or the text of an error."""
    outcomes: list[int | str] = []
    while not stop.is_set():
        try:
            async with session.get(url + "/sleep?ms=50") as resp:
                await resp.read()
                outcomes.append(resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    return outcomes


async def test_drain_under_load(stack: StartStack) -> None:
    s = await stack(qp_env={"QUEUE_DRAIN_PERIOD_SECONDS": str(int(DRAIN_PERIOD_S))})
    stop = asyncio.Event()
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=10),
        ) as client,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as admin,
    ):
        clients = [asyncio.create_task(_client(client, s.qp.url, stop)) for _ in range(CLIENTS)]
        await asyncio.sleep(1.0)
        assert await kubelet_probe(admin, s.qp) == 200

        async def wait_for_drain() -> tuple[int, float]:
            async with admin.get(s.qp.admin_url + "/wait-for-drain") as resp:
                await resp.read()
                return resp.status, time.monotonic()

        drain_waiter = asyncio.create_task(wait_for_drain())
        await asyncio.sleep(0.05)
        s.qp.child.terminate()
        term_at = time.monotonic()

        await asyncio.sleep(0.2)
        probe_after_term = await kubelet_probe(admin, s.qp, timeout_s=3)
        await asyncio.sleep(max(0.0, term_at + 0.5 - time.monotonic()))
        stop.set()
        outcomes = [o for results in await asyncio.gather(*clients) for o in results]
        last_request_at = time.monotonic()

        code = await s.qp.child.wait_exit(EXIT_BOUND_S)
        exited_at = time.monotonic()
        drain_status, drained_at = await asyncio.wait_for(drain_waiter, 2)

    failures = [o for o in outcomes if o != 200]
    assert not failures, f"{len(failures)} of {len(outcomes)} requests lost: {failures[:10]}"
    assert len(outcomes) >= CLIENTS * 10, f"too little load to prove anything: {len(outcomes)}"
    assert probe_after_term == 503, "kubelet probe still passed after SIGTERM"
    assert code is not None, (
        f"queue-proxy still running {EXIT_BOUND_S} s after the last request\n"
        + s.qp.child.describe()
    )
    assert code == 0, s.qp.child.describe()
    quiet_s = exited_at - last_request_at
    assert quiet_s >= DRAIN_PERIOD_S - 0.3, f"exited {quiet_s:.2f} s after the last request"
    assert drain_status == 200
    assert drained_at <= exited_at + 0.1


async def test_drain_when_idle_exits_after_period(stack: StartStack) -> None:
    s = await stack(qp_env={"QUEUE_DRAIN_PERIOD_SECONDS": str(int(DRAIN_PERIOD_S))})
    term_at = time.monotonic()
    s.qp.child.terminate()
    code = await s.qp.child.wait_exit(EXIT_BOUND_S)
    assert code == 0, s.qp.child.describe()
    assert time.monotonic() - term_at >= DRAIN_PERIOD_S - 0.3


async def test_in_flight_request_outlives_sigterm(stack: StartStack) -> None:
    """A 2.5-s request accepted before SIGTERM completes; the process waits for it."""
    s = await stack(qp_env={"QUEUE_DRAIN_PERIOD_SECONDS": str(int(DRAIN_PERIOD_S))})
    async with aiohttp.ClientSession() as client:

        async def slow() -> int:
            async with client.get(s.qp.url + "/sleep?ms=2500") as resp:
                await resp.read()
                return resp.status

        request = asyncio.create_task(slow())
        await asyncio.sleep(0.3)
        s.qp.child.terminate()
        assert await asyncio.wait_for(request, 5) == 200
        assert s.qp.child.alive() or s.qp.child.proc.returncode == 0
    code = await s.qp.child.wait_exit(EXIT_BOUND_S)
    assert code == 0, s.qp.child.describe()
