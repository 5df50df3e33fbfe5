"""Prometheus's way into ``knpy serve``: HTTP service discovery, the platform's own metrics and
a ready ``prometheus.yml``.

Theory of operation. In a cluster, Prometheus finds Knative's metrics through Kubernetes
service discovery (a PodMonitor on the queue-proxy's ``http-usermetric`` port, ServiceMonitors
on ``activator-service`` and ``autoscaler`` port ``http-metrics``). ``knpy serve`` has no
Kubernetes SD for Prometheus to use (it would need watch access and pod IPs), so it answers
Prometheus's ``http_sd_configs`` instead, from the same Pod objects, on the API server
(``GET /knpy/v1/targets``, behind the API's bearer token):

* a revision pod (label ``serving.knative.dev/revision``) gives two targets, its queue-proxy's
  ``http-usermetric`` port (Knative's request metrics) and ``http-autometric`` port (the Stat
  the autoscaler scrapes, as Prometheus text);
* a pod of ``knative-serving`` with a container port named ``metrics`` (the activator, the
  autoscaler) gives one target;
* the platform itself: ``/metrics`` of this API server, as kube-apiserver serves its own.

A pod is listed while its container runs (a starting or exited process has nothing to
scrape). Labels carry Knative's meaning: ``namespace``, ``service``, ``configuration``,
``revision``, ``pod``, ``component`` (``queue-proxy``, ``activator``, ``autoscaler``,
``platform``) and ``endpoint`` (the port's name, as the Prometheus Operator labels a
ServiceMonitor's targets). None of them collides with a label the metrics carry themselves
(``k8s_namespace_name``, ``kn_revision_name``, ...), so nothing is renamed ``exported_*``.

The platform's ``/metrics`` is read from the stored objects at scrape time (nothing on any
request path): kube-state-metrics' Deployment replica gauges (spec, existing, ready), which
show a revision's pods from the platform's side, kube-apiserver's ``apiserver_storage_objects``
and the process's own CPU and memory.

``prometheus.yml`` (written at every start, because the token changes with each run) has two
jobs over the same discovery: ``knpy`` scrapes the pods without credentials, ``knpy-platform``
scrapes the API server with the token file, so no pod ever sees the token.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.kube.resources import (
    CONFIGURATION_LABEL,
    DEPLOYMENTS,
    PODS,
    REVISION_LABEL,
    SERVICE_LABEL,
    SYSTEM_NAMESPACE,
    Obj,
)
from shared.metrics import render_text

from .supervision import write_private

if TYPE_CHECKING:
    from controlplane.kubeapi.server import KubeApiServer

__all__ = [
    "METRICS_PATH",
    "PROMETHEUS_YML",
    "TARGETS_PATH",
    "TOKEN_FILE",
    "PlatformMetrics",
    "install",
    "pod_targets",
    "prometheus_config",
    "targets",
]

_log = logging.getLogger("knpy.discovery")

TARGETS_PATH: Final = "/knpy/v1/targets"
METRICS_PATH: Final = "/metrics"
PROMETHEUS_YML: Final = "prometheus.yml"
TOKEN_FILE: Final = "api-token"
# Short enough that a 15 s test run sees a scale-up in several samples; two targets per
# revision pod at 2 s cost the queue-proxy one small text rendering a second.
SCRAPE_INTERVAL_S: Final = 2.0
PLATFORM: Final = "platform"
QUEUE_PROXY: Final = "queue-proxy"
# The queue-proxy's metrics ports, by the names Knative gives them in a revision's pod.
QUEUE_METRICS_PORTS: Final = ("http-usermetric", "http-autometric")
SYSTEM_METRICS_PORT: Final = "metrics"
_LOOPBACK: Final = "127.0.0.1"
_JOB: Final = "knpy"
_PLATFORM_JOB: Final = "knpy-platform"

TargetGroup = dict[str, Any]  # {"targets": ["host:port"], "labels": {...}}: Prometheus's format


class StoredObjects(Protocol):
    """Read access to the API server's objects, without copies (nothing here writes)."""

    def list(self, key: str, namespace: str | None = None) -> list[Obj]: ...

    def all_objects(self) -> Iterator[tuple[str, Obj]]: ...


# -- discovery (pure) ----------------------------------------------------------------------------
def _running(pod: Obj, container: str) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(
        c.get("name") == container and "running" in (c.get("state") or {})
        for c in status.get("containerStatuses") or []
    )


def _group(address: str, labels: Mapping[str, str]) -> TargetGroup:
    # Prometheus treats an empty label as absent; leaving it out keeps the listing honest.
    return {"targets": [address], "labels": {k: v for k, v in labels.items() if v}}


