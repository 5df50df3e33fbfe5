"""A Revision's Deployment: the user container and the queue-proxy sidecar (Knative's contract).

pkg/reconciler/revision/resources (deploy.go, queue.go, meta.go), pure:

- Name ``<rev>-deployment``; labels are the revision's (without the route's routingState)
  plus ``serving.knative.dev/revision``, ``revisionUID`` and ``app: <rev>`` when unset;
  annotations the revision's without Knative's bookkeeping ones and ``autoscaling.knative.dev/*``;
  the selector is ``{serving.knative.dev/revisionUID: <uid>}``; ``replicas`` is the initial scale
  (config-autoscaler ``initial-scale``, or the revision's ``initial-scale`` annotation);
  ``progressDeadlineSeconds`` config-deployment's (or the ``progress-deadline`` annotation);
  ``revisionHistoryLimit: 0``; a rolling update with ``maxUnavailable: 0``.
- The user container keeps what the template says, with one port ``user-port`` (the declared
  containerPort, 8080 by default), ``PORT`` and ``K_REVISION``/``K_CONFIGURATION``/``K_SERVICE``
  in its environment, no readiness probe of its own (the queue-proxy probes it), the preStop
  ``GET :8022/wait-for-drain`` and ``terminationMessagePolicy: FallbackToLogsOnError``.
- The ``queue-proxy`` container has Knative's ports (``queue-port`` 8012, or 8013 for h2c;
  ``http-autometric`` 9090; ``http-usermetric`` 9091) plus ``http-queueadm`` 8022, which knpy's
  queue-proxy serves on its own port (QUEUE_ADMIN_PORT) so that many pods can share one host;
  Knative's environment contract (SERVING_*, QUEUE_SERVING_PORT, CONTAINER_CONCURRENCY,
  REVISION_*_SECONDS, USER_PORT, SERVING_READINESS_PROBE as JSON aimed at 127.0.0.1:<user port>,
  OBSERVABILITY_CONFIG from config-observability) plus knpy's QUEUE_ADMIN_PORT,
  QUEUE_METRICS_PORT and USER_METRICS_PORT; a readiness probe ``GET :8012`` with
  ``K-Network-Probe: queue`` and the user probe's timings. No ``https-port`` 8112: knpy's
  queue-proxy serves no TLS, and a port nothing listens on would only mislead.

The local kubelet of ``knpy serve`` gives each pod its own free ports: it maps each named
container port to a free one and rewrites the environment variables above that carry them.
``deployment_hash`` stands in for Knative's deployment-hash label: a changed hash means the
Deployment is rewritten (keeping its replicas and selector, which belong to the autoscaler and to
the pods already running).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Final

from autoscaler.configmap import AutoscalerConfig
from shared.envconfig import ConfigError
from shared.gosyntax import parse_duration
from shared.kube.resources import (
    CONFIGURATION_LABEL,
    REVISION_LABEL,
    REVISION_UID_LABEL,
    REVISIONS,
    SERVICE_LABEL,
    SYSTEM_NAMESPACE,
    Obj,
    annotations_of,
    labels_of,
    meta,
)

from .configuration import ROUTING_STATE_LABEL, ROUTING_STATE_MODIFIED_ANNOTATION
from .meta import child_name, owner_reference

__all__ = [
    "DEPLOYMENT_HASH_LABEL",
    "QUEUE_CONTAINER_NAME",
    "deployment_hash",
    "deployment_name",
    "make_deployment",
    "make_labels",
    "protocol_of",
]

QUEUE_CONTAINER_NAME: Final = "queue-proxy"
DEPLOYMENT_HASH_LABEL: Final = "serving.knative.dev/deployment-hash"
ROUTE_LABEL: Final = "serving.knative.dev/route"
ROUTES_ANNOTATION: Final = "serving.knative.dev/routes"
APP_LABEL: Final = "app"
DEFAULT_CONTAINER_ANNOTATION: Final = "kubectl.kubernetes.io/default-container"
PROGRESS_DEADLINE_ANNOTATION: Final = "serving.knative.dev/progress-deadline"
INITIAL_SCALE_ANNOTATIONS: Final = (
    "autoscaling.knative.dev/initial-scale",
    "autoscaling.knative.dev/initialScale",
)
AUTOSCALING_PREFIX: Final = "autoscaling.knative.dev"

# Knative's port names and numbers (pkg/apis/serving/v1/contants.go, pkg/networking).
USER_PORT_NAME: Final = "user-port"
DEFAULT_USER_PORT: Final = 8080
QUEUE_PORT_NAME: Final = "queue-port"
QUEUE_HTTP_PORT: Final = 8012
QUEUE_HTTP2_PORT: Final = 8013
QUEUE_ADMIN_PORT_NAME: Final = "http-queueadm"
QUEUE_ADMIN_PORT: Final = 8022
AUTOSCALING_METRICS_PORT_NAME: Final = "http-autometric"
AUTOSCALING_METRICS_PORT: Final = 9090
USER_METRICS_PORT_NAME: Final = "http-usermetric"
USER_METRICS_PORT: Final = 9091
DRAIN_PATH: Final = "/wait-for-drain"
LOCAL_ADDRESS: Final = "127.0.0.1"

_EXCLUDED_LABELS: Final = frozenset({ROUTE_LABEL, ROUTING_STATE_LABEL})
_EXCLUDED_ANNOTATIONS: Final = frozenset(
    {
        "serving.knative.dev/lastPinned",
        "serving.knative.dev/no-gc",
        ROUTING_STATE_MODIFIED_ANNOTATION,
        ROUTES_ANNOTATION,
    }
)


def deployment_name(rev: Obj) -> str:
    return child_name(meta(rev)["name"], "-deployment")


def make_labels(rev: Obj) -> dict[str, str]:
    """Knative's makeLabels: the labels of everything a revision makes."""
    labels = {k: v for k, v in labels_of(rev).items() if k not in _EXCLUDED_LABELS}
    labels[REVISION_LABEL] = meta(rev)["name"]
    labels[REVISION_UID_LABEL] = str(meta(rev).get("uid", ""))
    labels.setdefault(APP_LABEL, meta(rev)["name"])
    return labels


