"""The scraper: Knative's sample size, the age split, failures replaced, the HTTP client."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from autoscaler.scraper import (
    MAX_STAT_BYTES,
    HttpScrapeClient,
    ScrapeError,
    StatsScraper,
    average_stats,
    plan_scrape,
    population_mean_sample_size,
)
from shared.seams import Endpoint
from shared.stat_proto import StatData, encode_stat

NOW = 10_000.0
WINDOW_S = 60.0
OLD = NOW - 3600.0  # started an hour ago
YOUNG = NOW - 1.0


def pods(prefix: str, n: int, started_at: float, ready: bool = True) -> list[Endpoint]:
    return [
        Endpoint(f"{prefix}{i}", f"10.0.{len(prefix)}.{i}", 8012, 9090, ready, started_at)
        for i in range(n)
    ]


class FakeClient:
    """Answers every pod with concurrency 4 (knative's testStats), or fails those named."""

    def __init__(self, failing: Callable[[Endpoint], bool] = lambda _: False) -> None:
        self.asked: list[str] = []
        self._failing = failing

    async def scrape(self, endpoint: Endpoint) -> StatData:
        self.asked.append(endpoint.pod_name)
        if self._failing(endpoint):
            raise ScrapeError(f"{endpoint.pod_name}: bad-hair-day")
        return StatData(
            pod_name=endpoint.pod_name,
            average_concurrent_requests=4.0,
            average_proxied_concurrent_requests=1.0,
            request_count=10.0,
            proxied_request_count=2.0,
            process_uptime=NOW - endpoint.started_at,
            timestamp=int(NOW),
        )


# Knative's sample_size_test.go, plus the edges of the "all of them" rule.
@pytest.mark.parametrize(
    ("population", "want"),
    [
        pytest.param(0, 0, id="none"),
        pytest.param(1, 1, id="one"),
        pytest.param(2, 2, id="two"),
        pytest.param(3, 3, id="three-all"),
        pytest.param(4, 4, id="four"),
        pytest.param(5, 4, id="five"),
        pytest.param(10, 7, id="ten"),
        pytest.param(30, 11, id="thirty"),
        pytest.param(100, 14, id="hundred"),
        pytest.param(1000, 16, id="thousand"),
        pytest.param(100_000, 16, id="limit"),
    ],
)
def test_population_mean_sample_size(population: int, want: int) -> None:
    assert population_mean_sample_size(population) == want


def test_plan_skips_unready_and_counts_ready_only() -> None:
    endpoints = pods("old-", 2, OLD) + pods("gone-", 3, OLD, ready=False)
    plan = plan_scrape(endpoints, WINDOW_S, NOW, random.Random(1))
    assert plan.population == 2
    assert plan.sample_size == 2
    assert {e.pod_name for e in plan.candidates} == {"old-0", "old-1"}


def test_plan_age_cutoff_is_inclusive() -> None:
    """A pod exactly a stable window old counts as old (Knative's >= cutoff)."""
    endpoints = pods("edge-", 1, NOW - WINDOW_S) + pods("young-", 4, YOUNG)
    plan = plan_scrape(endpoints, WINDOW_S, NOW, random.Random(1))
    assert plan.candidates[0].pod_name == "edge-0"


async def test_mixed_pods_scrape_every_old_pod_first() -> None:
    """Knative's TestMixedPodShuffle: 5 old of 25; all 5 old are in the sample of 11."""
    client = FakeClient()
    scraper = StatsScraper(client, random.Random(7))
    await scraper.scrape(pods("old-", 5, OLD) + pods("new-", 20, YOUNG), WINDOW_S, NOW)
    assert len(client.asked) == population_mean_sample_size(25)
    assert sum(name.startswith("old-") for name in client.asked) == 5


async def test_enough_old_pods_are_shuffled_and_young_left_alone() -> None:
    """Knative's TestOldPodShuffle: 25 old of 30, a sample of 11, all old, not the same twice."""
    client = FakeClient()
    scraper = StatsScraper(client, random.Random(7))
    endpoints = pods("old-", 25, OLD) + pods("young-", 5, YOUNG)
    await scraper.scrape(endpoints, WINDOW_S, NOW)
    first = set(client.asked)
    client.asked.clear()
    await scraper.scrape(endpoints, WINDOW_S, NOW)
    assert len(first) == len(client.asked) == population_mean_sample_size(30)
    assert all(name.startswith("old-") for name in client.asked)
    assert first != set(client.asked)


async def test_failing_old_pods_fall_back_to_young() -> None:
    """Knative's TestOldPodsFallback: 11 old pods all fail, 11 young ones make the sample."""
    client = FakeClient(failing=lambda e: e.pod_name.startswith("old-"))
    scraper = StatsScraper(client, random.Random(7))
    stat = await scraper.scrape(pods("old-", 11, OLD) + pods("young-", 19, YOUNG), WINDOW_S, NOW)
    assert stat is not None
    assert sum(n.startswith("old-") for n in client.asked) == 11
    assert sum(n.startswith("young-") for n in client.asked) == 11


async def test_some_fail_but_sample_complete() -> None:
    """Knative's TestPodDirectScrapeSomeFailButSuccess: 5 pods, sample 4, one fails.

    The 4 that answer report 4 each: 16 / 4 * 5 = 20 for the revision.
    """
    client = FakeClient(failing=lambda e: e.pod_name == "pod-2")
    stat = await StatsScraper(client, random.Random(3)).scrape(pods("pod-", 5, OLD), WINDOW_S, NOW)
    assert stat is not None
    assert stat.average_concurrent_requests == 20.0
    assert stat.pod_name == "service-scraper"


async def test_pods_exhausted_is_an_error_not_zero() -> None:
    """Knative's TestPodDirectScrapePodsExhausted: 4 pods, sample 4, one fails: no data."""
    client = FakeClient(failing=lambda e: e.pod_name == "pod-2")
    with pytest.raises(ScrapeError, match="3 of a sample of 4"):
        await StatsScraper(client, random.Random(3)).scrape(pods("pod-", 4, OLD), WINDOW_S, NOW)


async def test_all_fail_is_an_error() -> None:
    client = FakeClient(failing=lambda _: True)
    with pytest.raises(ScrapeError, match="0 of a sample of 1"):
        await StatsScraper(client).scrape(pods("pod-", 1, OLD), WINDOW_S, NOW)


async def test_no_ready_pods_is_no_stat_and_no_request() -> None:
    client = FakeClient()
    scraper = StatsScraper(client)
    assert await scraper.scrape([], WINDOW_S, NOW) is None
    assert await scraper.scrape(pods("p-", 2, OLD, ready=False), WINDOW_S, NOW) is None
    assert client.asked == []


def test_average_scales_the_load_figures_only() -> None:
    """10 pods, sample 7, 14 in flight: 14 / 7 * 10 = 20 for the revision."""
    stats = [StatData(f"p{i}", 2.0, 1.0, 3.0, 0.5, 100.0, 7) for i in range(7)]
    got = average_stats(stats, sample_size=7, population=10)
    assert got == StatData("service-scraper", 20.0, 10.0, 30.0, 5.0, 0.0, 0)


# -- the HTTP client, against a real server on loopback ------------------------------------

STAT = StatData("pod-a", 3.5, 1.0, 12.0, 2.0, 61.0, 1_700_000_000)


@pytest.fixture
async def server() -> AsyncIterator[Callable[[web.Response], Endpoint]]:
    """A loopback server whose /metrics answers with the response a test sets."""
    answer: list[web.Response] = []

    async def metrics(request: web.Request) -> web.Response:
        assert request.headers["Accept"] == "application/protobuf"
        return answer[-1]

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    def serve(response: web.Response) -> Endpoint:
        answer.append(response)
        return Endpoint("pod-a", "127.0.0.1", 1, port)

    yield serve
    await runner.cleanup()


def protobuf(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/protobuf")


async def test_http_client_decodes_a_stat(
    server: Callable[[web.Response], Endpoint],
) -> None:
    endpoint = server(protobuf(encode_stat(STAT)))
    async with aiohttp.ClientSession() as session:
        assert await HttpScrapeClient(session).scrape(endpoint) == STAT


@pytest.mark.parametrize(
    ("response", "error"),
    [
        pytest.param(lambda: protobuf(b"", status=503), "HTTP status 503", id="status"),
        pytest.param(lambda: web.Response(text="x 1\n"), "unsupported metric type", id="text"),
        pytest.param(lambda: protobuf(b"\xff\xff\xff"), "invalid", id="garbage"),
        pytest.param(lambda: protobuf(b"\x00" * (MAX_STAT_BYTES + 1)), "over", id="too-long"),
    ],
)
async def test_http_client_refuses(
    server: Callable[[web.Response], Endpoint],
    response: Callable[[], web.Response],
    error: str,
) -> None:
    endpoint = server(response())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ScrapeError, match=error):
            await HttpScrapeClient(session).scrape(endpoint)


async def test_http_client_connection_refused_is_a_scrape_error() -> None:
    from tests.queueproxy.integration.qpharness import closed_port

    async with aiohttp.ClientSession() as session:
        with pytest.raises(ScrapeError, match=r"GET http://127\.0\.0\.1"):
            await HttpScrapeClient(session).scrape(Endpoint("p", "127.0.0.1", 1, closed_port()))
