"""Scraping one revision's pods for their Stat: the sample, the requests, the extrapolation.

Theory of operation (Knative's ``serviceScraper.scrapePods``, pkg/autoscaler/metrics/
stats_scraper.go): every second the collector asks for one Stat that stands for the whole
revision. Asking every pod of a 500-pod revision each second would cost the autoscaler more than
the revision, so a revision is *sampled*: ``population_mean_sample_size`` pods (at most 16 for
any population, all of them up to 3 pods), summed, then scaled up by population / sample. E.g.
10 ready pods give a sample of 7; if those 7 report 14 concurrent requests in all, the revision
is taken to have 14 / 7 * 10 = 20.

Pods younger than the stable window are avoided when there are enough older ones: a pod that
just started has not yet filled its queue-proxy's windows and would drag the average down.
Which pods to ask is decided synchronously (``plan_scrape``, seeded randomness in tests), and
the asking is the async part (``StatsScraper.scrape``).

A pod that fails to answer is replaced by the next candidate; when the candidates run out
before the sample is complete the scrape fails as a whole and records *nothing*: a partial sum
extrapolated from too few pods, or a zero, would tell the decider the revision is idle when it
is not (missing data is "no data", never zero).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from shared.seams import Endpoint
from shared.stat_proto import StatData, decode_stat

__all__ = [
    "MAX_STAT_BYTES",
    "SCRAPE_TIMEOUT_S",
    "HttpScrapeClient",
    "ScrapeClient",
    "ScrapeError",
    "ScrapePlan",
    "StatsScraper",
    "average_stats",
    "plan_scrape",
    "population_mean_sample_size",
]

# Knative's httpClientTimeout: a pod that has not answered in 3 s is not going to help a
# decision taken every 2 s.
SCRAPE_TIMEOUT_S = 3.0
# Knative reads at most this much of a Stat body (statFromProto): six 8-byte fields with
# their tags, a pod name of up to 256 bytes, 20 spare. Anything longer is not a Stat.
MAX_STAT_BYTES = 6 * 10 + 256 + 20
PROTOBUF_MIME = "application/protobuf"
METRICS_PATH = "/metrics"
# The pod name Knative gives the extrapolated, revision-wide Stat.
SCRAPER_POD_NAME = "service-scraper"

# Knative's sample_size.go: a 95 % confidence (z = 1.96) that the sample mean lies within
# 5 of the population mean, assuming a variance of 100 in per-pod concurrency.
_CRITICAL_VALUE_SQUARED = 1.96 * 1.96
_MARGIN_OF_ERROR_SQUARED = 5.0 * 5.0
_POPULATION_VARIANCE = 100.0
_INFINITE_POPULATION_SAMPLE = (
    _CRITICAL_VALUE_SQUARED * _POPULATION_VARIANCE / _MARGIN_OF_ERROR_SQUARED
)


def population_mean_sample_size(population: int) -> int:
    """How many of ``population`` pods to scrape (Knative's populationMeanSampleSize).

    Cochran's formula for an infinite population (15.37) corrected for a finite one; with
    3 pods or fewer every pod is asked. E.g. 10 pods -> 7, 100 -> 14, 10,000 -> 16.
    """
    if population <= 3:
        return max(population, 0)
    n0 = _INFINITE_POPULATION_SAMPLE
    return math.ceil(population * n0 / (population + n0 - 1))


@dataclass(frozen=True, slots=True)
class ScrapePlan:
    """Which pods to ask, in order, and how many answers make a sample."""

    candidates: tuple[Endpoint, ...]  # the preferred first, the rest as replacements
    sample_size: int
    population: int  # the ready pods the sample stands for


def plan_scrape(
    endpoints: Sequence[Endpoint], window_s: float, now: float, rng: random.Random
) -> ScrapePlan:
    """Decide which ready pods to scrape (Knative's PodIPsSplitByAge and the shuffle).

    Pods that have run for at least ``window_s`` (the stable window) come first. If there
    are at least ``sample_size`` of them they are shuffled so each scrape asks a random
    subset; otherwise all of them are asked and the young ones, shuffled, fill the gap.
    """
    older: list[Endpoint] = []
    younger: list[Endpoint] = []
    for endpoint in endpoints:
        if not endpoint.ready:
            continue
        (older if now - endpoint.started_at >= window_s else younger).append(endpoint)
    population = len(older) + len(younger)
    sample_size = population_mean_sample_size(population)
    rng.shuffle(younger if len(older) < sample_size else older)
    return ScrapePlan(tuple(older + younger), sample_size, population)


def average_stats(stats: Sequence[StatData], sample_size: int, population: int) -> StatData:
    """The revision-wide Stat: the sample's sum scaled by population / sample (computeAverages).

    Only the four load figures are extrapolated, as in Knative; uptime and timestamp have no
    meaning for a sum of pods and stay zero.
    """
    scale = population / sample_size
    return StatData(
        pod_name=SCRAPER_POD_NAME,
        average_concurrent_requests=sum(s.average_concurrent_requests for s in stats) * scale,
        average_proxied_concurrent_requests=(
            sum(s.average_proxied_concurrent_requests for s in stats) * scale
        ),
        request_count=sum(s.request_count for s in stats) * scale,
        proxied_request_count=sum(s.proxied_request_count for s in stats) * scale,
    )


class ScrapeError(Exception):
    """A pod, or a whole revision's sample, could not be scraped."""


class ScrapeClient(Protocol):
    """Fetches one pod's current Stat; raises ScrapeError when it cannot."""

    async def scrape(self, endpoint: Endpoint) -> StatData: ...


class HttpScrapeClient:
    """``GET http://pod:metrics_port/metrics`` with ``Accept: application/protobuf``.

    One aiohttp session for every pod of every revision, keep-alive on, so a steady scrape is
    one request on an open connection per pod per second (Knative's keepAliveTransport). A
    semaphore bounds the requests in flight, so 1,000 pods do not open 1,000 sockets at once.
    """

    def __init__(self, session: aiohttp.ClientSession, max_in_flight: int = 100) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._session = session
        self._slots = asyncio.Semaphore(max_in_flight)
        self._headers = {"Accept": PROTOBUF_MIME}
        self._timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)

    def __repr__(self) -> str:
        return f"<HttpScrapeClient free_slots={self._slots._value}>"

    async def scrape(self, endpoint: Endpoint) -> StatData:
        url = f"http://{endpoint.host}:{endpoint.metrics_port}{METRICS_PATH}"
        async with self._slots:
            try:
                async with self._session.get(
                    url, headers=self._headers, timeout=self._timeout
                ) as resp:
                    if not 200 <= resp.status < 300:
                        raise ScrapeError(f"GET {url} returned HTTP status {resp.status}")
                    if resp.content_type != PROTOBUF_MIME:
                        raise ScrapeError(f"GET {url}: unsupported metric type {resp.content_type}")
                    if (resp.content_length or 0) > MAX_STAT_BYTES:
                        raise ScrapeError(f"GET {url}: Stat body over {MAX_STAT_BYTES} bytes")
                    body = await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                raise ScrapeError(f"GET {url}: {type(err).__name__}: {err}") from err
        if len(body) > MAX_STAT_BYTES:
            raise ScrapeError(f"GET {url}: Stat body over {MAX_STAT_BYTES} bytes")
        try:
            return decode_stat(body)
        except ValueError as err:
            raise ScrapeError(f"GET {url}: {err}") from err


class StatsScraper:
    """Scrapes a sample of one revision's pods and extrapolates to the revision."""

    def __init__(self, client: ScrapeClient, rng: random.Random | None = None) -> None:
        self._client = client
        self._rng = rng if rng is not None else random.Random()

    def __repr__(self) -> str:
        return f"<StatsScraper client={self._client!r}>"

    async def scrape(
        self, endpoints: Sequence[Endpoint], window_s: float, now: float
    ) -> StatData | None:
        """The revision's Stat, or None when it has no ready pod (nothing to record).

        Raises:
            ScrapeError: too few pods answered to make up the sample.
        """
        plan = plan_scrape(endpoints, window_s, now, self._rng)
        if plan.population == 0:
            return None
        candidates = iter(plan.candidates)
        results: list[StatData] = []
        failures: list[ScrapeError] = []

        async def worker() -> None:
            # Like Knative's errgroup workers: each takes the next untried pod until one
            # answers; the candidates are shared, so a failure costs one replacement.
            for endpoint in candidates:
                try:
                    results.append(await self._client.scrape(endpoint))
                    return
                except ScrapeError as err:
                    failures.append(err)

        if plan.sample_size == 1:
            await worker()
        else:
            await asyncio.gather(*(worker() for _ in range(plan.sample_size)))
        if len(results) < plan.sample_size:
            last = failures[-1] if failures else None
            raise ScrapeError(
                f"{len(results)} of a sample of {plan.sample_size} pods answered "
                f"({len(failures)} failed; last: {last})"
            )
        return average_stats(results, plan.sample_size, plan.population)
