"""The autoscaler's engine: scraping, stat intake and the decider ticks, around the pure cores.

Theory of operation. ``AutoscalerEngine`` is the part of Knative's autoscaler process
(cmd/autoscaler/main.go) that does not talk to the Kubernetes API: the PodAutoscaler
reconciler (reconciler.py) tells it which revisions to decide (``upsert``/``delete``, each
resolved by resolve.py from the PA's ``autoscaling.knative.dev/*`` annotations and the
``config-autoscaler`` ConfigMap into a ``RevisionScaling``), and it tells the reconciler after
every decision (``on_tick``), which reads the latest one (``latest``) and makes the cluster
match it.

- every second each revision's ready pods (a ``PodSource``: the Pod informer's index) are
  sampled and scraped (scraper.py) into the collector; a revision whose previous scrape is
  still running skips the tick, like Knative's per-collection ticker;
- activators push Stats to the stat server (WebSocket on the stat port); a Stat for a revision
  whose bucket another replica leads is handed to ``forward``; otherwise it is recorded at its
  own timestamp (only for revisions with a Metric, i.e. decided here, as Knative's collector)
  and may poke its revision's decider;
- every 2 s every revision is decided (multiscaler.py, kpa.py) and ``on_tick`` is called for
  it, changed or not: the reconciler is level-based and re-checks the scale target each time;
- Prometheus metrics on the metrics port (metrics.py).

Failure never travels between revisions: a scrape error is counted and logged (once per
change of error, as Knative's collector does), records nothing, and the revision keeps its
last decision; an exception while ticking one revision is logged and the next is ticked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from autoscaler.collector import MetricCollector
from autoscaler.config import EngineConfig
from autoscaler.configmap import AutoscalerConfig
from autoscaler.kpa import ActiveState, PodAutoscalerStatus
from autoscaler.metrics import AutoscalerMetrics, RevisionLabels
from autoscaler.multiscaler import MultiScaler, RevisionScaling, Tick
from autoscaler.resolve import resolve_scaling
from autoscaler.scaling import TICK_INTERVAL_S
from autoscaler.scraper import HttpScrapeClient, ScrapeClient, ScrapeError, StatsScraper
from autoscaler.statserver import StatServer
from shared.metrics import render_text
from shared.seams import Endpoint, RevisionKey, RevisionSpec
from shared.stat_proto import StatData

__all__ = [
    "SCRAPE_INTERVAL_S",
    "AutoscalerEngine",
    "Forward",
    "OnTick",
    "PodSource",
]

log = logging.getLogger(__name__)

# Knative's scrapeTickInterval.
SCRAPE_INTERVAL_S = 1.0
# Where in each second scrapes start: half a second from either bucket boundary.
SCRAPE_PHASE_S = 0.5
# Revisions decided between two yields to the event loop: keeps a 10,000-revision tick from
# holding the loop (and the stat server) for more than a few milliseconds at a time.
TICK_BATCH = 256
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

Clock = Callable[[], float]
# Called after every decision of a revision (the reconciler enqueues the PodAutoscaler).
OnTick = Callable[[RevisionKey], None]
# A Stat for a revision this replica does not decide: True when it was handed elsewhere.
Forward = Callable[[RevisionKey, StatData], bool]


class PodSource(Protocol):
    """A revision's pods as the scraper reaches them (the Pod informer's index)."""

    def endpoints(self, key: RevisionKey) -> tuple[Endpoint, ...]: ...


def _labels(spec: RevisionSpec) -> RevisionLabels:
    return (spec.key.namespace, spec.service, spec.configuration, spec.key.name)


def _ready(endpoints: tuple[Endpoint, ...]) -> int:
    return sum(1 for e in endpoints if e.ready)


class AutoscalerEngine:
    """The decider half of Knative's autoscaler process; see the module docstring.

    Use ``async with AutoscalerEngine(...) as engine:`` (or ``start``/``stop``); the actual
    ports are ``engine.stat_port`` and ``engine.metrics_port`` once started.
    """

    def __init__(
        self,
        cfg: EngineConfig,
        pods: PodSource,
        clock: Clock = time.time,
        *,
        on_tick: OnTick | None = None,
        forward: Forward | None = None,
        scrape_client: ScrapeClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self._pods = pods
        self._clock = clock
        self._on_tick = on_tick
        self._forward = forward
        # Set by the process once it elects: does this replica lead that bucket?
        self.owns_bucket: Callable[[str], bool] | None = None
        self._rng = rng if rng is not None else random.Random()
        self._scraper = None if scrape_client is None else StatsScraper(scrape_client, self._rng)
        self.collector = MetricCollector()
        self.multiscaler = MultiScaler(self.collector)
        self.metrics = AutoscalerMetrics()
        self.stat_server = StatServer(self._on_stat, self.record, self._owns_bucket)
        self._specs: dict[RevisionKey, RevisionSpec] = {}
        self._ticks: dict[RevisionKey, Tick] = {}
        self._before: dict[RevisionKey, ActiveState | None] = {}  # Active before the last tick
        self._stale: set[RevisionKey] = set()  # to resolve again (config-autoscaler changed)
        self._scraping: set[RevisionKey] = set()
        self._poked: set[RevisionKey] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self.stat_port = 0
        self.metrics_port = 0

    def __repr__(self) -> str:
        return (
            f"<AutoscalerEngine revisions={len(self.multiscaler)} "
            f"stat_port={self.stat_port} metrics_port={self.metrics_port}>"
        )

    async def __aenter__(self) -> AutoscalerEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the stat and metrics ports and start the scrape and decide loops."""
        if self._scraper is None:
            connector = aiohttp.TCPConnector(
                limit=self.cfg.max_scrapes_in_flight, limit_per_host=0, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(connector=connector)
            client = HttpScrapeClient(self._session, self.cfg.max_scrapes_in_flight)
            self._scraper = StatsScraper(client, self._rng)
        self.stat_port = await self._serve(self.stat_server.app, self.cfg.stat_port)
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", self._handle_metrics)
        self.metrics_port = await self._serve(metrics_app, self.cfg.metrics_port)
        self._tasks = [
            asyncio.create_task(self._scrape_loop(), name="autoscaler-scrape"),
            asyncio.create_task(self._decide_loop(), name="autoscaler-decide"),
        ]
        log.info(
            "autoscaler listening: stats on %s:%d, metrics on %s:%d",
            self.cfg.bind_host,
            self.stat_port,
            self.cfg.bind_host,
            self.metrics_port,
        )

    async def stop(self) -> None:
        """Close activator connections (code 1012), stop the loops, release the ports."""
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.cfg.bind_host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    # -- revisions ---------------------------------------------------------------------------
    def upsert(self, spec: RevisionSpec) -> RevisionScaling | None:
        """Decide for this revision from now on (Knative's deciders.Create/Update).

        Returns:
            The resolved scaling, or None for a revision of another class (not decided).

        Raises:
            ConfigError: an ``autoscaling.knative.dev/*`` annotation is invalid.
        """
        key = spec.key
        if self._specs.get(key) == spec and key not in self._stale:
            return self.multiscaler.scaling(key)
        self._stale.discard(key)
        scaling = resolve_scaling(spec, self.cfg.autoscaler)
        if scaling is None:
            self.delete(key)
            return None
        ready = _ready(self._pods.endpoints(key))
        self.multiscaler.create_or_update(key, scaling, ready, self._clock())
        self._specs[key] = spec
        return scaling

    def delete(self, key: RevisionKey) -> None:
        """Stop deciding and collecting for a revision (deleted, or led elsewhere)."""
        if self._specs.pop(key, None) is not None:
            log.info("%s: no longer decided here", key)
        self._ticks.pop(key, None)
        self._before.pop(key, None)
        self.multiscaler.delete(key)
        self.metrics.remove(key)

    def reconfigure(self, autoscaler: AutoscalerConfig) -> None:
        """A new config-autoscaler: every revision resolves again at its next upsert."""
        self.cfg = replace(self.cfg, autoscaler=autoscaler)
        self._stale = set(self._specs)

    def latest(self, key: RevisionKey) -> Tick | None:
        """The revision's last decision (Knative's decider.Status), None before the first."""
        return self._ticks.get(key)

    def active_before(self, key: RevisionKey) -> ActiveState | None:
        """The Active state the last decision started from (was it activating?)."""
        return self._before.get(key)

    def restore(self, key: RevisionKey, status: PodAutoscalerStatus) -> None:
        """Continue from the PA's recorded status (a new leader, a restart)."""
        self.multiscaler.restore_status(key, status)

    async def tick(self, key: RevisionKey) -> Tick | None:
        """Decide one revision now (its first reconcile, a poke)."""
        await self._tick_one(key, self._clock())
        return self._ticks.get(key)

    def decided(self) -> list[RevisionKey]:
        return list(self._specs)

    # -- stats -------------------------------------------------------------------------------
    def _on_stat(self, key: RevisionKey, stat: StatData) -> None:
        """An activator's Stat: forward it, or record it and poke a revision at zero."""
        self.metrics.stat_messages.value += 1
        if self._forward is not None and self._forward(key, stat):
            return
        if key not in self.collector:
            return  # no Metric here: Knative's collector drops it too
        # Knative stamps a Stat without a timestamp on arrival and records at its timestamp.
        now = float(stat.timestamp) if stat.timestamp else self._clock()
        self.collector.record(key, now, stat)
        if key not in self._poked and self.multiscaler.wants_poke(key, stat):
            self._poked.add(key)
            self._spawn(self._poke(key))

    def _owns_bucket(self, bucket: str) -> bool:
        return self.owns_bucket is None or self.owns_bucket(bucket)

    def record(self, key: RevisionKey, stat: StatData) -> None:
        """A Stat forwarded by another replica: this one leads its bucket (no re-forward)."""
        forward, self._forward = self._forward, None
        try:
            self._on_stat(key, stat)
        finally:
            self._forward = forward

    async def _poke(self, key: RevisionKey) -> None:
        """Tick one revision now (Knative's pokeCh), outside the 2-s ticker."""
        try:
            await self._tick_one(key, self._clock())
        finally:
            self._poked.discard(key)

    async def _scrape_loop(self) -> None:
        # Scrapes start at the middle of each clock second and are recorded at that time, so
        # each lands in a bucket of its own. Knative records at completion time, which lets a
        # late scrape and a prompt one share a 1-s bucket and double that second; its 6-s and
        # longer panic windows hide that, a 1-s panic window (stable 6 s x 10 %) would not.
        async for scheduled in _clock_ticker(SCRAPE_INTERVAL_S, SCRAPE_PHASE_S, self._clock):
            self._start_scrapes(scheduled)

    def _start_scrapes(self, now: float) -> list[asyncio.Task[None]]:
        """One scrape per scraped revision whose previous scrape has finished."""
        started = []
        for key in self.collector.revisions():
            spec = self.collector.spec(key)
            if spec is None or not spec.scraped or key in self._scraping:
                continue
            self._scraping.add(key)
            started.append(self._spawn(self._scrape(key, spec.stable_window_s, now)))
        return started

    async def scrape_all(self) -> None:
        """Scrape every revision once and wait for all of them (tests, benchmarks)."""
        await asyncio.gather(*self._start_scrapes(self._clock()))

    async def _scrape(self, key: RevisionKey, window_s: float, now: float) -> None:
        assert self._scraper is not None
        started = time.perf_counter()
        try:
            stat = await self._scraper.scrape(self._pods.endpoints(key), window_s, now)
        except ScrapeError as err:
            self.metrics.scrape_failed.value += 1
            if self.collector.set_error(key, str(err)):
                log.warning("%s: scrape failed: %s", key, err)
            return
        finally:
            self._scraping.discard(key)
        if stat is None:
            return  # no ready pods: nothing to record, as Knative's emptyStat
        self.metrics.scrape_ok.value += 1
        self.metrics.scrape_duration.observe(time.perf_counter() - started)
        if self.collector.set_error(key, None):
            log.info("%s: scraping again", key)
        self.collector.record(key, now, stat)

    # -- decisions ---------------------------------------------------------------------------
    async def _decide_loop(self) -> None:
        async for _ in _ticker(TICK_INTERVAL_S):
            await self.tick_all(self._clock())

    async def tick_all(self, now: float) -> None:
        """Decide every revision once, yielding to the loop every TICK_BATCH revisions."""
        for i, key in enumerate(self.multiscaler.revisions()):
            if i and i % TICK_BATCH == 0:
                await asyncio.sleep(0)
            await self._tick_one(key, now)

    async def _tick_one(self, key: RevisionKey, now: float) -> None:
        spec = self._specs.get(key)
        if spec is None:
            return
        status = self.multiscaler.status(key)
        before = None if status is None else status.active
        try:
            tick = self.multiscaler.tick(key, _ready(self._pods.endpoints(key)), now)
        except Exception:
            log.exception("%s: decision failed", key)
            return
        if tick is None:
            return
        self.metrics.record(_labels(spec), tick, tick_metric(self.multiscaler, key))
        self._ticks[key] = tick
        self._before[key] = before
        if tick.changed:
            d = tick.decision
            log.info(
                "%s: scale %d, %s mode, %d activators, ebc %g",
                d.key,
                d.desired_scale,
                d.mode.value,
                d.activators,
                d.excess_burst_capacity,
            )
            self.multiscaler.mark_published(d)
        if self._on_tick is not None:
            self._on_tick(key)

    # -- plumbing ----------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _handle_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=render_text(self.metrics), headers={"Content-Type": PROMETHEUS_TEXT}
        )


def tick_metric(multiscaler: MultiScaler, key: RevisionKey) -> str:
    scaling = multiscaler.scaling(key)
    return "concurrency" if scaling is None else scaling.decider.scaling_metric


async def _clock_ticker(interval_s: float, phase_s: float, clock: Clock) -> AsyncIterator[float]:
    """Yield the scheduled times k * interval_s + phase_s on ``clock``, skipping missed ones."""
    last = -math.inf
    while True:
        now = clock()
        scheduled = (now - phase_s) // interval_s * interval_s + interval_s + phase_s
        # A sleep may end a hair early on another clock: never yield one time twice.
        scheduled = max(scheduled, last + interval_s)
        await asyncio.sleep(scheduled - now)
        last = scheduled
        yield scheduled


async def _ticker(interval_s: float) -> AsyncIterator[None]:
    """Yield every interval_s on the loop's clock, skipping ticks that were missed."""
    loop = asyncio.get_running_loop()
    next_at = loop.time() + interval_s
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        yield
        now = loop.time()
        next_at += interval_s
        if next_at <= now:  # overran: drop missed ticks, as Go's ticker does
            next_at = now + interval_s
