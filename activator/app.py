"""The activator process: wires the proxy, the revisions, the reporter and the stat link together,
and runs it until SIGTERM and its drain.

Two listeners, as Knative's activator: serving (8012: the requests, kubelet and network
probes) and metrics (9090: Prometheus text at ``/metrics``; knpy adds ``/healthz``, the same
health the kubelet probe sees, for hand use). Revisions and Endpoints come from informers
(shared/kube): the Kubernetes API in a cluster and under ``knpy serve``, an in-memory
FakeCluster in unit tests. The ConfigMaps config-logging and config-observability in the
system namespace are followed (the log level; tracing and the request log), as Knative's
configmap watcher does.

Start, as Knative's cmd/activator/main.go: read ``config-network`` once (its absence is
fatal), start the informers and wait for their first lists, then serve. The informers come
from the Kubernetes API (``serve``), or from a file of objects (``serve_static``, for
benchmarks and hand runs without an API server).

Drain, as Knative's main: on SIGTERM the kubelet probe fails at once ("received SIGTERM from
kubelet") while requests are still served for ``drain_timeout_s`` (45 s, the time the
non-readiness takes to reach the load balancers); then the listener closes, kept-alive idle
connections are closed, and the requests in flight (queued ones included) get until their own
deadlines to finish.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import yaml

from activator.cluster import RevisionSpec
from activator.config import ActivatorConfig
from activator.configmaps import NETWORK_CONFIGMAP, ConfigMaps, data_of, network_warnings
from activator.handler import ActivatorHandler
from activator.metrics import ActivatorMetrics
from activator.reporter import ConcurrencyReporter
from activator.revisions import ActivatorRequest, ActiveRevision, RevisionTable
from activator.split import worker_part
from activator.statsink import StatSink, WebSocketStatSink
from shared.documents import load_documents
from shared.envconfig import ConfigError
from shared.kube.client import ApiError, KubeClient
from shared.kube.informer import InformerFactory
from shared.kube.resources import CONFIGMAPS, CONFIGURATION_LABEL, SERVICE_LABEL, Obj
from shared.observability import ObservabilityConfig
from shared.proxy.exchange import Exchange
from shared.proxy.http1 import error_body, simple_response
from shared.proxy.local import LocalHandler
from shared.proxy.server import ProxyServer
from shared.reqlog import RequestLogger, RequestLogRevision

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Tracer

    from shared.kube.fake import FakeCluster

__all__ = [
    "Activator",
    "StartupError",
    "fetch_network_config",
    "load_cluster_file",
    "run",
    "serve",
    "serve_static",
]


def _tracing_of(obs: ObservabilityConfig) -> tuple[str, str, float]:
    return obs.tracing_protocol, obs.tracing_endpoint, obs.tracing_sampling_rate


def _request_log_of(obs: ObservabilityConfig) -> tuple[bool, str]:
    return obs.enable_request_log, obs.request_log_template


def _check_template(template: str) -> None:
    """Raises ConfigError when knpy's renderer cannot run ``template`` ("" is no log)."""
    if template:
        RequestLogger(template, RequestLogRevision("", "", "", "", "", ""))


_PROM_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_DRAIN_CHECK_S = 0.1
_SIGTERM_REASON = "received SIGTERM from kubelet"