def pa_annotations(rev: Obj) -> dict[str, str]:
    """Knative's podAutoscalerAnnotations: the revision's, autoscaling keys included."""
    return {k: v for k, v in annotations_of(rev).items() if k not in _EXCLUDED_ANNOTATIONS}


def _deployment_annotations(rev: Obj) -> dict[str, str]:
    return {
        k: v
        for k, v in annotations_of(rev).items()
        if k not in _EXCLUDED_ANNOTATIONS and not k.startswith(AUTOSCALING_PREFIX)
    }


def _container(rev: Obj) -> Obj:
    containers = (rev.get("spec") or {}).get("containers") or [{}]
    first: Obj = containers[0]
    return first


def protocol_of(rev: Obj) -> str:
    """Knative's GetProtocol: ``h2c`` when the user port is named so, else ``http1``."""
    ports = _container(rev).get("ports") or ()
    return "h2c" if ports and ports[0].get("name") == "h2c" else "http1"


def user_port(rev: Obj) -> int:
    ports = _container(rev).get("ports") or ()
    port = ports[0].get("containerPort") if ports else None
    return port if isinstance(port, int) and port else DEFAULT_USER_PORT


def initial_scale(rev: Obj, autoscaler_data: Mapping[str, str]) -> int:
    """config-autoscaler's initial-scale or the revision's annotation (Knative's MakeDeployment)."""
    try:
        scale = AutoscalerConfig.from_configmap(autoscaler_data).initial_scale
    except ConfigError:
        scale = AutoscalerConfig().initial_scale
    annotations = annotations_of(rev)
    for key in INITIAL_SCALE_ANNOTATIONS:
        if key in annotations:
            try:
                return int(annotations[key])
            except ValueError:
                break  # refused by the webhook; keep the cluster's
    return scale


def progress_deadline(rev: Obj, default_s: int) -> int:
    value = annotations_of(rev).get(PROGRESS_DEADLINE_ANNOTATION)
    if value:
        try:
            return parse_duration(value) // 1_000_000_000
        except ValueError:
            pass
    return default_s


