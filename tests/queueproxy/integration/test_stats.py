"""The autoscaler's view: the Stat protobuf, its Prometheus twin, and the user metrics."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .qpharness import POD_NAME, DecodedStat, StartStack, fetch_stat

pytestmark = pytest.mark.timeout(30)

LOAD_S = 3.0
SLEEP_MS = 100


async def _steady_load(
    session: aiohttp.ClientSession, url: str, stop_at: float, headers: dict[str, str]
) -> int:
    """One client in a loop of /sleep?ms=100 until stop_at; returns how many it sent."""
    sent = 0
    while time.monotonic() < stop_at:
        async with session.get(f"{url}/sleep?ms={SLEEP_MS}", headers=headers) as resp:
            assert resp.status == 200
            await resp.read()
        sent += 1
    return sent


async def _load_and_sample(
    stack: StartStack, plain: int, proxied: int
) -> tuple[DecodedStat, list[int], str]:
    """Run plain + proxied clients for LOAD_S; read the Stat 2.5 s in (windows 1-2 s full)."""
    s = await stack()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        stop_at = time.monotonic() + LOAD_S
        activator = {"K-Proxy-Request": "activator"}
        clients = [
            asyncio.create_task(_steady_load(client, s.qp.url, stop_at, {})) for _ in range(plain)
        ] + [
            asyncio.create_task(_steady_load(client, s.qp.url, stop_at, activator))
            for _ in range(proxied)
        ]
        await asyncio.sleep(2.5)
        stat = await fetch_stat(client, s.qp)
        async with client.get(s.qp.metrics_url + "/metrics") as resp:
            assert resp.status == 200
            prometheus = await resp.text()
        sent = await asyncio.gather(*clients)
    return stat, sent, prometheus


async def test_stat_steady_concurrency(stack: StartStack) -> None:
    """4 clients each keep one 100-ms request in flight: concurrency ~4 and ~40 requests/s."""
    stat, sent, _ = await _load_and_sample(stack, plain=4, proxied=0)
    assert stat.pod_name == POD_NAME
    assert 3.5 <= stat.average_concurrent_requests <= 4.5, stat
    # 4 clients x (1 s / ~0.1 s) = 40 per second at best; proxy and client overhead lower it.
    rate = sum(sent) / LOAD_S
    assert 25 <= stat.request_count <= 44, (stat, rate)
    assert abs(stat.request_count - rate) <= 8, (stat, rate)
    assert stat.average_proxied_concurrent_requests == 0, stat
    assert stat.proxied_request_count == 0, stat
    assert 2 <= stat.process_uptime <= 30, stat


async def test_stat_counts_proxied(stack: StartStack) -> None:
    """2 clients direct and 2 through the activator: the proxied half shows in both fields."""
    stat, _, _ = await _load_and_sample(stack, plain=2, proxied=2)
    assert 3.5 <= stat.average_concurrent_requests <= 4.5, stat
    assert 1.5 <= stat.average_proxied_concurrent_requests <= 2.5, stat
    assert 25 <= stat.request_count <= 44, stat
    assert 0.35 <= stat.proxied_request_count / stat.request_count <= 0.65, stat


async def test_stat_idle(stack: StartStack, session: aiohttp.ClientSession) -> None:
    s = await stack()
    await asyncio.sleep(1.5)
    stat = await fetch_stat(session, s.qp)
    assert stat.pod_name == POD_NAME
    assert stat.average_concurrent_requests == 0, stat
    assert stat.request_count == 0, stat


async def test_stat_prometheus_text(stack: StartStack) -> None:
    """Without Accept: application/protobuf the same figures come as Prometheus text."""
    _, _, text = await _load_and_sample(stack, plain=4, proxied=0)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "queue_average_concurrent_requests" in families, sorted(families)
    (sample,) = families["queue_average_concurrent_requests"].samples
    assert 3.5 <= sample.value <= 4.5, sample
    assert sample.labels.get("destination_pod") == POD_NAME, sample


async def test_user_metrics(stack: StartStack, session: aiohttp.ClientSession) -> None:
    """Request counts by status on USER_METRICS_PORT match what was sent; probes not counted."""
    s = await stack()
    for _ in range(7):
        async with session.get(s.qp.url + "/status/201") as resp:
            assert resp.status == 201
    for _ in range(3):
        async with session.get(s.qp.url + "/status/503") as resp:
            assert resp.status == 503
    async with session.get(s.qp.url + "/", headers={"K-Network-Probe": "queue"}) as resp:
        assert resp.status == 200
    async with session.get(s.qp.user_metrics_url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith(("_count", "_total")):
                continue
            for code in ("200", "201", "503"):
                if code in sample.labels.values():
                    counts[f"{sample.name}/{code}"] = (
                        counts.get(f"{sample.name}/{code}", 0) + sample.value
                    )
    assert counts.get("kn_serving_invocation_duration_seconds_count/201") == 7, (counts, text)
    assert counts.get("kn_serving_invocation_duration_seconds_count/503") == 3, counts
    assert "kn_serving_invocation_duration_seconds_count/200" not in counts, (
        "the network probe was counted as a request",
        counts,
    )