class Activator:
    """One activator: ``await start()``, serve, ``begin_drain()``, ``await drain()``, ``stop()``."""

    def __init__(
        self,
        cfg: ActivatorConfig,
        informers: InformerFactory,
        stat_sink: StatSink,
    ) -> None:
        self.cfg = cfg
        self.stat_sink = stat_sink
        self.metrics = ActivatorMetrics()
        # Each worker reports as an activator of its own, so that the autoscaler sums them.
        reporter_name = cfg.pod_name if cfg.workers == 1 else f"{cfg.pod_name}-w{cfg.worker_index}"
        self.reporter = ConcurrencyReporter(reporter_name, stat_sink, period_s=cfg.stats_period_s)
        self.table = RevisionTable(informers, self._new_revision)
        self.configmaps = ConfigMaps(
            informers,
            cfg.system_namespace,
            self._observability_changed,
            logging_name=cfg.logging_configmap,
            observability_name=cfg.observability_configmap,
        )
        self.draining = False
        self.handler: ActivatorHandler | None = None
        self.proxy: ProxyServer[ActivatorRequest | None] | None = None
        self.serving_port = cfg.serving_port
        self.metrics_port = cfg.metrics_port
        self._local: ProxyServer[None] | None = None
        self._servers: list[asyncio.Server] = []
        self._tracer: Tracer | None = None
        self._observability: ObservabilityConfig | None = None
        self._request_log_template = ""

    def __repr__(self) -> str:
        return f"<Activator {self.table!r} draining={self.draining}>"

    def health(self) -> str | None:
        """None when the activator should get traffic, else why not (Knative's newHealthCheck)."""
        if self.draining:
            return _SIGTERM_REASON
        return self.stat_sink.status()

    def revision(self, namespace: str, name: str) -> ActiveRevision | None:
        """The revision's state, once a request for it arrived (for tests and debugging)."""
        return self.table.lookup(namespace.encode(), name.encode())

    async def start(self) -> None:
        """Bind, then follow the informers (the caller starts the factory)."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        self.handler = ActivatorHandler(
            self.table,
            self.reporter,
            health=self.health,
            cluster_domain=cfg.cluster_domain,
        )
        self.proxy = ProxyServer(self.handler, initial_tag=None)
        self.proxy.start(loop)
        # With workers every one listens on the serving port (SO_REUSEPORT: the kernel spreads
        # the connections) and worker i on metrics port + i, so each can be scraped.
        workers = cfg.workers > 1
        serving = await loop.create_server(
            self.proxy,
            cfg.bind_host,
            cfg.serving_port,
            backlog=4096,
            reuse_address=True,
            reuse_port=workers or None,
        )
        self.serving_port = serving.sockets[0].getsockname()[1]
        self._local = ProxyServer(
            LocalHandler({"/metrics": self._serve_metrics, "/healthz": self._serve_health}),
            initial_tag=None,
        )
        self._local.start(loop)
        local = await loop.create_server(
            self._local,
            cfg.bind_host,
            cfg.metrics_port + cfg.worker_index if cfg.metrics_port else 0,
            reuse_address=True,
        )
        self.metrics_port = local.sockets[0].getsockname()[1]
        self._servers = [serving, local]
        # This activator as the revisions' public Endpoints list it (activator/cluster.py).
        self.table.own_address = f"{cfg.pod_ip}:{self.serving_port}"
        self.table.worker, self.table.workers = cfg.worker_index, cfg.workers
        self.configmaps.start()
        self._observability_changed()
        await self.stat_sink.start()
        self.reporter.start()
        self.table.start()

    def _observability_changed(self) -> None:
        """config-observability changed (or at start): tracing and request log settings."""
        obs = self.configmaps.observability or self.cfg.observability
        if self.handler is None or obs == self._observability:
            return
        old_tracing = self._observability
        self._observability = obs
        if old_tracing is None or _tracing_of(old_tracing) != _tracing_of(obs):
            from shared.tracing import setup_tracing, shutdown_tracing

            if self._tracer is not None:
                shutdown_tracing(self._tracer)
                self._tracer = None
            if obs.tracing_protocol != "none":
                self._tracer = setup_tracing("activator", obs)
            self.handler.set_tracer(self._tracer)
        if old_tracing is None or _request_log_of(old_tracing) != _request_log_of(obs):
            template = obs.request_log_template if obs.enable_request_log else ""
            try:
                _check_template(template)
            except ConfigError as err:
                # Knative's SetTemplate error: logged, and the last template stays.
                print(f"activator: request log template refused: {err}", file=sys.stderr)
                return
            self._request_log_template = template
            for rev in self.table.by_key.values():
                rev.request_log = self._request_logger(rev.spec)

    def _request_logger(self, spec: RevisionSpec) -> RequestLogger | None:
        """Knative's activator request log: the revision's name, namespace, service and
        configuration; no pod (cmd/activator/request_log.go leaves PodName/PodIP empty)."""
        if not self._request_log_template:
            return None
        revision = RequestLogRevision(
            name=spec.key.name,
            namespace=spec.key.namespace,
            service=spec.labels.get(SERVICE_LABEL, ""),
            configuration=spec.labels.get(CONFIGURATION_LABEL, ""),
            pod_name="",
            pod_ip="",
        )
        return RequestLogger(self._request_log_template, revision)

    def _new_revision(self, spec: RevisionSpec) -> ActiveRevision:
        assert self.handler is not None
        rev = ActiveRevision(
            spec,
            metrics=None,
            queue_depth=worker_part(self.cfg.queue_depth, self.cfg.worker_index, self.cfg.workers),
            probe_timeout_s=self.cfg.probe_timeout_s,
            probe_frequency_s=self.cfg.probe_frequency_s,
            max_idle_conns=self.cfg.max_idle_conns_per_host,
            on_connect_error=self.handler.connect_failed,
        )
        rev.request_log = self._request_logger(spec)
        throttler = rev.throttler
        rev.metrics = self.metrics.revision(
            spec.key.namespace,
            spec.key.name,
            {
                "concurrency": lambda: float(throttler.in_flight),
                "queued": lambda: float(throttler.queued),
                "active": lambda: float(throttler.active),
                "capacity": lambda: float(throttler.capacity),
                "pods": lambda: float(len(throttler.pod_trackers)),
                "assigned_pods": lambda: float(len(throttler.assigned_trackers)),
            },
        )
        return rev

    def _serve_metrics(self, ex: Exchange[None]) -> None:
        body = self.metrics.render()
        ex.respond(simple_response(200, body, content_type=_PROM_TYPE), status=200)

    def _serve_health(self, ex: Exchange[None]) -> None:
        problem = self.health()
        if problem is None:
            ex.respond(simple_response(200, b"ok\n"), status=200)
        else:
            ex.respond(simple_response(500, error_body(problem)), status=500)

    # -- drain ------------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """SIGTERM: health fails from now on; requests are still served."""
        if not self.draining:
            self.draining = True
            print(
                f"activator: {_SIGTERM_REASON}; serving for {self.cfg.drain_timeout_s:g} s more",
                file=sys.stderr,
                flush=True,
            )

    async def drain(self) -> None:
        """Serve through the drain timeout, stop accepting, let the requests in flight end."""
        assert self.proxy is not None
        await asyncio.sleep(self.cfg.drain_timeout_s)
        self._servers[0].close()
        # Queued requests finish or time out on their own deadlines; the latest bounds this.
        deadline = max((ex.deadline for ex in self.proxy.live), default=0.0)
        while self.proxy.live and time.monotonic() < deadline + 1.0:
            self.proxy.close_idle()
            await asyncio.sleep(_DRAIN_CHECK_S)
        self.proxy.close_idle()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        self.reporter.stop()
        await self.table.stop()
        for proxy in (self.proxy, self._local):
            if proxy is not None:
                proxy.stop()
                proxy.abort_all()
        await self.stat_sink.close()
        if self._tracer is not None:
            from shared.tracing import shutdown_tracing

            shutdown_tracing(self._tracer)


# Knative polls the API this long at start ("we sometimes start faster than we can reach
# kube-api") before giving up.
API_WAIT_S = 60.0
_API_RETRY_S = 1.0


class StartupError(Exception):
    """The activator cannot start (config-network missing, the API unreachable)."""


async def fetch_network_config(
    client: KubeClient, namespace: str, wait_s: float = API_WAIT_S
) -> Obj:
    """GET config-network, retrying while the API is unreachable.

    Raises:
        StartupError: it does not exist, or the API did not answer within ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            obj = await client.get(CONFIGMAPS, namespace, NETWORK_CONFIGMAP)
        except (ApiError, OSError, aiohttp.ClientError) as err:
            if time.monotonic() >= deadline:
                raise StartupError(f"failed to fetch network config: {err}") from err
            await asyncio.sleep(_API_RETRY_S)
            continue
        if obj is None:
            raise StartupError(
                f'failed to fetch network config: configmaps "{NETWORK_CONFIGMAP}" not found '
                f"in namespace {namespace}"
            )
        return obj