def _probe_json(probe: Obj | None, port: int) -> str:
    """SERVING_READINESS_PROBE: the user's probe aimed at 127.0.0.1 (Knative's
    applyReadinessProbeDefaults)."""
    if not probe:
        return ""
    p = copy.deepcopy(probe)
    if isinstance(p.get("httpGet"), dict):
        action = p["httpGet"]
        explicit = action.get("port")
        action["host"] = LOCAL_ADDRESS
        action["port"] = explicit if isinstance(explicit, int) and explicit else port
        action.setdefault("scheme", "HTTP")
    elif isinstance(p.get("tcpSocket"), dict):
        action = p["tcpSocket"]
        explicit = action.get("port")
        action["host"] = LOCAL_ADDRESS
        action["port"] = explicit if isinstance(explicit, int) and explicit else port
    elif "exec" in p:
        p.pop("exec")
        p["tcpSocket"] = {"host": LOCAL_ADDRESS, "port": port}
    if p.get("periodSeconds", 0) > 0 and p.get("timeoutSeconds", 0) < 1:
        p["timeoutSeconds"] = 1
    return json.dumps(p, separators=(",", ":"))


def observability_json(data: Mapping[str, str]) -> str:
    """OBSERVABILITY_CONFIG from config-observability's data (the keys knpy's sidecar reads)."""
    doc: Obj = {}
    tracing: Obj = {}
    for key, field in (("tracing-protocol", "protocol"), ("tracing-endpoint", "endpoint")):
        if data.get(key):
            tracing[field] = data[key]
    if data.get("tracing-sampling-rate"):
        # A bad rate leaves the sidecar's default; config-observability is the operator's.
        with contextlib.suppress(ValueError):
            tracing["samplingRate"] = float(data["tracing-sampling-rate"])
    if tracing:
        doc["tracing"] = tracing
    for key, field in (
        ("logging.enable-request-log", "enableRequestLog"),
        ("logging.enable-probe-request-log", "enableProbeRequestLog"),
    ):
        if key in data:
            doc[field] = data[key].strip().lower() == "true"
    if data.get("logging.request-log-template"):
        doc["requestLogTemplate"] = data["logging.request-log-template"]
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def _seconds(value: object) -> str:
    return str(value) if isinstance(value, int) else "0"


