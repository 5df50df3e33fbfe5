"""What ``knpy serve`` puts in its API before anything runs: Knative's install, for one machine.

In a cluster, ``kubectl apply -f serving-core.yaml`` creates the knative-serving namespace, the
ConfigMaps every component GETs at start (with only ``_example`` data: Knative's defaults
apply), the Services ``activator-service`` and ``autoscaler``, and the Deployments of the
activator and the autoscaler. This module makes the same objects:

* ConfigMaps are created only when absent, so what a person applied (a shorter
  ``config-autoscaler`` window) survives a restart. ``config-domain`` names ``localhost`` as the
  domain and ``config-deployment`` knpy's queue-proxy, as knpy has always served them.
* The Services select their pods by ``app`` and reach them through a *named* target port
  (``http1``, ``websocket``): every pod here listens on its own local port, and the Endpoints
  controller resolves the name per pod, where a cluster would use 8012 and 8080 everywhere.
* The Deployments run ``python -m activator`` and ``python -m autoscaler`` in cluster mode with
  the server's kubeconfig; the kubelet (``controlplane/kubelet.py``) runs them like any pod, so
  they have Pod objects with labels, ports and readiness, and the activator's Ready pod is what
  fills ``activator-service``'s Endpoints, which the ServerlessService controller needs for
  Proxy mode. The autoscaler's stat port is pinned with ``hostPort`` (chosen free once per
  run), because the activator dials it by address: there is no cluster DNS locally.
* With ``knpy serve --images`` the two containers name knpy's built images and no command
  (the image's entrypoint runs), and the kubeconfig is a ``hostPath`` volume mounted at
  ``/etc/knpy/kubeconfig``, where a cluster would mount the ServiceAccount's token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from shared.kube.client import KubeClient, NotFound
from shared.kube.resources import (
    ACTIVATOR_SERVICE,
    AUTOSCALER_SERVICE,
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTING_NAMESPACE,
    SERVICE_TYPE_LABEL,
    SERVICE_TYPE_PUBLIC,
    SERVICES,
    SYSTEM_NAMESPACE,
    Obj,
    Resource,
)

from .containers import KnpyImages

__all__ = [
    "SystemConfig",
    "bootstrap",
    "eventing_objects",
    "rabbitmq_objects",
    "start_eventing",
    "system_objects",
]

# The ConfigMaps Knative's controller, activator and autoscaler GET at start, with the data
# that differs from Knative's defaults here.
CONFIGMAP_DEFAULTS: Final[Mapping[str, Mapping[str, str]]] = {
    "config-network": {},
    "config-autoscaler": {},
    "config-defaults": {},
    "config-deployment": {"queue-sidecar-image": "knpy/queueproxy"},
    "config-logging": {},
    "config-observability": {},
    "config-leader-election": {},
    "config-domain": {"localhost": ""},
    "config-features": {},
    "config-gc": {},
}
ACTIVATOR: Final = "activator"
AUTOSCALER: Final = "autoscaler"
BROKER: Final = "eventing-broker"  # the broker data plane's Deployment (knative-eventing)
BROKER_INGRESS: Final = "broker-ingress"  # its Service, read by the Broker controller
# The RabbitMQBroker class's data plane (knpy serve --rabbitmq) and its Service.
RABBITMQ_BROKER: Final = "rabbitmq-broker"
RABBITMQ_BROKER_INGRESS: Final = "rabbitmq-broker-ingress"
# The activator drains this long after SIGTERM. The ingress in front of it has already stopped
# at shutdown; Knative's 45 s is for a cluster's load balancers to notice.
ACTIVATOR_DRAIN_S: Final = 1.0
# Where the activator and autoscaler images find the kubeconfig (knpy serve --images).
KUBECONFIG_IN_IMAGE: Final = "/etc/knpy/kubeconfig"
# The ingress as a LoadBalancer Service, as Kourier's ``kourier-system/kourier`` is the one a
# Knative user reads the ingress's address from: its port is knpy serve's --port, so a client
# of the API (``knpy func deploy``, ``invoke``) can dial a Service's ``status.url`` here.
INGRESS_SERVICE: Final = "knpy-ingress"


@dataclass(frozen=True, slots=True)
class SystemConfig:
    """What the system Deployments need: the interpreter, the kubeconfig, the pinned port."""

    python: str
    kubeconfig: str
    autoscaler_stat_port: int  # the autoscaler's WebSocket port on 127.0.0.1
    log_level: str = "INFO"
    images: KnpyImages | None = None  # run the activator and autoscaler from these
    broker_state_dir: str = ""  # the broker data plane's event log; "" runs no broker
    # The 0600 file holding the RabbitMQBroker class's server URL; "" runs no RabbitMQ data plane.
    rabbitmq_url_file: str = ""
    rabbitmq_prefix: str = ""  # before its exchange and queue names (one per state dir)
    ingress_port: int = 0  # knpy serve's --port, published as INGRESS_SERVICE; 0: not published


def _downward(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _env(values: Mapping[str, str]) -> list[Obj]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _deployment(
    app: str, container: Obj, volumes: list[Obj], namespace: str = SYSTEM_NAMESPACE
) -> Obj:
    labels = {"app": app, "role": app}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    **({"volumes": volumes} if volumes else {}),
                },
            },
        },
    }


def _service(
    name: str, app: str, ports: list[Obj], namespace: str = SYSTEM_NAMESPACE,
    labels: Mapping[str, str] | None = None,
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name, "namespace": namespace, "labels": {"app": app, **(labels or {})},
        },
        "spec": {"selector": {"app": app}, "ports": ports},
    }


def system_objects(cfg: SystemConfig) -> list[tuple[Resource, Obj]]:
    """The Services and Deployments of the activator and the autoscaler (Knative's
    config/core/deployments, with knpy's local ports)."""
    common = [
        _downward("POD_NAME", "metadata.name"),
        _downward("POD_IP", "status.podIP"),
        _downward("SYSTEM_NAMESPACE", "metadata.namespace"),
        *_env({"CONFIG_LOGGING_NAME": "config-logging"}),
        *_env({"CONFIG_OBSERVABILITY_NAME": "config-observability"}),
    ]
    kubeconfig = ["--kubeconfig", cfg.kubeconfig]
    activator = {
        "name": ACTIVATOR,
        "image": "knpy/activator",
        "command": [cfg.python, "-m", "activator", *kubeconfig],
        "ports": [
            {"name": "http1", "containerPort": 8012},
            {"name": "metrics", "containerPort": 9090},
        ],
        "env": [
            *common,
            *_env(
                {
                    "ACTIVATOR_SERVING_PORT": "8012",
                    "ACTIVATOR_METRICS_PORT": "9090",
                    "ACTIVATOR_BIND_HOST": "127.0.0.1",
                    "ACTIVATOR_AUTOSCALER_URL": f"ws://127.0.0.1:{cfg.autoscaler_stat_port}",
                    "ACTIVATOR_DRAIN_TIMEOUT_SECONDS": f"{ACTIVATOR_DRAIN_S:g}",
                    # Knative's knob (default 200 ms, revision_backends.go) for probing pods
                    # not yet healthy: a local pod refuses the first probe, and at 200 ms the
                    # kubelet's Endpoints chain won the race (ready -> first byte 8.1 vs 1.4 ms).
                    "PROBE_FREQUENCY": "25ms",
                }
            ),
        ],
        # Knative's activator probe: the kubelet's GET on the serving port, 200 only while
        # the autoscaler's WebSocket is connected.
        "readinessProbe": {"httpGet": {"port": "http1"}, "periodSeconds": 1},
    }
    autoscaler = {
        "name": AUTOSCALER,
        "image": "knpy/autoscaler",
        "command": [cfg.python, "-m", "autoscaler", *kubeconfig],
        "ports": [
            {"name": "websocket", "containerPort": 8080, "hostPort": cfg.autoscaler_stat_port},
            {"name": "metrics", "containerPort": 9090},
        ],
        "env": [
            *common,
            *_env(
                {
                    "AUTOSCALER_STAT_PORT": "8080",
                    "AUTOSCALER_METRICS_PORT": "9090",
                    "AUTOSCALER_BIND_HOST": "127.0.0.1",
                    "AUTOSCALER_LOG_LEVEL": cfg.log_level,
                }
            ),
        ],
        "readinessProbe": {"httpGet": {"port": "websocket"}, "periodSeconds": 1},
    }
    volumes: list[Obj] = []
    if cfg.images is not None:
        volumes = [{"name": "kubeconfig", "hostPath": {"path": cfg.kubeconfig, "type": "File"}}]
        mount = {"name": "kubeconfig", "mountPath": KUBECONFIG_IN_IMAGE, "readOnly": True}
        for container, image in (
            (activator, cfg.images.activator),
            (autoscaler, cfg.images.autoscaler),
        ):
            del container["command"]
            container["image"] = image
            container["args"] = ["--kubeconfig", KUBECONFIG_IN_IMAGE]
            container["volumeMounts"] = [mount]
    return [
        (
            SERVICES,
            _service(
                ACTIVATOR_SERVICE,
                ACTIVATOR,
                [
                    {"name": "http", "port": 80, "targetPort": "http1", "protocol": "TCP"},
                    {"name": "http-metrics", "port": 9090, "targetPort": "metrics"},
                ],
            ),
        ),
        (
            SERVICES,
            _service(
                AUTOSCALER_SERVICE,
                AUTOSCALER,
                [
                    {"name": "http", "port": 8080, "targetPort": "websocket", "protocol": "TCP"},
                    {"name": "http-metrics", "port": 9090, "targetPort": "metrics"},
                ],
            ),
        ),
        (DEPLOYMENTS, _deployment(AUTOSCALER, autoscaler, volumes)),
        (DEPLOYMENTS, _deployment(ACTIVATOR, activator, volumes)),
        *([(SERVICES, ingress_service(cfg.ingress_port))] if cfg.ingress_port else []),
    ]


def ingress_service(port: int) -> Obj:
    """INGRESS_SERVICE: no selector (the Endpoints controller leaves it alone), type
    LoadBalancer, its port the ingress's (on 127.0.0.1)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": INGRESS_SERVICE,
            "namespace": SYSTEM_NAMESPACE,
            "labels": {"app": INGRESS_SERVICE},
        },
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"name": "http2", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def _broker_objects(
    cfg: SystemConfig, app: str, service: str, args: list[str], env: Mapping[str, str]
) -> list[tuple[Resource, Obj]]:
    broker = {
        "name": app,
        "image": "knpy/eventing-broker",
        "command": [cfg.python, "-m", "eventing.broker", "--kubeconfig", cfg.kubeconfig, *args],
        # Knative's broker ports: 8080 ingress, 9092 metrics (each moved to a free local
        # port by the kubelet, the variables with them).
        "ports": [
            {"name": "http", "containerPort": 8080},
            {"name": "http-metrics", "containerPort": 9092},
        ],
        "env": [
            _downward("SYSTEM_NAMESPACE", "metadata.namespace"),
            *_env({"INGRESS_PORT": "8080", "BROKER_METRICS_PORT": "9092",
                   "BROKER_BIND_HOST": "127.0.0.1", **env}),
        ],
        "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 1},
    }
    port = {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    public = {SERVICE_TYPE_LABEL: SERVICE_TYPE_PUBLIC}
    return [
        (SERVICES, _service(service, app, [port], EVENTING_NAMESPACE, public)),
        (DEPLOYMENTS, _deployment(app, broker, [], EVENTING_NAMESPACE)),
    ]


def eventing_objects(cfg: SystemConfig) -> list[tuple[Resource, Obj]]:
    """The broker data plane (``python -m eventing.broker``: ingress and dispatcher in one
    process) in knative-eventing, behind the Service ``broker-ingress``. The Service is labelled
    Public so the ingress follows its Endpoints, as it follows a revision's, for the Host
    ``broker-ingress.knative-eventing.localhost`` (a Broker's ``status.address.url``)."""
    return _broker_objects(cfg, BROKER, BROKER_INGRESS, ["--state-dir", cfg.broker_state_dir], {})


def rabbitmq_objects(cfg: SystemConfig) -> list[tuple[Resource, Obj]]:
    """The RabbitMQBroker class's data plane: the same program with ``--backend rabbitmq``
    (ingress and dispatcher in one process, class RabbitMQBroker), behind the Service
    ``rabbitmq-broker-ingress`` (Host ``rabbitmq-broker-ingress.knative-eventing.localhost``).
    The server's URL (its password) is neither on the command line (``ps`` shows commands) nor
    in the Deployment (the API's store, ``knpy get -o yaml``): the process reads it from a file
    only its user can read, as eventing-rabbitmq's data plane takes it from a Secret. Every
    exchange and queue name starts with this state dir's prefix, so that several runs share
    one RabbitMQ without meeting, and a restart finds its own queues again."""
    env = {"RABBITMQ_URL_FILE": cfg.rabbitmq_url_file,
           "BROKER_RABBITMQ_PREFIX": cfg.rabbitmq_prefix}
    return _broker_objects(
        cfg, RABBITMQ_BROKER, RABBITMQ_BROKER_INGRESS, ["--backend", "rabbitmq"], env
    )


def configmaps() -> list[Obj]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
            "data": dict(data),
        }
        for name, data in CONFIGMAP_DEFAULTS.items()
    ]