def pod_targets(pod: Obj) -> list[TargetGroup]:
    """The metrics targets of one Pod object (see the module doc); [] for any other pod."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    namespace = str(meta.get("namespace") or "")
    host = str((pod.get("status") or {}).get("podIP") or _LOOPBACK)
    revision = labels.get(REVISION_LABEL)
    if revision:
        container_name = QUEUE_PROXY
        wanted: tuple[str, ...] = QUEUE_METRICS_PORTS
        common = {
            "namespace": namespace,
            "service": str(labels.get(SERVICE_LABEL) or ""),
            "configuration": str(labels.get(CONFIGURATION_LABEL) or ""),
            "revision": str(revision),
            "pod": str(meta.get("name") or ""),
            "component": QUEUE_PROXY,
        }
    elif namespace == SYSTEM_NAMESPACE:
        container_name = ""
        wanted = (SYSTEM_METRICS_PORT,)
        common = {
            "namespace": namespace,
            "pod": str(meta.get("name") or ""),
            "component": str(labels.get("app") or ""),
        }
    else:
        return []
    out: list[TargetGroup] = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        name = str(container.get("name") or "")
        if container_name and name != container_name:
            continue
        if not _running(pod, name):
            continue
        for port in container.get("ports") or []:
            port_name = port.get("name")
            number = port.get("containerPort")
            if port_name in wanted and isinstance(number, int):
                out.append(_group(f"{host}:{number}", {**common, "endpoint": str(port_name)}))
    return out


def targets(pods: Iterable[Obj], platform_address: str) -> list[TargetGroup]:
    """The ``http_sd_configs`` answer: the platform first, then every pod's targets, sorted so
    that two calls over the same pods give the same bytes."""
    groups = [_group(platform_address, {"component": PLATFORM, "endpoint": "http"})]
    pod_groups = [g for pod in pods for g in pod_targets(pod)]
    pod_groups.sort(
        key=lambda g: (
            g["labels"].get("namespace", ""),
            g["labels"].get("pod", ""),
            g["targets"][0],
        )
    )
    return groups + pod_groups


# -- the platform's metrics ----------------------------------------------------------------------
# kube-state-metrics' names and help, the Deployment's figures a revision's pods show in.
_DEPLOYMENT_GAUGES: Final = (
    ("kube_deployment_spec_replicas", "Number of desired pods for a deployment.", "spec"),
    ("kube_deployment_status_replicas", "The number of replicas per deployment.", "replicas"),
    (
        "kube_deployment_status_replicas_ready",
        "The number of ready replicas per deployment.",
        "readyReplicas",
    ),
)


def _replicas(deployment: Obj, which: str) -> float:
    if which == "spec":
        value = (deployment.get("spec") or {}).get("replicas")
        return 1.0 if value is None else float(value)  # the API server's default
    return float((deployment.get("status") or {}).get(which) or 0)


class PlatformMetrics(Collector):
    """The platform's gauges, computed from the stored objects at each scrape."""

    def __init__(self, objects: Callable[[], StoredObjects]) -> None:
        # A callable: the API server replaces its store when it starts.
        self._objects = objects

    def collect(self) -> Iterable[Metric]:
        objects = self._objects()
        families = []
        deployments = sorted(
            objects.list(str(DEPLOYMENTS)),
            key=lambda d: (d["metadata"].get("namespace", ""), d["metadata"]["name"]),
        )
        for name, doc, which in _DEPLOYMENT_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=("namespace", "deployment"))
            for d in deployments:
                meta = d["metadata"]
                family.add_metric((meta.get("namespace", ""), meta["name"]), _replicas(d, which))
            families.append(family)
        stored = GaugeMetricFamily(
            "apiserver_storage_objects",
            "Number of stored objects at the time of last check split by kind.",
            labels=("resource",),
        )
        counts = collections.Counter(key for key, _ in objects.all_objects())
        for key, n in sorted(counts.items()):
            stored.add_metric((key,), n)
        families.append(stored)
        return families


# -- prometheus.yml ------------------------------------------------------------------------------
def prometheus_config(api_url: str, token_file: Path, interval_s: float = SCRAPE_INTERVAL_S) -> str:
    """The configuration of a Prometheus that scrapes everything ``knpy serve`` runs."""
    interval = f"{interval_s:g}s"

    def credentials() -> Obj:
        # The type spelled out: Prometheus 2.42 leaves it empty in an SD config's client and
        # sends the bare token, which the API refuses (401).
        return {"type": "Bearer", "credentials_file": str(token_file)}

    def job(name: str, action: str, auth: bool) -> Obj:
        out: Obj = {"job_name": name}
        if auth:
            out["authorization"] = credentials()
        sd = {"url": f"{api_url}{TARGETS_PATH}", "refresh_interval": interval}
        out["http_sd_configs"] = [{**sd, "authorization": credentials()}]
        out["relabel_configs"] = [
            {"source_labels": ["component"], "regex": PLATFORM, "action": action}
        ]
        return out

    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,  # Prometheus refuses a timeout above the interval
            "evaluation_interval": interval,
        },
        "scrape_configs": [job(_JOB, "drop", False), job(_PLATFORM_JOB, "keep", True)],
    }
    head = (
        f"# Written by knpy serve at each start (the API token changes with every run).\n"
        f"# prometheus --config.file={PROMETHEUS_YML}\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False)


# -- the API server's side -----------------------------------------------------------------------
def _only_get(request: web.Request) -> None:
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])


def install(server: KubeApiServer, interval_s: float = SCRAPE_INTERVAL_S) -> Path:
    """Serve the targets and the platform's metrics on the (started) API server, and write
    ``prometheus.yml`` and the token file it names into the state dir. Returns the config."""
    address = server.url.split("://", 1)[-1]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformMetrics(lambda: server.store))
    ProcessCollector(registry=registry)

    async def targets_handler(request: web.Request) -> web.Response:
        _only_get(request)
        body = json.dumps(targets(server.store.list(str(PODS)), address)).encode()
        return web.Response(body=body, content_type="application/json")

    async def metrics_handler(request: web.Request) -> web.Response:
        _only_get(request)
        return web.Response(
            body=render_text(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    server.add_path(TARGETS_PATH, targets_handler)
    server.add_path(METRICS_PATH, metrics_handler)
    state = Path(server.state_dir).resolve()
    token_file = state / TOKEN_FILE
    write_private(token_file, server.token)
    config = state / PROMETHEUS_YML
    write_private(config, prometheus_config(server.url, token_file, interval_s))
    _log.info(
        "Prometheus: prometheus --config.file=%s (targets at %s%s)",
        config,
        server.url,
        TARGETS_PATH,
    )
    return config
