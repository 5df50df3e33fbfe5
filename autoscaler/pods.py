"""A revision's ready pods, from the Pod informer: what is scraped and what counts as ready.

Knative's autoscaler lists pods through an informer filtered by the label
``serving.knative.dev/revisionUID`` (present on every revision pod; knative/serving#10098: an
unfiltered cluster-wide Pod informer did not fit in memory), and finds a revision's pods by
``serving.knative.dev/revision=<name>`` in the PA's namespace (pkg/resources/pods.go). A pod
is ready when it is Running, its Ready condition is True and it is not being deleted.

It is scraped at ``podIP:<port>``, the queue-proxy container's port named ``http-autometric``
(9090 when absent, which is what Knative's scraper always uses). ``knpy serve`` runs every pod
on 127.0.0.1, so each Pod object there carries its real ports; in a cluster it is 9090.
The index is kept by the informer's handler, so a lookup costs one dict read.
"""

from __future__ import annotations

from autoscaler.resources import parse_time
from shared.kube.informer import EventType, Informer
from shared.kube.resources import REVISION_LABEL, Obj, key_of, labels_of, meta
from shared.seams import Endpoint, RevisionKey

__all__ = ["AUTOMETRIC_PORT_NAME", "DEFAULT_METRICS_PORT", "PodIndex", "endpoint_of", "is_ready"]

AUTOMETRIC_PORT_NAME = "http-autometric"
DEFAULT_METRICS_PORT = 9090
QUEUE_PORT_NAMES = ("http1", "h2c")  # the queue-proxy's serving port (Knative's names)
DEFAULT_QUEUE_PORT = 8012


def is_ready(pod: Obj) -> bool:
    """Running, Ready=True, no deletionTimestamp (Knative's PodAccessor's "ready")."""
    if meta(pod).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
        if isinstance(c, dict)
    )


def _ports(pod: Obj) -> tuple[int, int]:
    """(serving port, metrics port) of the pod's queue-proxy, Knative's defaults if unnamed."""
    serving, metrics = DEFAULT_QUEUE_PORT, DEFAULT_METRICS_PORT
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            name, number = port.get("name"), port.get("containerPort")
            if not isinstance(number, int):
                continue
            if name == AUTOMETRIC_PORT_NAME:
                metrics = number
            elif name in QUEUE_PORT_NAMES:
                serving = number
    return serving, metrics


def endpoint_of(pod: Obj) -> Endpoint:
    status = pod.get("status") or {}
    serving, metrics = _ports(pod)
    started = parse_time(status.get("startTime")) or 0.0
    return Endpoint(
        str(meta(pod).get("name", "")), str(status["podIP"]), serving, metrics, True, started
    )


class PodIndex:
    """Ready pods by revision, maintained from a Pod informer's events."""

    def __init__(self, informer: Informer) -> None:
        self._pods: dict[RevisionKey, dict[str, Endpoint]] = {}
        self._revision_of: dict[tuple[str, str], RevisionKey] = {}
        self.informer = informer
        informer.add_handler(self._on_event)

    def __repr__(self) -> str:
        return f"<PodIndex revisions={len(self._pods)}>"

    def endpoints(self, key: RevisionKey) -> tuple[Endpoint, ...]:
        """The revision's ready pods, older first (the scraper prefers them)."""
        pods = self._pods.get(key)
        if not pods:
            return ()
        return tuple(sorted(pods.values(), key=lambda e: (e.started_at, e.pod_name)))

    def ready_count(self, key: RevisionKey) -> int:
        return len(self._pods.get(key) or ())

    def _on_event(self, event: EventType, pod: Obj) -> None:
        ns, name = key_of(pod)
        old = self._revision_of.pop((ns, name), None)
        if old is not None:
            bucket = self._pods.get(old)
            if bucket is not None:
                bucket.pop(name, None)
                if not bucket:
                    del self._pods[old]
        revision = labels_of(pod).get(REVISION_LABEL)
        if event is EventType.DELETED or not revision or not is_ready(pod):
            return
        key = RevisionKey(ns, revision)
        self._pods.setdefault(key, {})[name] = endpoint_of(pod)
        self._revision_of[(ns, name)] = key