async def bootstrap(client: KubeClient, cfg: SystemConfig | None) -> None:
    """Create the ConfigMaps that are absent; create or replace the system objects (this
    run's ports and kubeconfig). ``cfg`` None: ConfigMaps only (``-f`` is checked first)."""
    for cm in configmaps():
        if await client.get(CONFIGMAPS, SYSTEM_NAMESPACE, cm["metadata"]["name"]) is None:
            await client.create(CONFIGMAPS, SYSTEM_NAMESPACE, cm)
    if cfg is None:
        return
    await _put(client, system_objects(cfg))
    # The brokers' Deployments of a previous run would start with the kubelet; they come back
    # with start_eventing once the activator is Ready (the event log stays in the state dir,
    # RabbitMQ keeps its queues), the RabbitMQ one only if this run has --rabbitmq.
    for name in (BROKER, RABBITMQ_BROKER):
        with contextlib.suppress(NotFound):
            await client.delete(DEPLOYMENTS, EVENTING_NAMESPACE, name)


async def start_eventing(client: KubeClient, cfg: SystemConfig) -> None:
    """Create or replace the broker data planes' objects (the default class's unless
    ``broker_state_dir`` is empty, the RabbitMQ one's if ``rabbitmq_url_file`` is set). ``knpy
    serve`` calls it once the activator is Ready, so the brokers' start does not compete with
    the serving path's for the CPU."""
    if cfg.broker_state_dir:
        await _put(client, eventing_objects(cfg))
    if cfg.rabbitmq_url_file:
        await _put(client, rabbitmq_objects(cfg))


async def _put(client: KubeClient, objects: list[tuple[Resource, Obj]]) -> None:
    for resource, obj in objects:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        old = await client.get(resource, ns, name)
        if old is None:
            await client.create(resource, ns, obj)
        else:
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            await client.replace(resource, ns, name, obj)
