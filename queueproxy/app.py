"""The queue-proxy process: wires the proxy, the stats, the probes and the drain together.

Four listeners, as Knative's queue-proxy plus knpy's split of its ports so that many pods share
one host: serving (the proxy), admin (``/wait-for-drain``), autoscaler stats (``/metrics``,
protobuf or Prometheus text) and user metrics (``/metrics``, Prometheus text).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import TYPE_CHECKING, TextIO

from queueproxy.config import QueueProxyConfig
from queueproxy.drain import Drainer, DrainState
from queueproxy.handler import QueueHandler
from queueproxy.metrics import UserMetrics, render_stat_prometheus
from queueproxy.readiness import ReadinessProber
from shared.breaker import Breaker
from shared.proxy.exchange import Exchange
from shared.proxy.http1 import simple_response
from shared.proxy.local import LocalHandler
from shared.proxy.server import ProxyServer
from shared.proxy.upstream import UpstreamPool
from shared.request_stats import RequestStats, StatReport
from shared.stat_proto import StatData, encode_stat

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Tracer

_PROTOBUF = b"application/protobuf"
_PROM_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_DRAIN_CHECK_S = 0.1
# Knative's adminHandler: a drain asked for by the app's preStop hook without a SIGTERM
# following within a second is a liveness restart, not a shutdown; stop draining then.
_DRAIN_RESET_S = 1.0


class QueueProxy:
    def __init__(self, cfg: QueueProxyConfig, *, log_stream: TextIO | None = None) -> None:
        self.cfg = cfg
        self.started_at = time.monotonic()
        self.stats = RequestStats(self.started_at)
        self.drainer = Drainer(cfg.drain_period_s, cfg.revision_timeout_s)
        self.breaker: Breaker[Exchange[int]] | None = (
            Breaker(cfg.queue_depth, cfg.container_concurrency, cfg.container_concurrency)
            if cfg.container_concurrency > 0
            else None
        )
        self.prober = ReadinessProber(cfg.readiness_probe, cfg.user_host, cfg.user_port)
        breaker, stats = self.breaker, self.stats
        self.metrics = UserMetrics(
            namespace=cfg.namespace,
            service=cfg.service,
            configuration=cfg.configuration,
            revision=cfg.revision,
            pod=cfg.pod,
            in_flight=lambda: stats.concurrency,
            queue_depth=(lambda: float(breaker.in_flight)) if breaker is not None else None,
        )
        self.last_report = StatReport(0.0, 0.0, 0.0, 0.0)
        self.last_stat = encode_stat(StatData(pod_name=cfg.pod))
        self._log_stream = log_stream or sys.stdout
        self._servers: list[asyncio.Server] = []
        self._proxy: ProxyServer[int] | None = None
        self._local: list[ProxyServer[None]] = []
        self._pool: UpstreamPool[int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sigterm = asyncio.Event()
        self._drained = asyncio.Event()
        self._tracer: Tracer | None = None

    def __repr__(self) -> str:
        return f"<QueueProxy {self.cfg.namespace}/{self.cfg.revision} pod={self.cfg.pod}>"

    async def start(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        self._pool = UpstreamPool(loop, cfg.user_host, cfg.user_port)
        request_log = None
        obs = cfg.observability
        if obs.enable_request_log:
            from shared.reqlog import RequestLogger, RequestLogRevision

            request_log = RequestLogger(
                obs.request_log_template,
                RequestLogRevision(
                    name=cfg.revision,
                    namespace=cfg.namespace,
                    service=cfg.service,
                    configuration=cfg.configuration,
                    pod_name=cfg.pod,
                    pod_ip=cfg.pod_ip,
                ),
                stream=self._log_stream,
            )
        tracer = None
        if obs.tracing_protocol != "none":
            from shared.tracing import setup_tracing

            tracer = setup_tracing("queue-proxy", obs)
            self._tracer = tracer
        handler = QueueHandler(
            pool=self._pool,
            stats=self.stats,
            drainer=self.drainer,
            prober=self.prober,
            metrics=self.metrics,
            breaker=self.breaker,
            timeout_s=cfg.revision_timeout_s,
            response_start_timeout_s=cfg.response_start_timeout_s,
            idle_timeout_s=cfg.idle_timeout_s,
            request_log=request_log,
            log_probes=obs.enable_probe_request_log,
            tracer=tracer,
        )
        self._proxy = ProxyServer(handler, initial_tag=0)
        self._proxy.start(loop)
        self._servers.append(
            await loop.create_server(
                self._proxy, cfg.bind_host, cfg.serving_port, backlog=4096, reuse_address=True
            )
        )
        for port, routes in (
            (cfg.admin_port, {"/wait-for-drain": self._wait_for_drain}),
            (cfg.metrics_port, {"/metrics": self._serve_stats}),
            (cfg.user_metrics_port, {"/metrics": self._serve_user_metrics}),
        ):
            local = ProxyServer(LocalHandler(routes), initial_tag=None)
            local.start(loop)
            self._local.append(local)
            self._servers.append(
                await loop.create_server(local, cfg.bind_host, port, reuse_address=True)
            )
        self._tasks.append(loop.create_task(self._report_loop()))

    # -- stats --------------------------------------------------------------------------------
    async def _report_loop(self) -> None:
        period = self.cfg.stats_period_s
        next_at = time.monotonic() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            now = time.monotonic()
            next_at += period
            report = self.stats.report(now)
            self.last_report = report
            # As Knative's ProtobufStatsReporter: counts become per-second rates.
            self.last_stat = encode_stat(
                StatData(
                    pod_name=self.cfg.pod,
                    average_concurrent_requests=report.avg_concurrency,
                    average_proxied_concurrent_requests=report.avg_proxied_concurrency,
                    request_count=report.request_count / period,
                    proxied_request_count=report.proxied_request_count / period,
                    process_uptime=now - self.started_at,
                )
            )

    def _serve_stats(self, ex: Exchange[None]) -> None:
        accept = ex.header(b"accept") or b""
        if _PROTOBUF in accept:
            body = self.last_stat
            ctype = _PROTOBUF
        else:
            cfg = self.cfg
            body = render_stat_prometheus(
                self.last_report,
                time.monotonic() - self.started_at,
                namespace=cfg.namespace,
                configuration=cfg.configuration,
                revision=cfg.revision,
                pod=cfg.pod,
                reporting_period_s=cfg.stats_period_s,
            )
            ctype = _PROM_TYPE
        ex.respond(simple_response(200, body, content_type=ctype), status=200)

    def _serve_user_metrics(self, ex: Exchange[None]) -> None:
        body = self.metrics.render()
        ex.respond(simple_response(200, body, content_type=_PROM_TYPE), status=200)

    # -- drain --------------------------------------------------------------------------------
    def _wait_for_drain(self, ex: Exchange[None]) -> None:
        self.drainer.start(time.monotonic())
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._answer_when_drained(ex))
        self._tasks.append(task)

    async def _answer_when_drained(self, ex: Exchange[None]) -> None:
        try:
            await asyncio.wait_for(self._sigterm.wait(), _DRAIN_RESET_S)
        except TimeoutError:
            self.drainer.reset()
        else:
            await self._drained.wait()
        if not ex.done:
            ex.respond(simple_response(200), status=200)

    def begin_drain(self) -> None:
        """SIGTERM: probes fail from now on; requests are still served until quiet."""
        self.drainer.start(time.monotonic())
        self._sigterm.set()

    async def wait_drained(self) -> None:
        assert self._proxy is not None
        proxy = self._proxy
        listening = True
        while True:
            state = self.drainer.state(time.monotonic(), len(proxy.live))
            if state is DrainState.DONE:
                break
            if state is DrainState.QUIET and listening:
                # Quiet period over: stop accepting, close kept-alive idle connections, and let
                # the requests in flight finish (Go's http.Server.Shutdown).
                self._servers[0].close()
                listening = False
            if not listening:
                proxy.close_idle()
            await asyncio.sleep(_DRAIN_CHECK_S)
        self._drained.set()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy.abort_all()
        for local in self._local:
            local.stop()
        # Let /wait-for-drain answer before its connection goes.
        await asyncio.sleep(0.05)
        for local in self._local:
            local.abort_all()
        for task in self._tasks:
            task.cancel()
        if self._pool is not None:
            self._pool.close()
        await self.prober.close()
        if self._tracer is not None:
            from shared.tracing import shutdown_tracing

            shutdown_tracing(self._tracer)


async def serve(cfg: QueueProxyConfig) -> None:
    """Run until SIGTERM (or SIGINT) and the drain that follows it."""
    qp = QueueProxy(cfg)
    await qp.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, qp.begin_drain)
    print(
        f"queue-proxy {cfg.namespace}/{cfg.revision}: serving :{cfg.serving_port} -> "
        f"{cfg.user_host}:{cfg.user_port} (containerConcurrency={cfg.container_concurrency})",
        file=sys.stderr,
        flush=True,
    )
    await qp._sigterm.wait()
    await qp.wait_drained()
    await qp.stop()