async def run(
    cfg: ActivatorConfig,
    client: KubeClient,
    informers: InformerFactory,
    *,
    stat_sink: StatSink | None = None,
    stop: asyncio.Event | None = None,
    on_serving: Callable[[Activator], None] | None = None,
) -> Activator:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then drain and stop.

    ``on_serving`` sees the activator once it listens and follows the informers (for tests).

    Raises:
        StartupError: see fetch_network_config.
    """
    network = await fetch_network_config(client, cfg.system_namespace)
    for warning in network_warnings(data_of(network)):
        print(f"activator: {NETWORK_CONFIGMAP}: {warning}", file=sys.stderr, flush=True)
    sink = stat_sink or WebSocketStatSink(cfg.autoscaler_url, reconnect_max_s=cfg.reconnect_max_s)
    activator = Activator(cfg, informers, sink)
    await informers.start()
    try:
        for informer in (
            activator.table.revisions,
            activator.table.private,
            activator.table.public,
            activator.configmaps.informer,
        ):
            await informer.wait_synced()
        await activator.start()
        if on_serving is not None:
            on_serving(activator)
        sigterm = stop or asyncio.Event()

        def on_signal() -> None:
            activator.begin_drain()
            sigterm.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        print(
            f"activator {cfg.pod_name}: serving :{activator.serving_port} as "
            f"{activator.table.own_address}, metrics :{activator.metrics_port}, "
            f"stats to {cfg.autoscaler_url}",
            file=sys.stderr,
            flush=True,
        )
        await sigterm.wait()
        activator.begin_drain()
        await activator.drain()
        await activator.stop()
    finally:
        await informers.stop()
    return activator


async def serve(cfg: ActivatorConfig, env: Mapping[str, str], kubeconfig: str | None) -> None:
    """``run`` against the Kubernetes API: in cluster, or by kubeconfig (shared/kube/config.py).

    Raises:
        StartupError, KubeConfigError.
    """
    from shared.kube.config import load_api_client
    from shared.kube.kubeclient import ApiKubeClient
    from shared.kube.kubeinformer import KubeInformerFactory

    api = await load_api_client(env, kubeconfig)
    try:
        await run(cfg, ApiKubeClient(api), KubeInformerFactory(api))
    finally:
        await api.close()


def load_cluster_file(path: Path) -> FakeCluster:
    """A static informer source: the Kubernetes objects in ``path`` in an in-memory cluster.

    The file holds what the API would: Revisions, Endpoints (private and public, with
    Knative's labels) and the ConfigMaps in the system namespace (config-network among
    them), as YAML documents, a JSON array, or a ``List`` object with ``items``. Nothing
    changes them afterwards; for benchmarks and hand runs without an API server.

    Raises:
        ConfigError: unreadable file, or an object of an unknown kind (named by its index).
    """
    from shared.kube.fake import FakeCluster, resource_for

    try:
        items = load_documents(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(str(path), f"cannot read the cluster file: {err}") from err
    cluster = FakeCluster()
    for i, obj in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ConfigError(where, "must be a Kubernetes object with metadata")
        try:
            resource = resource_for(str(obj.get("apiVersion")), str(obj.get("kind")))
        except KeyError:
            raise ConfigError(
                where, f"unknown apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')}"
            ) from None
        cluster.put(obj, resource)
    return cluster


async def serve_static(cfg: ActivatorConfig, path: Path) -> None:
    """``run`` over the objects of a cluster file (load_cluster_file).

    Raises:
        ConfigError, StartupError.
    """
    cluster = load_cluster_file(path)
    await run(cfg, cluster, cluster)