def make_queue_container(
    rev: Obj,
    *,
    image: str,
    command: tuple[str, ...] = (),
    observability: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Obj:
    """Knative's makeQueueContainer, with knpy's admin and metrics ports named too."""
    spec = rev.get("spec") or {}
    m = meta(rev)
    port = user_port(rev)
    serving_port = QUEUE_HTTP2_PORT if protocol_of(rev) == "h2c" else QUEUE_HTTP_PORT
    user_probe = _container(rev).get("readinessProbe")
    env: list[Obj] = [
        {"name": "SERVING_NAMESPACE", "value": m.get("namespace", "")},
        {"name": "SERVING_SERVICE", "value": labels_of(rev).get(SERVICE_LABEL, "")},
        {"name": "SERVING_CONFIGURATION", "value": labels_of(rev).get(CONFIGURATION_LABEL, "")},
        {"name": "SERVING_REVISION", "value": m["name"]},
        {"name": "QUEUE_SERVING_PORT", "value": str(serving_port)},
        {"name": "QUEUE_ADMIN_PORT", "value": str(QUEUE_ADMIN_PORT)},
        {"name": "QUEUE_METRICS_PORT", "value": str(AUTOSCALING_METRICS_PORT)},
        {"name": "USER_METRICS_PORT", "value": str(USER_METRICS_PORT)},
        {"name": "CONTAINER_CONCURRENCY", "value": str(spec.get("containerConcurrency") or 0)},
        {"name": "REVISION_TIMEOUT_SECONDS", "value": _seconds(spec.get("timeoutSeconds"))},
        {
            "name": "REVISION_RESPONSE_START_TIMEOUT_SECONDS",
            "value": _seconds(spec.get("responseStartTimeoutSeconds")),
        },
        {
            "name": "REVISION_IDLE_TIMEOUT_SECONDS",
            "value": _seconds(spec.get("idleTimeoutSeconds")),
        },
        {"name": "SERVING_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "SERVING_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "SERVING_LOGGING_CONFIG", "value": ""},
        {"name": "SERVING_LOGGING_LEVEL", "value": ""},
        {"name": "USER_PORT", "value": str(port)},
        {"name": "SYSTEM_NAMESPACE", "value": SYSTEM_NAMESPACE},
        {"name": "SERVING_READINESS_PROBE", "value": _probe_json(user_probe, port)},
        {"name": "OBSERVABILITY_CONFIG", "value": observability_json(observability or {})},
    ]
    env.extend({"name": k, "value": v} for k, v in (extra_env or {}).items())
    container: Obj = {
        "name": QUEUE_CONTAINER_NAME,
        "image": image,
        "ports": [
            {"name": AUTOSCALING_METRICS_PORT_NAME, "containerPort": AUTOSCALING_METRICS_PORT},
            {"name": USER_METRICS_PORT_NAME, "containerPort": USER_METRICS_PORT},
            {"name": QUEUE_ADMIN_PORT_NAME, "containerPort": QUEUE_ADMIN_PORT},
            {"name": QUEUE_PORT_NAME, "containerPort": serving_port},
        ],
        "env": env,
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if command:
        container["command"] = list(command)
    if user_probe:
        probe = {
            k: v for k, v in user_probe.items() if k not in ("httpGet", "tcpSocket", "exec", "grpc")
        }
        probe["httpGet"] = {
            "port": serving_port,
            "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}],
        }
        container["readinessProbe"] = probe
    return container


def make_user_container(rev: Obj) -> Obj:
    """Knative's makeServingContainer: the template's container as the pod runs it."""
    c = copy.deepcopy(_container(rev))
    port = user_port(rev)
    labels = labels_of(rev)
    c["ports"] = [{"name": USER_PORT_NAME, "containerPort": port}]
    c["env"] = [
        *(c.get("env") or ()),
        {"name": "PORT", "value": str(port)},
        {"name": "K_REVISION", "value": meta(rev)["name"]},
        {"name": "K_CONFIGURATION", "value": labels.get(CONFIGURATION_LABEL, "")},
        {"name": "K_SERVICE", "value": labels.get(SERVICE_LABEL, "")},
    ]
    probe = c.get("readinessProbe")
    if isinstance(probe, dict) and ("httpGet" in probe or "tcpSocket" in probe or "grpc" in probe):
        del c["readinessProbe"]  # the queue-proxy probes the user container
    c["lifecycle"] = {"preStop": {"httpGet": {"port": QUEUE_ADMIN_PORT, "path": DRAIN_PATH}}}
    c.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
    return c


def deployment_hash(deployment: Obj) -> str:
    """A digest of what the reconciler decides (spec, labels, annotations), hash label aside."""
    m = meta(deployment)
    labels = {k: v for k, v in (m.get("labels") or {}).items() if k != DEPLOYMENT_HASH_LABEL}
    doc = {"spec": deployment.get("spec"), "labels": labels, "annotations": m.get("annotations")}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_deployment(
    rev: Obj,
    *,
    queue_image: str,
    queue_command: tuple[str, ...] = (),
    queue_env: Mapping[str, str] | None = None,
    autoscaler_data: Mapping[str, str] | None = None,
    observability: Mapping[str, str] | None = None,
    progress_deadline_s: int = 600,
) -> Obj:
    """Knative's MakeDeployment for a revision (see the module docstring)."""
    m = meta(rev)
    labels = make_labels(rev)
    user = make_user_container(rev)
    queue = make_queue_container(
        rev,
        image=queue_image,
        command=queue_command,
        observability=observability,
        extra_env=queue_env,
    )
    pod_annotations = _deployment_annotations(rev)
    if user.get("name"):
        pod_annotations[DEFAULT_CONTAINER_ANNOTATION] = user["name"]
    pod_spec: Obj = {"containers": [user, queue], "enableServiceLinks": False}
    timeout = (rev.get("spec") or {}).get("timeoutSeconds")
    if isinstance(timeout, int):
        pod_spec["terminationGracePeriodSeconds"] = timeout
    deployment: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(rev),
            "namespace": m.get("namespace", ""),
            "labels": dict(labels),
            "annotations": _deployment_annotations(rev),
            "ownerReferences": [owner_reference(rev, REVISIONS)],
        },
        "spec": {
            "replicas": initial_scale(rev, autoscaler_data or {}),
            "selector": {"matchLabels": {REVISION_UID_LABEL: str(m.get("uid", ""))}},
            "progressDeadlineSeconds": progress_deadline(rev, progress_deadline_s),
            "revisionHistoryLimit": 0,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }
    deployment["metadata"]["labels"][DEPLOYMENT_HASH_LABEL] = deployment_hash(deployment)
    return deployment
