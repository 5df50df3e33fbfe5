"""The broker process: the ingress and the dispatcher over one event log, following the
Brokers and Triggers of the Kubernetes API.

Start: open the event log (the state dir's SQLite database), start the informers and wait for
their first lists, forget the queues of triggers deleted while the process was down, start a
worker per trigger (each resumes at its cursor, so what was stored but not delivered before a
crash goes out now), then listen. ``GET /healthz`` on the ingress port answers 200 from then
on. SIGTERM or SIGINT: stop listening, cancel the deliveries in flight (they are not acked, so
the next start repeats them) and close the log after its last commit.

Observability: Prometheus text at ``GET :BROKER_METRICS_PORT/metrics`` (eventing/broker/
metrics.py; every role serves it), and traces as ``config-observability`` in the system
namespace says (eventing/broker/observability.py).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from eventing.broker.backend import EventLog
from eventing.broker.cluster import BrokerCluster
from eventing.broker.config import BrokerConfig
from eventing.broker.dispatcher import Dispatcher
from eventing.broker.ingress import Ingress, IngressConnection
from eventing.broker.metrics import BrokerMetrics
from eventing.broker.observability import Tracing
from eventing.broker.store import DATABASE_NAME, SqliteEventLog
from shared.kube.informer import InformerFactory

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Tracer

__all__ = ["BrokerApp", "make_event_log", "run", "serve"]


class BrokerApp:
    """One data plane: ``await start()`` (informers started by the caller), ``stop()``."""

    def __init__(
        self, cfg: BrokerConfig, informers: InformerFactory, event_log: EventLog | None = None
    ) -> None:
        self.cfg = cfg
        self.log: EventLog = event_log or make_event_log(cfg)
        self.cluster = BrokerCluster(informers, cfg.broker_class, self._triggers_changed)
        self.ready = False
        self.metrics = BrokerMetrics()
        self.tracing = Tracing(
            informers,
            cfg.system_namespace,
            cfg.observability,
            self._tracer_changed,
            name=cfg.observability_configmap,
        )
        self.ingress = Ingress(
            self.log,
            self.cluster.serves,
            max_ttl=cfg.max_ttl,
            max_body_bytes=cfg.max_body_bytes,
            ready=lambda: self.ready,
            metrics=self.metrics,
        )
        self.dispatcher = Dispatcher(
            self.log,
            self.ingress.ingest,
            concurrency=cfg.concurrency,
            attempt_timeout_s=cfg.attempt_timeout_s,
            metrics=self.metrics,
        )
        self.port = cfg.ingress_port
        self.metrics_port: int | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._started = False
        self._stopping: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        return f"<BrokerApp :{self.port} ready={self.ready} {self.ingress!r} {self.dispatcher!r}>"

    @property
    def dispatches(self) -> bool:
        return self.cfg.role != "ingress"

    async def start(self) -> None:
        """Raises ConfigError (the environment's tracing settings), OSError (a port)."""
        self.tracing.start()
        await self.log.open()
        await self.dispatcher.start()
        if self.cfg.metrics_port is not None:
            await self._serve_metrics(self.cfg.metrics_port)
        await self.cluster.wait_synced()
        if self.dispatches:
            targets = self.cluster.targets()
            for gone in self.log.triggers() - set(targets):
                self.log.forget(gone)
        self._started = True
        self._triggers_changed()
        if self.cfg.role == "dispatcher":
            self.ready = True  # no port: replies go straight to the log (Ingress.ingest)
            return
        loop = asyncio.get_running_loop()
        ingress = self.ingress
        self._server = await loop.create_server(
            lambda: IngressConnection(ingress),
            self.cfg.bind_host,
            self.cfg.ingress_port,
            backlog=4096,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.ready = True

    def _tracer_changed(self, tracer: Tracer | None) -> None:
        self.ingress.tracer = tracer
        self.dispatcher.tracer = tracer

    async def _serve_metrics(self, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.bind_host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._metrics_runner = runner
        self.metrics_port = int(runner.addresses[0][1])

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self.dispatches:
            try:
                self.metrics.depths = await self.log.depths()
            except Exception as err:  # a backend hiccup must not cost the rest of the scrape
                print(f"broker: queue depths unknown: {err}", file=sys.stderr)
                self.metrics.depths = {}
        return web.Response(
            body=self.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    def _triggers_changed(self) -> None:
        if not self._started or not self.dispatches:
            return
        for stop in self.dispatcher.set_triggers(self.cluster.targets()):
            task = asyncio.ensure_future(stop)
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def stop(self) -> None:
        self.ready = False
        if self._server is not None:
            self._server.close()
        for conn in list(self.ingress.connections):
            conn.transport.close()
        await self.dispatcher.close()
        await self.log.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        await self.tracing.stop()


def make_event_log(cfg: BrokerConfig) -> EventLog:
    """The backend ``cfg.backend`` names: the state dir's SQLite log, or RabbitMQ."""
    if cfg.backend == "rabbitmq":
        from eventing.broker.rabbitmq import RabbitMQEventLog

        return RabbitMQEventLog(
            cfg.rabbitmq_url, prefix=cfg.rabbitmq_prefix, prefetch=cfg.concurrency
        )
    return SqliteEventLog(cfg.state_dir / DATABASE_NAME, synchronous=cfg.synchronous)


async def run(
    cfg: BrokerConfig,
    informers: InformerFactory,
    *,
    stop: asyncio.Event | None = None,
    on_serving: Callable[[BrokerApp], None] | None = None,
) -> BrokerApp:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set)."""
    app = BrokerApp(cfg, informers)
    await informers.start()
    try:
        await app.start()
        if on_serving is not None:
            on_serving(app)
        done = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        where = (
            f"RabbitMQ at {cfg.rabbitmq_url.rsplit('@', 1)[-1]}"
            if cfg.backend == "rabbitmq"
            else f"event log in {cfg.state_dir}"
        )
        listens = (
            "dispatcher only"
            if cfg.role == "dispatcher"
            else f"ingress on {cfg.bind_host}:{app.port} (POST /<namespace>/<broker>)"
            + (" only" if cfg.role == "ingress" else "")
        )
        print(
            f"broker: {listens}, {where}, class {cfg.broker_class}",
            file=sys.stderr,
            flush=True,
        )
        await done.wait()
        await app.stop()
    finally:
        await informers.stop()
    return app


async def serve(cfg: BrokerConfig, env: Mapping[str, str], kubeconfig: str | None) -> None:
    """``run`` against the Kubernetes API (in cluster, or by kubeconfig).

    Raises:
        KubeConfigError: no usable configuration.
    """
    from shared.kube.config import load_api_client
    from shared.kube.kubeinformer import KubeInformerFactory

    api = await load_api_client(env, kubeconfig)
    try:
        await run(cfg, KubeInformerFactory(api))
    finally:
        await api.close()
